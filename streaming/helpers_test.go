package streaming

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	streamsvcc "github.com/streamhub/streamhub/gen/grpc/stream_service/client"
	streampb "github.com/streamhub/streamhub/gen/grpc/stream_service/pb"
	streamsvr "github.com/streamhub/streamhub/gen/grpc/stream_service/server"
	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	"github.com/streamhub/streamhub/internal/wire"
	goa "goa.design/goa/v3/pkg"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// waitTimeout bounds every wait of these tests.
const waitTimeout = 10 * time.Second

// testServer is a StreamHub service behind a real gRPC server on loopback.
type testServer struct {
	svc     *Service
	grpc    *grpc.Server
	addr    string
	metrics *countingMetrics
}

// startServer serves cfg on a loopback port until the test ends.
func startServer(t testing.TB, cfg Config, opts ...grpc.ServerOption) *testServer {
	t.Helper()
	return startServerWith(t, cfg, nil, opts...)
}

// startServerWith is startServer with service options.
func startServerWith(t testing.TB, cfg Config, svcOpts []Option, opts ...grpc.ServerOption) *testServer {
	t.Helper()
	return startServerFull(t, cfg, svcOpts, nil, opts...)
}

// plain is a server option that makes a test server encode every message
// on every send, as a server without wire.Codec does.
var plain = grpc.EmptyServerOption{}

func plainServer(opts []grpc.ServerOption) bool {
	for _, o := range opts {
		if o == grpc.ServerOption(plain) {
			return true
		}
	}
	return false
}

// startServerWrapped serves the service as wrap makes it appear.
func startServerWrapped(t testing.TB, cfg Config, wrap func(*Service) streamsvc.Service, opts ...grpc.ServerOption) *testServer {
	t.Helper()
	return startServerFull(t, cfg, nil, wrap, opts...)
}

func startServerFull(t testing.TB, cfg Config, svcOpts []Option, wrap func(*Service) streamsvc.Service, opts ...grpc.ServerOption) *testServer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := newCountingMetrics()
	if testEngine != "" && len(svcOpts) == 0 {
		svcOpts = []Option{engineOption(t, testEngine, cfg, nil)}
	}
	svc := New(cfg, append([]Option{WithMetrics(m)}, svcOpts...)...)
	var served streamsvc.Service = svc
	if wrap != nil {
		served = wrap(svc)
	}
	// As cmd/streamhub serves it: deliveries encoded once (plainServer
	// turns that off).
	if !plainServer(opts) {
		opts = append(opts, grpc.ForceServerCodecV2(wire.Codec{}),
			grpc.ChainStreamInterceptor(EncodedDeliveries(streampb.StreamService_StreamData_FullMethodName)))
	}
	gs := grpc.NewServer(opts...)
	streampb.RegisterStreamServiceServer(gs, streamsvr.New(streamsvc.NewEndpoints(served), nil))
	serving := make(chan struct{})
	go func() {
		defer close(serving)
		_ = gs.Serve(lis)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		_ = svc.Shutdown(ctx)
		gs.Stop()
		<-serving
	})
	return &testServer{svc: svc, grpc: gs, addr: lis.Addr().String(), metrics: m}
}

// dial returns a client connection to the server, closed when the test ends.
func (ts *testServer) dial(t testing.TB) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(ts.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// testClient is one stream opened with the generated client. Unless
// opened with noRead, a goroutine reads every message into msgs.
type testClient struct {
	t      testing.TB
	stream *streamsvcc.StreamDataClientStream
	cancel context.CancelFunc
	msgs   chan *streamsvc.DataMessage
	done   chan struct{}
	err    error // the stream's final error once done is closed; nil for OK
}

// open opens a stream as clientID ("" for none) on its own connection.
func (ts *testServer) open(t *testing.T, clientID string) *testClient {
	return ts.openOn(t, ts.dial(t), clientID, true)
}

// openOn opens a stream on cc. With read false nothing reads the stream
// until readAll is called.
func (ts *testServer) openOn(t *testing.T, cc *grpc.ClientConn, clientID string, read bool) *testClient {
	t.Helper()
	p := &streamsvc.StreamDataPayload{}
	if clientID != "" {
		p.ClientID = &clientID
	}
	return ts.openPayload(t, cc, p, read)
}

// openOnB opens a reading stream as clientID for a benchmark.
func (ts *testServer) openOnB(b *testing.B, clientID string) *testClient {
	b.Helper()
	return ts.openPayload(b, ts.dial(b), &streamsvc.StreamDataPayload{ClientID: &clientID}, true)
}

// openPayload opens a stream with p's metadata on cc.
func (ts *testServer) openPayload(t testing.TB, cc *grpc.ClientConn, p *streamsvc.StreamDataPayload, read bool) *testClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	res, err := streamsvcc.NewClient(cc).StreamData()(ctx, p)
	if err != nil {
		cancel()
		t.Fatalf("open stream: %v", err)
	}
	c := &testClient{t: t, stream: res.(*streamsvcc.StreamDataClientStream), cancel: cancel,
		msgs: make(chan *streamsvc.DataMessage, 100000), done: make(chan struct{})}
	t.Cleanup(func() {
		cancel()
		if read {
			<-c.done
		}
	})
	if read {
		go c.readAll()
	}
	return c
}

