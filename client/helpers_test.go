package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	streampb "github.com/streamhub/streamhub/gen/grpc/stream_service/pb"
	streamsvr "github.com/streamhub/streamhub/gen/grpc/stream_service/server"
	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	"github.com/streamhub/streamhub/internal/faultproxy"
	"github.com/streamhub/streamhub/streaming"
	"google.golang.org/grpc"
)

// waitTimeout bounds every wait of these tests. Waits poll a condition
// until it holds; the bound only decides when to give up.
const waitTimeout = 20 * time.Second

// testServer is a StreamHub service behind a real gRPC server on a
// loopback address, which can be killed and started again on the same
// address, as a crashed and restarted server would be.
type testServer struct {
	t       testing.TB
	cfg     streaming.Config
	svcOpts []streaming.Option
	wrap    func(*streaming.Service) streamsvc.Service // nil: serve the service as is
	addr    string

	mu     sync.Mutex // guards the fields below
	svc    *streaming.Service
	gs     *grpc.Server
	served chan struct{}
}

// startServer serves cfg on a fresh loopback port until the test ends.
func startServer(t testing.TB, cfg streaming.Config) *testServer {
	t.Helper()
	return startServerWrapped(t, cfg, nil)
}

// startServerWrapped serves the service as wrap makes it appear.
func startServerWrapped(t testing.TB, cfg streaming.Config, wrap func(*streaming.Service) streamsvc.Service) *testServer {
	t.Helper()
	return startServerFull(t, &testServer{t: t, cfg: cfg, wrap: wrap})
}

// startServerWith serves a service with options.
func startServerWith(t testing.TB, cfg streaming.Config, opts ...streaming.Option) *testServer {
	t.Helper()
	return startServerFull(t, &testServer{t: t, cfg: cfg, svcOpts: opts})
}

func startServerFull(t testing.TB, ts *testServer) *testServer {
	t.Helper()
	ts.addr = "127.0.0.1:0"
	ts.start()
	t.Cleanup(ts.kill)
	return ts
}

// start serves a fresh service on ts.addr. Once a port was chosen it is
// reused, waiting out the moment the old listener takes to go.
func (ts *testServer) start() {
	ts.t.Helper()
	var lis net.Listener
	deadline := time.Now().Add(waitTimeout)
	for {
		var err error
		lis, err = net.Listen("tcp", ts.addr)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			ts.t.Fatalf("listen on %s: %v", ts.addr, err)
		}
		time.Sleep(10 * time.Millisecond) // polling for the port to be free
	}
	svc := streaming.New(ts.cfg, ts.svcOpts...)
	var served streamsvc.Service = svc
	if ts.wrap != nil {
		served = ts.wrap(svc)
	}
	gs := grpc.NewServer()
	streampb.RegisterStreamServiceServer(gs, streamsvr.New(streamsvc.NewEndpoints(served), nil))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = gs.Serve(lis) // nil after Stop
	}()
	ts.mu.Lock()
	ts.addr, ts.svc, ts.gs, ts.served = lis.Addr().String(), svc, gs, done
	ts.mu.Unlock()
}

// service returns the service being served.
func (ts *testServer) service() *streaming.Service {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.svc
}

// kill stops the server without a goodbye: every connection is closed at
// once, and the service's state (history, memberships) is gone.
func (ts *testServer) kill() {
	ts.mu.Lock()
	svc, gs, served := ts.svc, ts.gs, ts.served
	ts.svc, ts.gs, ts.served = nil, nil, nil
	ts.mu.Unlock()
	if gs == nil {
		return
	}
	gs.Stop()
	<-served
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // nothing to drain: the streams are gone
	_ = svc.Shutdown(ctx)
}

// drain shuts the server down gracefully, as SIGTERM does: every client
// gets a goaway, what is queued is flushed, then the streams end.
func (ts *testServer) drain() {
	ts.mu.Lock()
	svc, gs, served := ts.svc, ts.gs, ts.served
	ts.svc, ts.gs, ts.served = nil, nil, nil
	ts.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := svc.Shutdown(ctx); err != nil {
		ts.t.Errorf("Shutdown: %v", err)
	}
	// As cmd/streamhub does: GracefulStop lets the transport flush what the
	// streams sent last (the goaway, their status) before it closes.
	gs.GracefulStop()
	<-served
}

