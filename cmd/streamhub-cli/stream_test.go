package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	goa "goa.design/goa/v3/pkg"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestParseLine(t *testing.T) {
	now := time.UnixMilli(1700000000000)
	tests := []struct {
		name    string
		session string
		line    string
		want    *streamsvc.DataMessage // nil: skipped
		wantErr bool
	}{
		{name: "json", line: "{\"type\":\"heartbeat\"}\n", want: &streamsvc.DataMessage{Type: "heartbeat"}},
		{name: "json with CRLF", line: "{\"type\":\"heartbeat\"}\r\n", want: &streamsvc.DataMessage{Type: "heartbeat"}},
		{name: "json without newline", line: `{"type":"heartbeat"}`, want: &streamsvc.DataMessage{Type: "heartbeat"}},
		{name: "blank", line: "\n"},
		{name: "spaces", line: " \t \r\n"},
		{name: "text in scripted mode", line: "hello\n", wantErr: true},
		{
			name:    "text",
			session: "lobby",
			line:    "hello, world \r\n",
			want:    &streamsvc.DataMessage{Type: "data", SessionID: ptr("lobby"), Data: []byte("hello, world "), Timestamp: ptr(now.UnixMilli())},
		},
		{
			name:    "json in text mode",
			session: "lobby",
			line:    "{\"type\":\"control\",\"action\":\"leave\",\"session_id\":\"lobby\"}\n",
			want:    &streamsvc.DataMessage{Type: "control", Action: ptr("leave"), SessionID: ptr("lobby")},
		},
		{name: "bad json in text mode", session: "lobby", line: "{oops\n", wantErr: true},
		{name: "blank in text mode", session: "lobby", line: "  \n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseLine([]byte(tt.line), tt.session, now)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseLine error = %v, want error: %v", err, tt.wantErr)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parseLine = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestTextLine(t *testing.T) {
	tests := []struct {
		name string
		msg  *streamsvc.DataMessage
		want string
	}{
		{"text", &streamsvc.DataMessage{Type: "data", SessionID: ptr("lobby"), ClientID: ptr("alice"), Data: []byte("hi there")}, "[lobby] alice: hi there\n"},
		{"unicode", &streamsvc.DataMessage{Type: "data", SessionID: ptr("s"), ClientID: ptr("b"), Data: []byte("héllo\tworld")}, "[s] b: héllo\tworld\n"},
		{"newline quoted", &streamsvc.DataMessage{Type: "data", SessionID: ptr("s"), ClientID: ptr("b"), Data: []byte("two\nlines")}, "[s] b: \"two\\nlines\"\n"},
		{"binary quoted", &streamsvc.DataMessage{Type: "data", SessionID: ptr("s"), ClientID: ptr("b"), Data: []byte{0xff, 0x00}}, "[s] b: \"\\xff\\x00\"\n"},
		{"no sender", &streamsvc.DataMessage{Type: "data", SessionID: ptr("s")}, "[s] : \n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(textLine(tt.msg)); got != tt.want {
				t.Errorf("textLine = %q, want %q", got, tt.want)
			}
		})
	}
}

// fakeStream stands in for the generated client stream: what the driver
// sends goes to sent, and Recv returns what the test puts in recvs.
type fakeStream struct {
	sent   chan *streamsvc.DataMessage
	closed chan struct{} // closed by Close, the half-close
	recvs  chan fakeRecv

	mu  sync.Mutex
	end error // guarded by mu; what ended the stream, as endRecorder.err
}

// fakeRecv is one result of Recv; ends marks the error that ends the stream.
type fakeRecv struct {
	msg  *streamsvc.DataMessage
	err  error
	ends bool
}

var _ streamsvc.StreamDataClientStream = (*fakeStream)(nil)

func newFakeStream() *fakeStream {
	return &fakeStream{
		sent:   make(chan *streamsvc.DataMessage, 100),
		closed: make(chan struct{}),
		recvs:  make(chan fakeRecv),
	}
}

