package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	streampb "github.com/streamhub/streamhub/gen/grpc/stream_service/pb"
	streamsvr "github.com/streamhub/streamhub/gen/grpc/stream_service/server"
	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	"github.com/streamhub/streamhub/streaming"
	"google.golang.org/grpc"
)

// e2eTimeout bounds every wait of the end-to-end tests.
const e2eTimeout = 10 * time.Second

// startStreamHub serves a real StreamHub with cfg and the gRPC server
// options opts (e.g. TLS credentials) on a loopback port until the test
// ends, and returns the CLI's -url for it, a grpc:// URL.
func startStreamHub(t *testing.T, cfg streaming.Config, opts ...grpc.ServerOption) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	svc := streaming.New(cfg)
	gs := grpc.NewServer(opts...)
	streampb.RegisterStreamServiceServer(gs, streamsvr.New(streamsvc.NewEndpoints(svc), nil))
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = gs.Serve(lis) // returns nil after Stop
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), e2eTimeout)
		defer cancel()
		if err := svc.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		gs.Stop()
		<-served
	})
	return "grpc://" + lis.Addr().String()
}

// cliRun is one run of the CLI in the background.
type cliRun struct {
	stdout, stderr syncBuffer
	code           chan int // receives run's exit status
}

// startCLI runs the CLI with args after the program name, reading stdin,
// until it exits on its own. If it is still running when the test ends, its
// context is cancelled and the cleanup waits for it, so it never outlives
// the test (or the server, whose cleanup was registered earlier and so runs
// later).
func startCLI(t *testing.T, stdin io.Reader, args ...string) *cliRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &cliRun{code: make(chan int, 1)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.code <- run(ctx, append([]string{"streamhub-cli"}, args...), stdin, &c.stdout, &c.stderr)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return c
}

// wait returns the CLI's exit status, failing the test if it does not exit
// in time.
func (c *cliRun) wait(t *testing.T, who string) int {
	t.Helper()
	select {
	case code := <-c.code:
		return code
	case <-time.After(e2eTimeout):
		t.Fatalf("%s did not exit; stdout:\n%s\nstderr:\n%s", who, c.stdout.String(), c.stderr.String())
		panic("unreachable")
	}
}

