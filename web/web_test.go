package web

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	streamsvr "github.com/streamhub/streamhub/gen/http/stream_service/server"
	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	"github.com/streamhub/streamhub/streaming"
	"go.uber.org/goleak"
	"goa.design/clue/log"
	goa "goa.design/goa/v3/pkg"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitTimeout bounds every wait of these tests.
const waitTimeout = 10 * time.Second

// TestJSONSize: the computed size is the length of the frame the generated
// stream writes, whatever the strings hold.
func TestJSONSize(t *testing.T) {
	strs := []string{"", "lobby", `quote " and \ backslash`, "<b>&amp;</b>", "tab\tnew\nline\r\b\f\x00\x1f\x7f",
		"héllo wörld ✓ 𝄞", "bad \xff\xfe utf-8", "\u2028\u2029", strings.Repeat("x", 300)}
	pick := func(r *rand.Rand) *string {
		if r.IntN(3) == 0 {
			return nil
		}
		s := strs[r.IntN(len(strs))]
		return &s
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		m := &streamsvc.DataMessage{
			Type: strs[r.IntN(len(strs))], SessionID: pick(r), Action: pick(r), ClientID: pick(r), ID: pick(r), Reason: pick(r), Epoch: pick(r),
		}
		if r.IntN(2) == 0 {
			m.Data = make([]byte, r.IntN(100))
		}
		if r.IntN(2) == 0 {
			ts := r.Int64() - r.Int64()
			m.Timestamp = &ts
		}
		if r.IntN(2) == 0 {
			seq := r.Uint64() >> r.IntN(64)
			m.Seq = &seq
		}
		if r.IntN(2) == 0 {
			b := r.IntN(2) == 0
			m.Recovered = &b
		}
		var buf strings.Builder
		if err := json.NewEncoder(&buf).Encode(streamsvr.NewStreamDataResponseBody(m)); err != nil {
			t.Fatal(err)
		}
		if got, want := jsonSize(m), buf.Len(); got != want {
			t.Fatalf("message %d: jsonSize %d, encoded %d: %s", i, got, want, buf.String())
		}
	}
}

func TestJSONSizeDoesNotAllocate(t *testing.T) {
	seq, ts, id := uint64(123456), int64(1700000000000), "m-1"
	m := &streamsvc.DataMessage{Type: "data", SessionID: &id, ID: &id, ClientID: &id, Seq: &seq, Timestamp: &ts, Data: make([]byte, 64)}
	if n := testing.AllocsPerRun(100, func() { jsonSize(m) }); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}

func TestCloseCode(t *testing.T) {
	long := strings.Repeat("é", 100)
	for _, tc := range []struct {
		name     string
		err      error
		goaway   string
		draining bool
		code     int
		text     string
	}{
		{"client done", nil, "", false, websocket.CloseNormalClosure, ""},
		{"shutdown", streamsvc.MakeUnavailable(errors.New("server shutting down")), "shutdown", true, websocket.CloseGoingAway, "server shutting down"},
		{"shutdown, no goaway got through", streamsvc.MakeUnavailable(errors.New("server shutting down")), "", true, websocket.CloseGoingAway, "server shutting down"},
		{"stream age", streamsvc.MakeResourceExhausted(errors.New("maximum stream age reached")), "max_stream_age", false, websocket.CloseGoingAway, "maximum stream age reached"},
		{"inactive", streamsvc.MakeUnavailable(errors.New("inactive")), "", false, CloseUnavailable, "inactive"},
		{"replaced", streamsvc.MakeAborted(errors.New("replaced")), "replaced", false, CloseReplaced, "replaced"},
		{"token expired", streamsvc.MakeUnauthenticated(errors.New("token expired")), "", false, CloseUnauthenticated, "token expired"},
		{"slow consumer", streamsvc.MakeResourceExhausted(errors.New("slow consumer")), "", false, CloseResourceExhausted, "slow consumer"},
		{"too large", status.Error(codes.ResourceExhausted, "too large"), "", false, websocket.CloseMessageTooBig, "too large"},
		{"client gone", status.Error(codes.Canceled, "gone"), "", false, websocket.CloseNormalClosure, "gone"},
		{"internal", status.Error(codes.Internal, "internal error"), "", false, websocket.CloseInternalServerErr, "internal error"},
		{"long reason cut at a rune", streamsvc.MakeUnavailable(errors.New(long)), "", false, CloseUnavailable, strings.Repeat("é", 61)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, text := closeCode(tc.err, tc.goaway, tc.draining)
			if code != tc.code || text != tc.text {
				t.Fatalf("closeCode = %d %q, want %d %q", code, text, tc.code, tc.text)
			}
			if len(text) > maxCloseText {
				t.Fatalf("reason of %d bytes", len(text))
			}
		})
	}
}

