package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamhub/streamhub/internal/buildinfo"
	"go.uber.org/goleak"
)

// TestMain fails the package if any goroutine outlives the tests: the
// driver's, the gRPC client's, or the end-to-end servers'.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// runCLI runs the CLI with args after the program name and no input.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), append([]string{"streamhub-cli"}, args...), strings.NewReader(""), &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestRunCommandLine(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStderr []string
	}{
		{
			name:     "help",
			args:     []string{"--help"},
			wantCode: exitOK,
			wantStderr: []string{
				"stream-service stream-data", // the generated commands
				"-url URL", "-session NAME", "Text mode", "--client-id alice", `"type":"control"`,
				"-tls-ca FILE", "-tls-cert FILE", "-tls-server-name NAME", "-url grpcs://", // TLS flags and an example
			},
		},
		{name: "no command", args: nil, wantCode: exitUsage, wantStderr: []string{"not enough arguments", "--help"}},
		{name: "unknown flag", args: []string{"-bogus", "stream-service", "stream-data"}, wantCode: exitUsage, wantStderr: []string{"-bogus"}},
		{name: "bad url", args: []string{"-url", "http://x", "stream-service", "stream-data"}, wantCode: exitUsage, wantStderr: []string{"scheme"}},
		{name: "bad timeout", args: []string{"-timeout", "soon", "stream-service", "stream-data"}, wantCode: exitUsage, wantStderr: []string{"-timeout"}},
		{name: "bad session", args: []string{"-session", "two words", "stream-service", "stream-data"}, wantCode: exitUsage, wantStderr: []string{"-session"}},
		{name: "unknown service", args: []string{"nope", "stream-data"}, wantCode: exitUsage, wantStderr: []string{`unknown service "nope"`}},
		{name: "unknown endpoint", args: []string{"stream-service", "nope"}, wantCode: exitUsage, wantStderr: []string{`endpoint "nope"`}},
		{
			// The generated payload builder validates the client ID.
			name:       "bad client id",
			args:       []string{"stream-service", "stream-data", "--client-id", "no spaces"},
			wantCode:   exitUsage,
			wantStderr: []string{"client_id"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit status %d, want %d; stderr:\n%s", code, tt.wantCode, stderr)
			}
			if stdout != "" {
				t.Errorf("stdout = %q, want nothing", stdout)
			}
			for _, want := range tt.wantStderr {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr does not mention %q:\n%s", want, stderr)
				}
			}
		})
	}
}

// TestVersion: -version and --version print the build on stdout and exit
// 0 without a command or a connection.
func TestVersion(t *testing.T) {
	want := buildinfo.Read().Format("streamhub-cli")
	for _, flag := range []string{"-version", "--version"} {
		code, stdout, stderr := runCLI(t, "-url", "grpc://127.0.0.1:1", flag)
		if code != exitOK || stderr != "" {
			t.Errorf("%s: exit status %d, stderr:\n%s", flag, code, stderr)
		}
		if stdout != want || !strings.Contains(stdout, runtime.Version()) {
			t.Errorf("%s: stdout:\n%s\nwant:\n%s", flag, stdout, want)
		}
	}
}

// TestRunRestoresGlobals checks that run leaves os.Args and flag.CommandLine
// as it found them, since the generated ParseEndpoint makes it borrow them.
func TestRunRestoresGlobals(t *testing.T) {
	args, fs := os.Args, flag.CommandLine
	runCLI(t, "-url", "grpc://127.0.0.1:1", "stream-service", "nope")
	if !slices.Equal(os.Args, args) || flag.CommandLine != fs {
		t.Fatalf("run changed os.Args to %q or replaced flag.CommandLine", os.Args)
	}
}

func TestGlobalFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want config
	}{
		{
			name: "defaults",
			want: config{target: "localhost:50051", timeout: 10 * time.Second},
		},
		{
			name: "all set",
			args: []string{"-url", "127.0.0.1:4000", "-timeout", "1m30s", "-session", "lobby", "-v"},
			want: config{target: "127.0.0.1:4000", timeout: 90 * time.Second, session: "lobby", verbose: true},
		},
		{
			// Goa-generated CLIs take -timeout in seconds.
			name: "timeout in seconds",
			args: []string{"-timeout", "3", "-verbose"},
			want: config{target: "localhost:50051", timeout: 3 * time.Second, verbose: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs, g := newGlobalFlags("streamhub-cli", io.Discard)
			if err := fs.Parse(append(tt.args, "stream-service", "stream-data")); err != nil {
				t.Fatalf("Parse: %v", err)
			}
			got, err := g.config()
			if err != nil {
				t.Fatalf("config: %v", err)
			}
			if got != tt.want {
				t.Errorf("config = %+v, want %+v", got, tt.want)
			}
			if rest := fs.Args(); !slices.Equal(rest, []string{"stream-service", "stream-data"}) {
				t.Errorf("remaining args %q, want the command", rest)
			}
		})
	}
}

func TestTimeoutValueRejects(t *testing.T) {
	for _, s := range []string{"0", "-5", "0s", "-1s", "soon", ""} {
		var v timeoutValue
		if err := v.Set(s); err == nil {
			t.Errorf("Set(%q) = %v, want an error", s, time.Duration(v))
		}
	}
}

// TestRunConnectionRefused checks that a server that is not there is
// reported with its gRPC status, and promptly.
func TestRunConnectionRefused(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens there now

	code, _, stderr := runCLI(t, "-url", "grpc://"+addr, "stream-service", "stream-data")
	if code != exitStream || !strings.Contains(stderr, "code = Unavailable") {
		t.Fatalf("exit status %d, stderr:\n%s\nwant %d and code = Unavailable", code, stderr, exitStream)
	}
}

// TestRunOpenTimeout checks that -timeout bounds opening the stream when the
// server accepts connections but never speaks gRPC.
func TestRunOpenTimeout(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn // guarded by mu; held open, silent, until the test ends
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		lis.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})

	start := time.Now()
	code, _, stderr := runCLI(t, "-url", lis.Addr().String(), "-timeout", "200ms", "stream-service", "stream-data")
	if code != exitStream || !strings.Contains(stderr, "DeadlineExceeded") {
		t.Fatalf("exit status %d, stderr:\n%s\nwant %d and DeadlineExceeded", code, stderr, exitStream)
	}
	// grpc-go's own connect timeout is 20s: returning well before it shows
	// that -timeout did the work.
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("run took %s with -timeout 200ms", d)
	}
}