// waitOutput polls the CLI's stdout until one of its messages satisfies
// match, and returns that message. It fails the test at the deadline or if
// the CLI exits first.
func (c *cliRun) waitOutput(t *testing.T, what string, match func(jsonMessage) bool) jsonMessage {
	t.Helper()
	deadline := time.Now().Add(e2eTimeout)
	for {
		for _, m := range parseOutput(t, c.stdout.String()) {
			if match(m) {
				return m
			}
		}
		select {
		case code := <-c.code:
			c.code <- code // leave it for wait
			// It may have printed the message just before exiting.
			for _, m := range parseOutput(t, c.stdout.String()) {
				if match(m) {
					return m
				}
			}
			t.Fatalf("CLI exited with %d before printing %s; stdout:\n%s\nstderr:\n%s", code, what, c.stdout.String(), c.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; stdout:\n%s\nstderr:\n%s", what, c.stdout.String(), c.stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stdinPipe returns a stdin the test writes to. It is closed when the test
// ends, so the CLI's stdin reader never outlives the test.
func stdinPipe(t *testing.T) (io.Reader, *io.PipeWriter) {
	t.Helper()
	r, w := io.Pipe()
	t.Cleanup(func() { w.Close() })
	return r, w
}

// writeLine writes one line to a CLI's stdin.
func writeLine(t *testing.T, w io.Writer, line string) {
	t.Helper()
	if _, err := io.WriteString(w, line+"\n"); err != nil {
		t.Fatalf("write stdin: %v", err)
	}
}

// parseOutput parses scripted mode's stdout, one JSON message a line. It
// is strict: only the keys of the wire contract, spelled exactly, and no
// partial line (stdout is written a whole line at a time).
func parseOutput(t *testing.T, out string) []jsonMessage {
	t.Helper()
	var msgs []jsonMessage
	for _, line := range strings.SplitAfter(out, "\n") {
		if line == "" {
			continue
		}
		if !strings.HasSuffix(line, "\n") {
			t.Fatalf("stdout ends in a partial line %q", line)
		}
		// decodeMessage is what reads stdin: printed lines must be
		// valid input for another CLI, as the spec promises.
		if _, err := decodeMessage([]byte(line)); err != nil {
			t.Fatalf("stdout line %q: %v", line, err)
		}
		var m jsonMessage
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("stdout line %q: %v", line, err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// isControl matches a control message with action about session ("" for
// none).
func isControl(action, session string) func(jsonMessage) bool {
	return func(m jsonMessage) bool {
		return m.Type == "control" && deref(m.Action) == action && deref(m.SessionID) == session
	}
}

// isData matches a delivery of data with id to session.
func isData(session, id string, data []byte) func(jsonMessage) bool {
	return func(m jsonMessage) bool {
		return m.Type == "data" && deref(m.SessionID) == session && deref(m.ID) == id && bytes.Equal(m.Data, data)
	}
}

// checkDelivery checks the fields the server sets on a delivery.
func checkDelivery(t *testing.T, m jsonMessage, seq uint64, sender string) {
	t.Helper()
	if m.Seq == nil || *m.Seq != seq {
		t.Errorf("delivery seq = %v, want %d", m.Seq, seq)
	}
	if got := deref(m.ClientID); got != sender {
		t.Errorf("delivery client_id = %q, want %q", got, sender)
	}
	if deref(m.Epoch) == "" {
		t.Error("delivery has no epoch")
	}
	// The server's accept time: recent, in Unix milliseconds.
	if m.Timestamp == nil || time.Since(time.UnixMilli(*m.Timestamp)).Abs() > time.Hour {
		t.Errorf("delivery timestamp = %v, want the server's accept time in Unix ms", m.Timestamp)
	}
}

const (
	joinLobby   = `{"type":"control","action":"join","session_id":"lobby"}`
	publishHiM1 = `{"type":"data","session_id":"lobby","data":"aGk=","id":"m1"}`
)

// TestE2EScriptedRoundTrip drives a real server from a script: the client
// joins, publishes, and reaches end of input; the server flushes the
// delivery to the sender and ends the stream OK.
func TestE2EScriptedRoundTrip(t *testing.T) {
	url := startStreamHub(t, streaming.Config{})
	alice := startCLI(t, strings.NewReader(joinLobby+"\n"+publishHiM1+"\n"),
		"-url", url, "stream-service", "stream-data", "--client-id", "alice")
	if code := alice.wait(t, "alice"); code != exitOK {
		t.Fatalf("exit status %d, want %d; stderr:\n%s", code, exitOK, alice.stderr.String())
	}

	msgs := parseOutput(t, alice.stdout.String())
	if len(msgs) == 0 {
		t.Fatal("nothing on stdout")
	}
	if first := msgs[0]; !isControl("welcome", "")(first) || deref(first.ClientID) != "alice" || first.Timestamp == nil {
		t.Errorf("first message = %+v, want control/welcome with client_id alice and a timestamp", first)
	}
	var joined, delivered bool
	for _, m := range msgs {
		switch {
		case isControl("joined", "lobby")(m):
			joined = true
		case isData("lobby", "m1", []byte("hi"))(m):
			if delivered {
				t.Errorf("delivered twice: %+v", m)
			}
			delivered = true
			checkDelivery(t, m, 1, "alice")
		case m.Type == "heartbeat":
		case m.Type == "control" && deref(m.Action) == "welcome":
		default:
			t.Errorf("unexpected message %+v", m)
		}
	}
	if !joined {
		t.Errorf("no control/joined for lobby in:\n%s", alice.stdout.String())
	}
	if !delivered {
		t.Errorf("no delivery of m1 to lobby in:\n%s", alice.stdout.String())
	}
	if s := alice.stderr.String(); s != "" {
		t.Errorf("stderr = %q, want nothing", s)
	}
}

// TestE2ETwoClients checks that one CLI's message reaches another CLI that
// joined the session first, and that the listener ends cleanly when its
// input ends.
func TestE2ETwoClients(t *testing.T) {
	url := startStreamHub(t, streaming.Config{})
	bobIn, bobW := stdinPipe(t)
	bob := startCLI(t, bobIn, "-url", url, "stream-service", "stream-data", "--client-id", "bob")
	writeLine(t, bobW, joinLobby)
	bob.waitOutput(t, "bob's joined", isControl("joined", "lobby"))

	alice := startCLI(t, strings.NewReader(publishHiM1+"\n"),
		"-url", url, "stream-service", "stream-data", "--client-id", "alice")
	if code := alice.wait(t, "alice"); code != exitOK {
		t.Fatalf("alice's exit status %d, want %d; stderr:\n%s", code, exitOK, alice.stderr.String())
	}
	// A data message joins its sender live, so alice gets hers too.
	checkDelivery(t, alice.waitOutput(t, "alice's own delivery", isData("lobby", "m1", []byte("hi"))), 1, "alice")

	got := bob.waitOutput(t, "alice's message at bob", isData("lobby", "m1", []byte("hi")))
	checkDelivery(t, got, 1, "alice")

	bobW.Close() // end of input: bob half-closes and the server ends his stream OK
	if code := bob.wait(t, "bob"); code != exitOK {
		t.Fatalf("bob's exit status %d, want %d; stderr:\n%s", code, exitOK, bob.stderr.String())
	}
	for who, c := range map[string]*cliRun{"alice": alice, "bob": bob} {
		if s := c.stderr.String(); s != "" {
			t.Errorf("%s's stderr = %q, want nothing", who, s)
		}
	}
}

// TestE2ETextMode checks -session: the CLI joins by itself, a plain line is
// sent as data, and the delivery prints as text.
func TestE2ETextMode(t *testing.T) {
	url := startStreamHub(t, streaming.Config{})
	alice := startCLI(t, strings.NewReader("hello\n"),
		"-url", url, "-session", "lobby", "stream-service", "stream-data", "--client-id", "alice")
	if code := alice.wait(t, "alice"); code != exitOK {
		t.Fatalf("exit status %d, want %d; stderr:\n%s", code, exitOK, alice.stderr.String())
	}
	out := alice.stdout.String()
	if !strings.Contains(out, "[lobby] alice: hello\n") {
		t.Errorf("stdout does not show the delivery as text:\n%s", out)
	}
	// The server's other messages read as sentences: the welcome, and the
	// joined of the join text mode sent without being asked.
	for _, want := range []string{"connected as alice\n", "joined lobby at seq 0\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout has no %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "{") {
		t.Errorf("stdout has JSON in text mode:\n%s", out)
	}
	if s := alice.stderr.String(); s != "" {
		t.Errorf("stderr = %q, want nothing", s)
	}
}

// TestE2EServerRefuses checks that a stream the server ends with an error
// makes the CLI exit non-zero with the gRPC status on stderr.
func TestE2EServerRefuses(t *testing.T) {
	url := startStreamHub(t, streaming.Config{MaxConnections: 1})
	holderIn, holderW := stdinPipe(t)
	holder := startCLI(t, holderIn, "-url", url, "stream-service", "stream-data", "--client-id", "holder")
	holder.waitOutput(t, "the holder's welcome", isControl("welcome", ""))

	// Its stdin stays open: it must exit because the server ended the
	// stream, not because its input ended.
	otherIn, _ := stdinPipe(t)
	other := startCLI(t, otherIn, "-url", url, "stream-service", "stream-data", "--client-id", "other")
	if code := other.wait(t, "the second CLI"); code != exitStream {
		t.Errorf("second CLI's exit status %d, want %d", code, exitStream)
	}
	stderr := other.stderr.String()
	for _, want := range []string{"code = ResourceExhausted", "maximum connections reached"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("second CLI's stderr does not mention %q:\n%s", want, stderr)
		}
	}
	if out := other.stdout.String(); out != "" {
		t.Errorf("second CLI's stdout = %q, want nothing", out)
	}

	// The refusal touched nothing of the stream holding the slot.
	holderW.Close()
	if code := holder.wait(t, "the holder"); code != exitOK {
		t.Fatalf("holder's exit status %d, want %d; stderr:\n%s", code, exitOK, holder.stderr.String())
	}
	if s := holder.stderr.String(); s != "" {
		t.Errorf("holder's stderr = %q, want nothing", s)
	}
}
