package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	streampb "github.com/streamhub/streamhub/gen/grpc/stream_service/pb"
	streamsvr "github.com/streamhub/streamhub/gen/grpc/stream_service/server"
	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	"github.com/streamhub/streamhub/streaming"
	"google.golang.org/grpc"
)

// inProcess runs both servers in the test process: the smoke test checks
// the scenarios' mechanics, not the numbers.
type inProcess struct{}

func (inProcess) describe(kind string) string { return "in-process " + kind }

func (inProcess) start(kind string, s settings) (*target, error) {
	grpcL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	adminL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		grpcL.Close()
		return nil, err
	}
	t := &target{kind: kind, grpcAddr: grpcL.Addr().String(), adminAddr: adminL.Addr().String(), pid: os.Getpid()}
	switch kind {
	case kindBaseline:
		bs := startBaseline(grpcL, adminL, s.heartbeat)
		t.stop = func() error { bs.shutdown(); return nil }
	case kindStreamHub:
		// What cmd/streamhub wires with --rate-limit 0, minus logging.
		svc := streaming.New(streaming.Config{MaxConnections: max(s.maxConns, 5000), HeartbeatInterval: s.heartbeat})
		gs := grpc.NewServer()
		streampb.RegisterStreamServiceServer(gs, streamsvr.New(streamsvc.NewEndpoints(svc), nil))
		admin := &http.Server{Handler: adminMux(), ReadHeaderTimeout: 10 * time.Second}
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			_ = gs.Serve(grpcL)
		}()
		go func() {
			defer wg.Done()
			_ = admin.Serve(adminL)
		}()
		t.stop = func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := svc.Shutdown(ctx)
			gs.Stop()
			_ = admin.Close()
			wg.Wait()
			return err
		}
	default:
		return nil, errors.New("unknown kind " + kind)
	}
	return t, nil
}

// TestEveryScenarioRunsAgainstBothServers runs each scenario with tiny
// sizes and checks that every run measured something and was compared.
func TestEveryScenarioRunsAgainstBothServers(t *testing.T) {
	o := &options{
		scenarios: map[int]bool{1: true, 2: true, 3: true, 4: true},
		duration:  60 * time.Millisecond, warmup: 10 * time.Millisecond, count: 1,
		size: 64, sizes: []int{64, 1024},
		streams: 4, streamConns: 2, window: 4,
		subscribers: 8, fanoutConns: 2, fanoutWindow: 8,
		idleConns: 6, idleHeartbeat: 30 * time.Millisecond, idleHold: 150 * time.Millisecond,
		idleBurst: 2, idleBurstSize: 1024,
	}
	var progress bytes.Buffer
	b := &bench{o: o, l: inProcess{}, progress: &progress}
	rep := b.runAll(context.Background())

	if len(rep.Comparisons) != 5 {
		t.Fatalf("%d comparisons, want 5 (1, 2 at two sizes, 3, 4)", len(rep.Comparisons))
	}
	for _, c := range rep.Comparisons {
		if len(c.Results) != 2 {
			t.Fatalf("scenario %q: %d results", c.Scenario, len(c.Results))
		}
		for _, r := range c.Results {
			if r.Error != "" {
				t.Fatalf("scenario %q, %s: %s", c.Scenario, r.Server, r.Error)
			}
			if c.Number == 4 {
				m := r.Memory
				if m == nil || m.Streams != o.idleConns || m.After.RSS == 0 || m.After.HeapAlloc == 0 || m.GoroutinesPerConn <= 0 {
					t.Fatalf("idle, %s: memory %+v", r.Server, m)
				}
				if m.ServerHeartbeats == 0 {
					t.Fatalf("idle, %s: no heartbeat from the server in %s", r.Server, o.idleHold)
				}
				continue
			}
			if r.Messages == 0 || r.Rate <= 0 || r.P50us <= 0 || r.P99us < r.P50us || r.P999us < r.P99us || r.CPUPerMsgUS <= 0 {
				t.Fatalf("scenario %q, %s: %+v", c.Scenario, r.Server, r)
			}
		}
		if len(c.Checks) == 0 {
			t.Fatalf("scenario %q was not checked against its targets", c.Scenario)
		}
	}
	if rep.failed() {
		t.Fatal("the report says a run failed")
	}

	var text bytes.Buffer
	if err := rep.writeText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ping-pong", "fan-out", "deliveries/s", "idle", "RSS/conn", kindBaseline, kindStreamHub} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("the table has no %q:\n%s", want, text.String())
		}
	}
	var js bytes.Buffer
	if err := rep.writeJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back.Comparisons) != 5 {
		t.Fatalf("JSON does not read back: %v\n%s", err, js.String())
	}
}

// TestAStreamThatEndsFailsTheRun stops the server in the middle of a
// measurement: the run must end early and say why instead of reporting a
// rate.
func TestAStreamThatEndsFailsTheRun(t *testing.T) {
	tg, err := inProcess{}.start(kindStreamHub, settings{})
	if err != nil {
		t.Fatal(err)
	}
	r := newLoadRun(context.Background())
	if err := streamsLoad(2, 1, 4, 64)(r, tg); err != nil {
		t.Fatal(err)
	}
	begun := time.Now()
	_, err = r.measure(0, time.Minute, func(context.Context) { _ = tg.stop() }, nil)
	_, ferr := r.finish()
	if err == nil || !errors.Is(ferr, err) || !strings.Contains(err.Error(), "bench-streams-") {
		t.Fatalf("measure: %v; finish: %v; want the stream's end", err, ferr)
	}
	if time.Since(begun) > 30*time.Second {
		t.Fatal("the run did not end when its streams did")
	}
}