func (f *fakeStream) Send(m *streamsvc.DataMessage) error {
	if f.ended() != nil {
		return io.EOF
	}
	f.sent <- m
	return nil
}

func (f *fakeStream) Recv() (*streamsvc.DataMessage, error) {
	r := <-f.recvs
	if r.ends {
		f.mu.Lock()
		f.end = r.err
		f.mu.Unlock()
	}
	return r.msg, r.err
}

func (f *fakeStream) Close() error {
	close(f.closed)
	return nil
}

func (f *fakeStream) ended() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.end
}

func (f *fakeStream) SendWithContext(_ context.Context, m *streamsvc.DataMessage) error {
	return f.Send(m)
}

func (f *fakeStream) RecvWithContext(context.Context) (*streamsvc.DataMessage, error) {
	return f.Recv()
}

// syncBuffer is a bytes.Buffer the test can read while the driver writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer // guarded by mu
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startDrive runs a driver over f in the background and returns the channel
// its result arrives on.
func startDrive(f *fakeStream, session string, stdin io.Reader, stdout, stderr io.Writer) <-chan error {
	d := &driver{
		stream:  f,
		ended:   f.ended,
		session: session,
		out:     &output{prog: "streamhub-cli", stdout: stdout, stderr: stderr},
	}
	res := make(chan error, 1)
	go func() { res <- d.drive(stdin, func() {}) }()
	return res
}

// receive waits for a value from ch, failing the test after a generous
// deadline rather than hanging.
func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func TestDriveScripted(t *testing.T) {
	f := newFakeStream()
	var stdout, stderr syncBuffer
	stdin := strings.NewReader(strings.Join([]string{
		`{"type":"control","action":"join","session_id":"lobby"}`,
		``,
		`not json`,
		`{"session_id":"lobby"}`,
		`{"type":"data","session_id":"lobby","data":"aGk="}`,
	}, "\n")) // no newline at the end: the last line still counts
	res := startDrive(f, "", stdin, &stdout, &stderr)

	want := []*streamsvc.DataMessage{
		{Type: "control", Action: ptr("join"), SessionID: ptr("lobby")},
		{Type: "data", SessionID: ptr("lobby"), Data: []byte("hi")},
	}
	for i, w := range want {
		if got := receive(t, f.sent, "a sent message"); !reflect.DeepEqual(got, w) {
			t.Errorf("sent message %d = %+v, want %+v", i, newJSONMessage(got), newJSONMessage(w))
		}
	}
	receive(t, f.closed, "the half-close at end of input")
	for _, want := range []string{"line 3: invalid JSON", `line 4: missing "type"`} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr does not report %q:\n%s", want, stderr.String())
		}
	}

	// The server flushes, then ends the stream with OK.
	f.recvs <- fakeRecv{msg: &streamsvc.DataMessage{Type: "control", Action: ptr("welcome"), ClientID: ptr("alice")}}
	f.recvs <- fakeRecv{err: goa.InvalidEnumValueError("stream.type", "bogus", []any{"data"})} // one bad message
	f.recvs <- fakeRecv{msg: &streamsvc.DataMessage{Type: "data", SessionID: ptr("lobby"), Seq: ptr(uint64(1)), Data: []byte("hi")}}
	f.recvs <- fakeRecv{err: io.EOF, ends: true}
	if err := receive(t, res, "drive to return"); !errors.Is(err, io.EOF) {
		t.Fatalf("drive = %v, want io.EOF", err)
	}
	wantOut := `{"type":"control","action":"welcome","client_id":"alice"}` + "\n" +
		`{"type":"data","session_id":"lobby","data":"aGk=","seq":1}` + "\n"
	if got := stdout.String(); got != wantOut {
		t.Errorf("stdout =\n%s\nwant\n%s", got, wantOut)
	}
	if !strings.Contains(stderr.String(), "received an invalid message") {
		t.Errorf("stderr does not report the invalid received message:\n%s", stderr.String())
	}
}