// newProxy starts a fault proxy in front of target until the test ends.
func newProxy(t testing.TB, target string) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.New(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("proxy Close: %v", err)
		}
	})
	return p
}

// fastBackoff keeps the tests' reconnects quick.
var fastBackoff = WithBackoff(10*time.Millisecond, 100*time.Millisecond)

// dial connects a client to addr, closed when the test ends.
func dial(t testing.TB, addr string, opts ...Option) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c, err := Dial(ctx, addr, append([]Option{fastBackoff}, opts...)...)
	if err != nil {
		t.Fatalf("Dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// recorder reads a client's events into a list until the client closes.
type recorder struct {
	mu     sync.Mutex // guards events and times
	events []Event
	times  []time.Time   // when each event was read
	done   chan struct{} // closed when Events is closed
}

// record starts reading c's events. The client is closed when the test
// ends, which ends the reader.
func record(t testing.TB, c *Client) *recorder {
	t.Helper()
	r := &recorder{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for ev := range c.Events() {
			r.mu.Lock()
			r.events = append(r.events, ev)
			r.times = append(r.times, time.Now())
			r.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		c.Close()
		<-r.done
	})
	return r
}

// all returns the events so far.
func (r *recorder) all() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// waitFor polls until an event matches and returns the first that does.
func (r *recorder) waitFor(t testing.TB, what string, match func(Event) bool) Event {
	t.Helper()
	var found Event
	eventually(t, what, func() bool {
		for _, ev := range r.all() {
			if match(ev) {
				found = ev
				return true
			}
		}
		return false
	}, func() string { return describeEvents(r.all()) })
	return found
}

// at returns when the n-th event (from 1) that matches was read, or the
// zero time.
func (r *recorder) at(n int, match func(Event) bool) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, ev := range r.events {
		if match(ev) {
			if n--; n == 0 {
				return r.times[i]
			}
		}
	}
	return time.Time{}
}

// count is the number of events that match.
func (r *recorder) count(match func(Event) bool) int {
	n := 0
	for _, ev := range r.all() {
		if match(ev) {
			n++
		}
	}
	return n
}

// messages returns the messages of session received so far.
func (r *recorder) messages(session string) []*Message {
	var msgs []*Message
	for _, ev := range r.all() {
		if m, ok := ev.(*Message); ok && m.Session == session {
			msgs = append(msgs, m)
		}
	}
	return msgs
}

// waitMessages polls until n messages of session arrived and returns them.
func (r *recorder) waitMessages(t testing.TB, session string, n int) []*Message {
	t.Helper()
	eventually(t, fmt.Sprintf("%d messages in %s", n, session), func() bool {
		return len(r.messages(session)) >= n
	}, func() string { return describeEvents(r.all()) })
	return r.messages(session)
}

// isState matches a state change to s.
func isState(s State) func(Event) bool {
	return func(ev Event) bool {
		sc, ok := ev.(*StateChange)
		return ok && sc.State == s
	}
}

// isJoined matches a Joined of session that satisfies more (nil: any).
func isJoined(session string, more func(*Joined) bool) func(Event) bool {
	return func(ev Event) bool {
		j, ok := ev.(*Joined)
		return ok && j.Session == session && (more == nil || more(j))
	}
}

// eventually polls cond until it holds, failing the test at the deadline
// with what and the state describe gives.
func eventually(t testing.TB, what string, cond func() bool, describe func() string) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			state := ""
			if describe != nil {
				state = "\n" + describe()
			}
			t.Fatalf("timed out waiting for %s%s", what, state)
		}
		time.Sleep(2 * time.Millisecond) // polling, not synchronization
	}
}

