package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	streamsvcc "github.com/streamhub/streamhub/gen/grpc/stream_service/client"
	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	"goa.design/clue/log"
	goa "goa.design/goa/v3/pkg"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

const waitTimeout = 10 * time.Second

func testOptions(t *testing.T, args ...string) *options {
	t.Helper()
	o, err := parseOptions(append([]string{"--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"}, args...),
		func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronization
	}
}

func httpStatus(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

func grpcHealth(ctx context.Context, cc *grpc.ClientConn) healthpb.HealthCheckResponse_ServingStatus {
	res, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: grpcServiceName})
	if err != nil {
		return healthpb.HealthCheckResponse_UNKNOWN
	}
	return res.Status
}

func openStream(t *testing.T, ctx context.Context, cc *grpc.ClientConn, id string) *streamsvcc.StreamDataClientStream {
	t.Helper()
	res, err := streamsvcc.NewClient(cc).StreamData()(ctx, &streamsvc.StreamDataPayload{ClientID: &id})
	if err != nil {
		t.Fatal(err)
	}
	s := res.(*streamsvcc.StreamDataClientStream)
	if m, err := s.Recv(); err != nil || m.Type != "control" || *m.Action != "welcome" {
		t.Fatalf("no welcome: %v", err)
	}
	return s
}

// TestServeDrainsAndReturns runs the server as main does, with one client
// that reads and one that never does, and shuts it down: readiness and the
// gRPC health service turn, liveness stays, the reading client gets a
// goaway and UNAVAILABLE, and serve returns once the drain timeout ends the
// stuck stream.
func TestServeDrainsAndReturns(t *testing.T) {
	o := testOptions(t, "--drain-timeout", "1s", "--send-timeout", "1h")
	ctx, stop := context.WithCancel(log.Context(context.Background(), log.WithOutput(io.Discard)))
	defer stop()
	s, err := newServer(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.serve(ctx) }()

	admin := "http://" + s.adminAddr()
	cc, err := grpc.NewClient(s.grpcAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	streamCtx, cancelStreams := context.WithCancel(context.Background())
	defer cancelStreams()

	if httpStatus(admin+"/livez") != 200 || httpStatus(admin+"/readyz") != 200 {
		t.Fatal("not live and ready")
	}
	if st := grpcHealth(streamCtx, cc); st != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("gRPC health %v", st)
	}

	// A client that never reads, with a full pipe, keeps the drain busy.
	stuck := openStream(t, streamCtx, cc, "stuck")
	join := "join"
	room := "room"
	if err := stuck.Send(&streamsvc.DataMessage{Type: "control", Action: &join, SessionID: &room}); err != nil {
		t.Fatal(err)
	}
	pubConn, err := grpc.NewClient(s.grpcAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer pubConn.Close()
	reader := openStream(t, streamCtx, pubConn, "reader")
	if err := reader.Send(&streamsvc.DataMessage{Type: "control", Action: &join, SessionID: &room}); err != nil {
		t.Fatal(err)
	}
	big := []byte(strings.Repeat("x", 32<<10))
	for range 20 {
		if err := reader.Send(&streamsvc.DataMessage{Type: "data", SessionID: &room, Data: big}); err != nil {
			t.Fatal(err)
		}
	}
	for delivered := 0; delivered < 20; {
		m, err := reader.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if m.Type == "data" {
			delivered++
		}
	}

	begun := time.Now()
	stop()
	eventually(t, "/readyz failing", func() bool { return httpStatus(admin+"/readyz") == http.StatusServiceUnavailable })
	if st := grpcHealth(streamCtx, cc); st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("gRPC health during drain: %v", st)
	}
	if httpStatus(admin+"/livez") != 200 {
		t.Fatal("/livez failed during drain")
	}

	var goaway bool
	for {
		m, err := reader.Recv()
		if err != nil {
			var se *goa.ServiceError
			if !errors.As(err, &se) || se.Name != "unavailable" {
				t.Fatalf("reader ended with %v, want unavailable", err)
			}
			break
		}
		if m.Type == "control" && *m.Action == "goaway" && *m.Reason == "shutdown" {
			goaway = true
		}
	}
	if !goaway {
		t.Fatal("no goaway before the end")
	}

	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("serve did not return")
	}
	if d := time.Since(begun); d < time.Second {
		t.Fatalf("serve returned after %v, before the drain timeout ended the stuck stream", d)
	}
	cancelStreams()
}