func TestDriveText(t *testing.T) {
	f := newFakeStream()
	var stdout, stderr syncBuffer
	stdin := strings.NewReader("hello\n{\"type\":\"heartbeat\"}\n")
	res := startDrive(f, "lobby", stdin, &stdout, &stderr)

	join := receive(t, f.sent, "the join")
	if want := (&streamsvc.DataMessage{Type: "control", Action: ptr("join"), SessionID: ptr("lobby")}); !reflect.DeepEqual(join, want) {
		t.Errorf("first message = %+v, want the join %+v", newJSONMessage(join), newJSONMessage(want))
	}
	data := receive(t, f.sent, "the text line")
	if data.Type != "data" || deref(data.SessionID) != "lobby" || string(data.Data) != "hello" || data.Timestamp == nil {
		t.Errorf("text line sent as %+v", newJSONMessage(data))
	}
	if hb := receive(t, f.sent, "the JSON line"); hb.Type != "heartbeat" {
		t.Errorf("JSON line sent as %+v", newJSONMessage(hb))
	}
	receive(t, f.closed, "the half-close")

	f.recvs <- fakeRecv{msg: &streamsvc.DataMessage{Type: "control", Action: ptr("joined"), SessionID: ptr("lobby"), Seq: ptr(uint64(0))}}
	f.recvs <- fakeRecv{msg: &streamsvc.DataMessage{Type: "data", SessionID: ptr("lobby"), ClientID: ptr("bob"), Data: []byte("hi alice")}}
	f.recvs <- fakeRecv{err: io.EOF, ends: true}
	if err := receive(t, res, "drive to return"); !errors.Is(err, io.EOF) {
		t.Fatalf("drive = %v, want io.EOF", err)
	}
	wantOut := "joined lobby at seq 0\n" +
		"[lobby] bob: hi alice\n"
	if got := stdout.String(); got != wantOut {
		t.Errorf("stdout =\n%s\nwant\n%s", got, wantOut)
	}
	if stderr.String() != "" {
		t.Errorf("stderr = %q, want nothing", stderr.String())
	}
}

// TestDriveServerEndsFirst checks that drive returns as soon as the server
// ends the stream, with stdin still open. The stdin reader is left blocked
// in Read until the test closes the pipe; goleak in TestMain checks that it
// then goes away.
func TestDriveServerEndsFirst(t *testing.T) {
	f := newFakeStream()
	var stdout, stderr syncBuffer
	stdin, stdinW := io.Pipe()
	t.Cleanup(func() { stdinW.Close() })
	res := startDrive(f, "", stdin, &stdout, &stderr)

	if _, err := io.WriteString(stdinW, "{\"type\":\"heartbeat\"}\n"); err != nil {
		t.Fatal(err)
	}
	receive(t, f.sent, "the sent heartbeat")
	end := status.Error(codes.ResourceExhausted, "slow consumer")
	f.recvs <- fakeRecv{err: end, ends: true}
	if err := receive(t, res, "drive to return with stdin open"); err != end {
		t.Fatalf("drive = %v, want %v", err, end)
	}
	select {
	case <-f.closed:
		t.Error("the stream was half-closed, but stdin never ended")
	default:
	}
}

// errWriter fails every write.
type errWriter struct{}

func (errWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestDriveOutputFails(t *testing.T) {
	f := newFakeStream()
	var stderr syncBuffer
	stdin, stdinW := io.Pipe()
	defer stdinW.Close()
	res := startDrive(f, "", stdin, errWriter{}, &stderr)
	f.recvs <- fakeRecv{msg: &streamsvc.DataMessage{Type: "heartbeat"}}
	if err := receive(t, res, "drive to return"); !errors.Is(err, errOutput) {
		t.Fatalf("drive = %v, want an output error", err)
	}
}