// describeEvents renders events for a failure message.
func describeEvents(evs []Event) string {
	s := ""
	for _, ev := range evs {
		switch ev := ev.(type) {
		case *Message:
			s += fmt.Sprintf("message %s seq=%d epoch=%s from=%s id=%s (%d bytes)\n", ev.Session, ev.Seq, ev.Epoch, ev.Sender, ev.ID, len(ev.Data))
		case *Joined:
			s += fmt.Sprintf("joined %+v\n", *ev)
		case *ServerError:
			s += fmt.Sprintf("error %+v\n", *ev)
		case *StateChange:
			s += fmt.Sprintf("state %s cause=%v id=%s\n", ev.State, ev.Cause, ev.ClientID)
		}
	}
	return s
}

// checkInOrder checks that msgs, one session's, come in seq order within
// each epoch with no seq twice, and returns their IDs in order.
func checkInOrder(t testing.TB, msgs []*Message) []string {
	t.Helper()
	ids := make([]string, 0, len(msgs))
	last := map[string]uint64{}
	for _, m := range msgs {
		if m.Seq <= last[m.Epoch] {
			t.Errorf("message seq %d (epoch %s, id %s) after seq %d", m.Seq, m.Epoch, m.ID, last[m.Epoch])
		}
		last[m.Epoch] = m.Seq
		ids = append(ids, m.ID)
	}
	return ids
}

// checkExactlyOnce checks that the messages' IDs are want, each once, in
// that order.
func checkExactlyOnce(t testing.TB, msgs []*Message, want []string) {
	t.Helper()
	got := checkInOrder(t, msgs)
	if !slices.Equal(got, want) {
		t.Fatalf("message IDs:\n got %v\nwant %v", got, want)
	}
}

// ids returns prefix-0 ... prefix-(n-1).
func ids(prefix string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("%s-%d", prefix, i))
	}
	return out
}

// publishAll publishes one message per ID to session, in order, each
// waiting for its delivery, and returns the seqs.
func publishAll(t testing.TB, c *Client, session string, msgIDs []string) []uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var seqs []uint64
	for _, id := range msgIDs {
		seq, err := c.Publish(ctx, session, id, []byte("data of "+id))
		if err != nil {
			t.Fatalf("Publish %s: %v", id, err)
		}
		seqs = append(seqs, seq)
	}
	return seqs
}

// join joins session and fails the test on error.
func join(t testing.TB, c *Client, session string, opts ...JoinOption) Joined {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	j, err := c.Join(ctx, session, opts...)
	if err != nil {
		t.Fatalf("Join %s: %v", session, err)
	}
	return j
}

// hookedService wraps a service so a test can see and interfere with the
// messages of each stream.
type hookedService struct {
	*streaming.Service
	// recv is called with each message the server reads; an error ends
	// the stream as a broken connection would, before the server sees
	// the message.
	recv func(client string, m *streamsvc.DataMessage) error
	// send is called with each message the server sends; an error ends
	// the stream before the message goes out.
	send func(client string, m *streamsvc.DataMessage) error
}

func (h *hookedService) StreamData(ctx context.Context, p *streamsvc.StreamDataPayload, stream streamsvc.StreamDataServerStream) error {
	client := ""
	if p.ClientID != nil {
		client = *p.ClientID
	}
	return h.Service.StreamData(ctx, p, &hookedStream{StreamDataServerStream: stream, h: h, client: client})
}

type hookedStream struct {
	streamsvc.StreamDataServerStream
	h      *hookedService
	client string
}

func (s *hookedStream) Recv() (*streamsvc.DataMessage, error) {
	m, err := s.StreamDataServerStream.Recv()
	if err == nil && s.h.recv != nil {
		if err := s.h.recv(s.client, m); err != nil {
			return nil, err
		}
	}
	return m, err
}

// errSwallow, from a send hook, has the message count as sent without
// sending it, as if the connection lost it on the way.
var errSwallow = errors.New("swallow")

func (s *hookedStream) Send(m *streamsvc.DataMessage) error {
	if s.h.send != nil {
		switch err := s.h.send(s.client, m); {
		case errors.Is(err, errSwallow):
			return nil
		case err != nil:
			return err
		}
	}
	return s.StreamDataServerStream.Send(m)
}
