package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Server kinds, as they appear in the results.
const (
	kindBaseline  = "baseline"
	kindStreamHub = "streamhub"
)

// target is a server under test, listening on loopback.
type target struct {
	kind      string
	grpcAddr  string
	adminAddr string // serves /debug/pprof/
	pid       int    // the process whose VmRSS is the server's memory
	stop      func() error
}

// settings is what a scenario asks of the servers it starts.
type settings struct {
	maxConns  int           // streams the server must accept at once
	heartbeat time.Duration // server heartbeat interval; 0 leaves the default
}

// launcher starts the servers the scenarios measure.
type launcher interface {
	start(kind string, s settings) (*target, error)
	// describe says how a kind of server runs, for the report.
	describe(kind string) string
}

// childLauncher runs each server as a child process, as in production: a
// StreamHub binary, and this binary in its -serve-baseline mode.
type childLauncher struct {
	serverBin  string   // the streamhub binary
	serverArgs []string // extra flags for it
	self       string   // this binary
	// baselineArgs are extra flags of the -serve-baseline mode, to try
	// grpc-go server options on the baseline.
	baselineArgs []string
}

// streamHubArgs are the flags every benchmarked StreamHub gets. The
// inbound rate limit is off: with it, scenario 2 would measure the limit.
func (l childLauncher) streamHubArgs(s settings) []string {
	args := []string{
		"--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
		"--log-format", "json", "--metrics-log-interval", "0", "--drain-timeout", "2s",
		"--rate-limit", "0",
		"--max-connections", strconv.Itoa(max(s.maxConns, 5000)),
	}
	if s.heartbeat > 0 {
		args = append(args, "--heartbeat-interval", s.heartbeat.String())
	}
	return append(args, l.serverArgs...)
}

func (l childLauncher) describe(kind string) string {
	if kind == kindStreamHub {
		return fmt.Sprintf("child process %s %s (inbound rate limit off), a fresh one per run",
			l.serverBin, strings.Join(l.streamHubArgs(settings{}), " "))
	}
	opts := "default options"
	if len(l.baselineArgs) > 0 {
		opts = "options " + strings.Join(l.baselineArgs, " ")
	}
	return "child process `streamhub-bench -serve-baseline`: bare grpc-go server, " + opts +
		", implementing streampb.StreamServiceServer directly (echo; plain broadcast loop for fan-out), a fresh one per run"
}

func (l childLauncher) start(kind string, s settings) (*target, error) {
	var cmd *exec.Cmd
	switch kind {
	case kindStreamHub:
		cmd = exec.Command(l.serverBin, l.streamHubArgs(s)...)
	case kindBaseline:
		args := []string{"-serve-baseline"}
		if s.heartbeat > 0 {
			args = append(args, "-heartbeat-interval", s.heartbeat.String())
		}
		cmd = exec.Command(l.self, append(args, l.baselineArgs...)...)
	default:
		return nil, fmt.Errorf("unknown server kind %q", kind)
	}
	w := newServingWatcher()
	cmd.Stdout = w
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", kind, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var line servingLine
	select {
	case line = <-w.serving:
	case err := <-exited:
		return nil, fmt.Errorf("%s exited before serving: %v", kind, err)
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		return nil, fmt.Errorf("%s did not report serving within 10s", kind)
	}
	var once sync.Once
	var stopErr error
	stop := func() error {
		once.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case err := <-exited:
				stopErr = err
			case <-time.After(15 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
				stopErr = fmt.Errorf("%s did not stop within 15s of SIGTERM; killed", kind)
			}
		})
		return stopErr
	}
	return &target{kind: kind, grpcAddr: line.GRPC, adminAddr: line.Admin, pid: cmd.Process.Pid, stop: stop}, nil
}

// servingWatcher is a child's stdout: it finds the "serving" line with the
// addresses, then discards everything, so the child never blocks on a full
// pipe (StreamHub logs one line per stream end).
type servingWatcher struct {
	serving chan servingLine // receives the line once

	mu    sync.Mutex // guards buf and found
	buf   []byte
	found bool
}

func newServingWatcher() *servingWatcher {
	return &servingWatcher{serving: make(chan servingLine, 1)}
}

func (w *servingWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.found {
		return len(p), nil
	}
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		var l servingLine
		if json.Unmarshal(w.buf[:i], &l) == nil && l.Msg == "serving" && l.GRPC != "" && l.Admin != "" {
			w.found, w.buf = true, nil
			w.serving <- l
			return len(p), nil
		}
		w.buf = w.buf[i+1:]
	}
}

// findServerBin is the streamhub binary to benchmark when -server-bin is not
// given: ./bin/streamhub (after `go build -o bin/ ./cmd/...`), else the one
// next to this binary.
func findServerBin(self string) (string, error) {
	candidates := []string{filepath.Join("bin", "streamhub")}
	if self != "" {
		candidates = append(candidates, filepath.Join(filepath.Dir(self), "streamhub"))
	}
	for _, c := range candidates {
		if fi, err := os.Stat(c); err == nil && !fi.IsDir() {
			return filepath.Abs(c)
		}
	}
	return "", errors.New("no streamhub binary in ./bin or next to this one: run `go build -o bin/ ./cmd/...` or pass -server-bin")
}
