package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/streamhub/streamhub/engine"
	streamsvcc "github.com/streamhub/streamhub/gen/grpc/stream_service/client"
	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	"github.com/streamhub/streamhub/internal/redistest"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// redisArgs are the flags of a server on r's Redis, followed by args.
func redisArgs(r *redistest.Server, args ...string) []string {
	return append([]string{"--engine", "redis", "--redis-addr", r.Addr(), "--redis-prefix", "test"}, args...)
}

// messages reads st on a goroutine of its own and hands over each message
// it receives; the channel is closed when the stream ends. The goroutine
// ends with the stream: cancel ctx, the stream's context, to end it.
func messages(ctx context.Context, st *streamsvcc.StreamDataClientStream) <-chan *streamsvc.DataMessage {
	ch := make(chan *streamsvc.DataMessage)
	go func() {
		defer close(ch)
		for {
			m, err := st.Recv()
			if err != nil {
				return
			}
			select {
			case ch <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch
}

// await returns the next message from ch that match accepts, skipping the
// others; it fails the test when the stream ends or after waitTimeout.
func await(t *testing.T, ch <-chan *streamsvc.DataMessage, what string, match func(*streamsvc.DataMessage) bool) *streamsvc.DataMessage {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		select {
		case m, ok := <-ch:
			if !ok {
				t.Fatalf("the stream ended while waiting for %s", what)
			}
			if match(m) {
				return m
			}
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// isAction matches control messages with the action.
func isAction(action string) func(*streamsvc.DataMessage) bool {
	return func(m *streamsvc.DataMessage) bool {
		return m.Type == "control" && m.Action != nil && *m.Action == action
	}
}

// aboutID matches a delivery or a control error that carries the message id.
func aboutID(id string) func(*streamsvc.DataMessage) bool {
	return func(m *streamsvc.DataMessage) bool {
		if m.ID == nil || *m.ID != id {
			return false
		}
		return m.Type == "data" || m.Type == "control" && m.Action != nil && *m.Action == "error"
	}
}

// publish sends data to session as message id and returns its delivery
// back to the sender, or the reason of the error the server refused it
// with.
func publish(t *testing.T, st *streamsvcc.StreamDataClientStream, msgs <-chan *streamsvc.DataMessage, session, id, data string) (*streamsvc.DataMessage, string) {
	t.Helper()
	if err := st.Send(&streamsvc.DataMessage{Type: "data", SessionID: &session, ID: &id, Data: []byte(data)}); err != nil {
		t.Fatal(err)
	}
	m := await(t, msgs, "the delivery of "+id+" or an error about it", aboutID(id))
	if m.Type == "control" {
		return nil, deref(m.Reason)
	}
	return m, ""
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// TestRedisEngineServes: with --engine redis the server connects to Redis,
// names the engine, its Redis and its instance in the serving line, is
// ready, and serves a chat.
func TestRedisEngineServes(t *testing.T) {
	r := redistest.Start(t)
	s, logs := startLogged(t, redisArgs(r)...)
	if s.eng == nil {
		t.Fatal("no engine with --engine redis")
	}
	host, _ := os.Hostname()
	if !strings.HasPrefix(s.instance, host+"-") || len(s.instance) != len(host)+9 {
		t.Errorf("instance %q, want the host name %q and a random suffix", s.instance, host)
	}
	eventually(t, "the serving line", func() bool { return strings.Contains(logs.String(), "msg=serving") })
	for _, want := range []string{"engine=redis", "redis=" + r.Addr(), "redis_prefix=test", "instance=" + s.instance} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("the log has no %q:\n%s", want, logs.String())
		}
	}
	admin := "http://" + s.adminAddr()
	if code := httpStatus(admin + "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz %d with Redis up", code)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cc := dialPlain(t, s)
	if st := grpcHealth(ctx, cc); st != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("gRPC health %v with Redis up", st)
	}
	alice := openStream(t, ctx, cc, "alice")
	if m, reason := publish(t, alice, messages(ctx, alice), "lobby", "m1", "hello"); m == nil {
		t.Fatalf("publish refused: %s", reason)
	}
}

// TestMemoryEngineHasNoEngine: the default keeps sessions in the service,
// with no engine, no engine series, and no Redis needed.
func TestMemoryEngineHasNoEngine(t *testing.T) {
	s, logs := startLogged(t, "--redis-addr", "127.0.0.1:1") // ignored, and said so
	if s.eng != nil || s.instance != "" {
		t.Fatalf("engine %v, instance %q with --engine memory", s.eng, s.instance)
	}
	eventually(t, "the serving line", func() bool { return strings.Contains(logs.String(), "msg=serving") })
	if !strings.Contains(logs.String(), "engine=memory") || !strings.Contains(logs.String(), "--redis-addr is ignored") {
		t.Errorf("the log does not say the engine is memory and the Redis address ignored:\n%s", logs.String())
	}
	for series := range scrape(t, "http://"+s.adminAddr()+"/metrics") {
		if strings.HasPrefix(series, "streamhub_engine_") {
			t.Errorf("series %s with --engine memory", series)
		}
	}
}

// switchableEngine stands in for the service's report of its engine.
type switchableEngine struct{ down atomic.Bool }

func (e *switchableEngine) EngineErr() error {
	if e.down.Load() {
		return fmt.Errorf("%w: redis: test outage", engine.ErrUnavailable)
	}
	return nil
}

// healthOf is the gRPC health status of service ("" for the server).
func healthOf(ctx context.Context, cc *grpc.ClientConn, service string) healthpb.HealthCheckResponse_ServingStatus {
	res, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return healthpb.HealthCheckResponse_UNKNOWN
	}
	return res.Status
}

// TestReadinessFollowsEngineHealth: while the service says its engine does
// not answer, /readyz fails and the gRPC health service says NOT_SERVING,
// for the server and the service; both recover when it answers again, and
// the log says so each time. Liveness never changes.
func TestReadinessFollowsEngineHealth(t *testing.T) {
	r := redistest.Start(t)
	eng := &switchableEngine{}
	s, logs := startServer(t, testOptions(t, redisArgs(r)...), func(s *server) { s.engineHealth = eng })
	admin := "http://" + s.adminAddr()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cc := dialPlain(t, s)
	serving := func(st healthpb.HealthCheckResponse_ServingStatus) func() bool {
		return func() bool { return healthOf(ctx, cc, "") == st && healthOf(ctx, cc, grpcServiceName) == st }
	}
	if httpStatus(admin+"/readyz") != http.StatusOK || !serving(healthpb.HealthCheckResponse_SERVING)() {
		t.Fatal("not ready at the start")
	}
	for range 2 { // and again after recovering
		eng.down.Store(true)
		eventually(t, "/readyz failing", func() bool { return httpStatus(admin+"/readyz") == http.StatusServiceUnavailable })
		eventually(t, "gRPC health NOT_SERVING", serving(healthpb.HealthCheckResponse_NOT_SERVING))
		if httpStatus(admin+"/livez") != http.StatusOK {
			t.Fatal("/livez failed while the engine was down")
		}
		eng.down.Store(false)
		eventually(t, "/readyz recovering", func() bool { return httpStatus(admin+"/readyz") == http.StatusOK })
		eventually(t, "gRPC health SERVING", serving(healthpb.HealthCheckResponse_SERVING))
	}
	if n := strings.Count(logs.String(), "engine unavailable: not ready"); n != 2 {
		t.Errorf("%d lines saying the engine is unavailable, want one per outage:\n%s", n, logs.String())
	}
	if n := strings.Count(logs.String(), "engine available again"); n != 2 {
		t.Errorf("%d lines saying the engine is back, want one per outage:\n%s", n, logs.String())
	}
}

// TestEngineSeriesFromTheEngine: the engine the server built reports every
// operation to /metrics, by op and result, with its latency, and an
// operation Redis does not answer counts as unavailable.
func TestEngineSeriesFromTheEngine(t *testing.T) {
	r := redistest.Start(t)
	s := startMain(t, redisArgs(r)...)
	url := "http://" + s.adminAddr() + "/metrics"
	ops := func() map[string]float64 { return scrapeLabel(t, url, "op", "result") }
	v := ops()
	for _, op := range []string{engine.OpPublish, engine.OpHistory, engine.OpSubscribe, engine.OpClaim, engine.OpSaveMemberships} {
		for _, result := range []string{"ok", "unavailable"} {
			if _, ok := v[fmt.Sprintf(`streamhub_engine_operations_total{op=%q,result=%q}`, op, result)]; !ok {
				t.Errorf("no %s/%s series from the start", op, result)
			}
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	const historyOK = `streamhub_engine_operations_total{op="history",result="ok"}`
	const historyLatency = `streamhub_engine_latency_seconds_count{op="history"}`
	if _, _, err := s.eng.History(ctx, "series-probe", 0, -1); err != nil {
		t.Fatal(err)
	}
	after := ops()
	if after[historyOK] < v[historyOK]+1 || after[historyLatency] < v[historyLatency]+1 {
		t.Errorf("a history read is not counted: %s %v → %v, %s %v → %v",
			historyOK, v[historyOK], after[historyOK], historyLatency, v[historyLatency], after[historyLatency])
	}

	r.Kill()
	const unavailable = `streamhub_engine_operations_total{op="publish",result="unavailable"}`
	if _, err := s.eng.Publish(ctx, "series-probe", engine.Publication{ClientID: "probe", Data: []byte("x")}); !errors.Is(err, engine.ErrUnavailable) {
		t.Fatalf("publish with Redis gone: %v, want engine.ErrUnavailable", err)
	}
	if got := ops()[unavailable]; got < 1 {
		t.Errorf("%s = %v after a publish Redis did not answer", unavailable, got)
	}
}

// TestEngineMetricsAfterTraffic: clients' traffic goes through the engine,
// and /metrics shows it. Needs the service wired to the engine.
func TestEngineMetricsAfterTraffic(t *testing.T) {
	r := redistest.Start(t)
	s := startMain(t, redisArgs(r)...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	alice := openStream(t, ctx, dialPlain(t, s), "alice")
	msgs := messages(ctx, alice)
	const n = 5
	for i := range n {
		if m, reason := publish(t, alice, msgs, "lobby", fmt.Sprint("m", i), "hello"); m == nil {
			t.Fatalf("publish refused: %s", reason)
		}
	}
	v := scrapeLabel(t, "http://"+s.adminAddr()+"/metrics", "op", "result")
	for series, least := range map[string]float64{
		`streamhub_engine_operations_total{op="publish",result="ok"}`:   n,
		`streamhub_engine_latency_seconds_count{op="publish"}`:          n,
		`streamhub_engine_operations_total{op="subscribe",result="ok"}`: 1,
	} {
		if v[series] < least {
			t.Errorf("%s = %v after %d publishes, want at least %v", series, v[series], n, least)
		}
	}
}