func TestGRPCStatus(t *testing.T) {
	for err, want := range map[error]codes.Code{
		nil: codes.OK,
		streamsvc.MakeUnauthenticated(errors.New("x")):   codes.Unauthenticated,
		streamsvc.MakeResourceExhausted(errors.New("x")): codes.ResourceExhausted,
		streamsvc.MakeAborted(errors.New("x")):           codes.Aborted,
		streamsvc.MakeUnavailable(errors.New("x")):       codes.Unavailable,
		goa.PermanentError("something_else", "x"):        codes.Unknown,
		status.Error(codes.Internal, "x"):                codes.Internal,
	} {
		if got := status.Code(grpcStatus(err)); got != want {
			t.Errorf("%v: %v, want %v", err, got, want)
		}
	}
}

func TestRedactToken(t *testing.T) {
	for in, want := range map[string]string{
		"/v1/stream?client_id=a":              "/v1/stream?client_id=a",
		"/v1/stream?token=secret&client_id=a": "/v1/stream?client_id=a&token=REDACTED",
		"/":                                   "/",
	} {
		if got := redactToken(in); got != want {
			t.Errorf("redactToken(%q) = %q, want %q", in, got, want)
		}
	}
}

// startWeb serves a streaming service through the browser transport on
// loopback until the test ends.
func startWeb(t *testing.T, cfg Config) (*httptest.Server, *streaming.Service) {
	t.Helper()
	svc := streaming.New(streaming.Config{})
	cfg.Endpoints = streamsvc.NewEndpoints(svc)
	cfg.LogContext = log.Context(context.Background(), log.WithOutput(io.Discard))
	s := New(cfg)
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		s.Drain()
		if err := svc.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		hs.Close()
		if err := s.Wait(ctx); err != nil {
			t.Error(err)
		}
	})
	return hs, svc
}

func dial(t *testing.T, hs *httptest.Server, id string) *websocket.Conn {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(hs.URL, "http")+StreamPath+"?client_id="+id, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestKeepalive: the server pings every interval; a client that answers
// stays, one that does not is cut off after the pong timeout.
func TestKeepalive(t *testing.T) {
	hs, svc := startWeb(t, Config{PingInterval: 50 * time.Millisecond, PongTimeout: time.Second}) // a pong timeout a loaded machine keeps

	alive := dial(t, hs, "alive")
	var pings atomic.Int32
	alive.SetPingHandler(func(data string) error {
		pings.Add(1)
		return alive.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	dead := dial(t, hs, "dead")
	dead.SetPingHandler(func(string) error { return nil }) // reads pings, never answers

	// Each client reads in its own goroutine: pings are handled inside a
	// read, which returns only with a message.
	reader := func(c *websocket.Conn) <-chan error {
		ended := make(chan error, 1)
		go func() {
			_ = c.SetReadDeadline(time.Now().Add(waitTimeout))
			for {
				_, b, err := c.ReadMessage()
				if err != nil {
					ended <- err
					return
				}
				if strings.Contains(string(b), `"health_check"`) {
					ended <- nil
					return
				}
			}
		}()
		return ended
	}
	aliveEnded, deadEnded := reader(alive), reader(dead)
	select {
	case err := <-deadEnded:
		var ne interface{ Timeout() bool }
		if err == nil || errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the silent client's socket stayed open: %v", err)
		}
	case err := <-aliveEnded:
		t.Fatalf("the answering client lost its socket: %v", err)
	}
	deadline := time.Now().Add(waitTimeout)
	for pings.Load() < 5 {
		if time.Now().After(deadline) {
			t.Fatal("no pings")
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronization
	}
	if err := alive.WriteJSON(map[string]string{"type": "health_check"}); err != nil {
		t.Fatal(err)
	}
	if err := <-aliveEnded; err != nil {
		t.Fatalf("the answering client lost its socket: %v", err)
	}
	for deadline := time.Now().Add(waitTimeout); svc.Connections() != 1; {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections, want the answering one", svc.Connections())
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronization
	}
}