// validationErrors are the names of the errors the generated client's Recv
// returns for one invalid message, as opposed to the stream's end.
var validationErrors = map[string]bool{
	goa.InvalidFieldType: true, goa.MissingField: true, goa.InvalidEnumValue: true,
	goa.InvalidFormat: true, goa.InvalidPattern: true, goa.InvalidRange: true, goa.InvalidLength: true,
}

func (c *testClient) readAll() {
	defer close(c.done)
	for {
		msg, err := c.stream.Recv()
		if err != nil {
			var invalid *goa.ServiceError
			if errors.As(err, &invalid) && validationErrors[invalid.Name] {
				c.t.Errorf("server sent an invalid message: %v", err)
				continue
			}
			if !errors.Is(err, io.EOF) && !errors.Is(err, context.Canceled) && status.Code(err) != codes.Canceled {
				c.err = err
			}
			return
		}
		c.msgs <- msg
	}
}

func (c *testClient) send(msg *streamsvc.DataMessage) {
	c.t.Helper()
	if err := c.stream.Send(msg); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// next returns the next message that is not a heartbeat.
func (c *testClient) next() *streamsvc.DataMessage {
	c.t.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case m := <-c.msgs:
			if m.Type == typeHeartbeat {
				continue
			}
			return m
		case <-c.done:
			select {
			case m := <-c.msgs:
				if m.Type == typeHeartbeat {
					continue
				}
				return m
			default:
			}
			c.t.Fatalf("stream ended (%v) while a message was expected", c.err)
		case <-timeout:
			c.t.Fatal("no message in time")
		}
	}
}

// expect returns the next message that is not a heartbeat and checks its
// type and action.
func (c *testClient) expect(typ string, action string) *streamsvc.DataMessage {
	c.t.Helper()
	m := c.next()
	if m.Type != typ || (action != "" && deref(m.Action) != action) {
		c.t.Fatalf("got %s, want type %q action %q", describe(m), typ, action)
	}
	return m
}

// welcome reads the welcome.
func (c *testClient) welcome() *streamsvc.DataMessage {
	c.t.Helper()
	return c.expect(typeControl, actWelcome)
}

// join joins session live and waits for joined.
func (c *testClient) join(session string) *streamsvc.DataMessage {
	c.t.Helper()
	c.send(&streamsvc.DataMessage{Type: typeControl, Action: ptr(actJoin), SessionID: &session})
	return c.expect(typeControl, actJoined)
}

// publish sends data to session.
func (c *testClient) publish(session string, data string) {
	c.t.Helper()
	c.send(&streamsvc.DataMessage{Type: typeData, SessionID: &session, Data: []byte(data)})
}

// sync does a health_check round trip: every message the server queued for
// this client before it read the health_check is returned, in order.
func (c *testClient) sync() []*streamsvc.DataMessage {
	c.t.Helper()
	c.send(&streamsvc.DataMessage{Type: typeHealthCheck})
	var before []*streamsvc.DataMessage
	for {
		m := c.next()
		if m.Type == typeHealthCheck {
			return before
		}
		before = append(before, m)
	}
}

// end waits for the stream to end and returns its final error.
func (c *testClient) end() error {
	c.t.Helper()
	select {
	case <-c.done:
		return c.err
	case <-time.After(waitTimeout):
		c.t.Fatal("stream did not end")
		return nil
	}
}

// errorName is the Goa error name of a stream's final error, or its gRPC code.
func errorName(err error) string {
	var se *goa.ServiceError
	if errors.As(err, &se) {
		return se.Name
	}
	return status.Code(err).String()
}

func describe(m *streamsvc.DataMessage) string {
	return m.Type + "/" + str(m.Action) + " session=" + str(m.SessionID) + " reason=" + str(m.Reason) + " data=" + string(m.Data)
}

func str(p *string) string {
	if p == nil {
		return "-"
	}
	return *p
}

// eventually polls cond until it holds or the wait times out.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond) // polling interval, not synchronization
	}
}

// countingMetrics counts the events tests look at.
type countingMetrics struct {
	mu             sync.Mutex
	disconnects    map[string]int
	delivered      int // live deliveries
	replayed       int
	evicted        int
	historyEvicted int
}

func newCountingMetrics() *countingMetrics {
	return &countingMetrics{disconnects: map[string]int{}}
}

func (m *countingMetrics) Disconnected(reason string) {
	m.mu.Lock()
	m.disconnects[reason]++
	m.mu.Unlock()
}
func (m *countingMetrics) Delivered(time.Duration) {
	m.mu.Lock()
	m.delivered++
	m.mu.Unlock()
}

func (m *countingMetrics) Replayed(n int) {
	m.mu.Lock()
	m.replayed += n
	m.mu.Unlock()
}

func (m *countingMetrics) RetainedEvicted() {
	m.mu.Lock()
	m.evicted++
	m.mu.Unlock()
}

// counts returns the live deliveries, replays and evictions counted so far.
func (m *countingMetrics) counts() (delivered, replayed, evicted int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.delivered, m.replayed, m.evicted
}

func (m *countingMetrics) SendFailed()    {}
func (m *countingMetrics) ReceiveFailed() {}

func (m *countingMetrics) disconnected(reason string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.disconnects[reason]
}

func (m *countingMetrics) HistoryEvicted(n int) {
	m.mu.Lock()
	m.historyEvicted += n
	m.mu.Unlock()
}

func (m *countingMetrics) historyEvictions() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.historyEvicted
}
