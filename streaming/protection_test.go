package streaming

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// members is the number of members session has, or -1 if it does not exist.
func (ts *testServer) members(session string) int {
	s := ts.svc.sessions.get(session)
	if s == nil {
		return -1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.members)
}

// dialSmallWindow connects with fixed 64 KiB flow-control windows, so a
// client that does not read stops the server's sends quickly.
func (ts *testServer) dialSmallWindow(t *testing.T) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(ts.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func TestSlowConsumerIsDisconnectedWhileOthersGoOn(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"backlog over the queue size", Config{QueueSize: 64, MaxPendingBytes: 1 << 30, SendTimeout: 500 * time.Millisecond}},
		{"pending bytes", Config{QueueSize: 100000, MaxPendingBytes: 256 << 10, SendTimeout: time.Hour}},
		{"send timeout", Config{QueueSize: 100000, MaxPendingBytes: 1 << 30, SendTimeout: 500 * time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, tc.cfg)
			slow := ts.openOn(t, ts.dialSmallWindow(t), "slow", false)
			slow.send(&streamsvc.DataMessage{Type: typeControl, Action: ptr(actJoin), SessionID: ptr("room")})
			fast := ts.open(t, "fast")
			fast.welcome()
			fast.join("room")
			eventually(t, "both members joined", func() bool { return ts.members("room") == 2 })

			const n = 300
			payload := strings.Repeat("x", 16<<10)
			// Publish in lockstep with the fast member, so that only the slow
			// one falls behind.
			for seq := uint64(1); seq <= n; seq++ {
				fast.publish("room", fmt.Sprint(seq, payload))
				m := fast.expect(typeData, "")
				if *m.Seq != seq || !strings.HasPrefix(string(m.Data), fmt.Sprint(seq, "x")) {
					t.Fatalf("fast member got seq %d, want %d", *m.Seq, seq)
				}
			}
			eventually(t, "slow consumer disconnected", func() bool { return ts.metrics.disconnected("slow_consumer") == 1 })

			go slow.readAll()
			if err := slow.end(); errorName(err) != "resource_exhausted" || !strings.Contains(err.Error(), "slow consumer") {
				t.Fatalf("slow consumer ended with %v", err)
			}
			// Its membership is retained for when it comes back.
			if !ts.isShared() && ts.members("room") != 2 {
				t.Fatalf("room has %d members, want the fast one and the retained slow one", ts.members("room"))
			}
		})
	}
}

func TestOversizeMessageEndsStream(t *testing.T) {
	ts := startServer(t, Config{}, grpc.MaxRecvMsgSize(1024))
	big, other := ts.open(t, "big"), ts.open(t, "other")
	big.welcome()
	other.welcome()
	big.publish("room", strings.Repeat("x", 2048))
	if err := big.end(); errorName(err) != "ResourceExhausted" && errorName(err) != "resource_exhausted" {
		t.Fatalf("oversize sender ended with %v", err)
	}
	other.publish("room", "small")
	other.expect(typeControl, actJoined)
	if m := other.expect(typeData, ""); string(m.Data) != "small" {
		t.Fatalf("got %s", describe(m))
	}
	eventually(t, "oversize disconnect counted", func() bool { return ts.metrics.disconnected("resource_exhausted") == 1 })
}

func TestShutdownSendsGoawayFlushesAndEnds(t *testing.T) {
	ts := startServer(t, Config{})
	a, b := ts.open(t, "a"), ts.open(t, "b")
	a.welcome()
	b.welcome()
	a.join("room")
	b.join("room")
	a.publish("room", "before shutdown")
	a.expect(typeData, "")

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := ts.svc.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	for _, c := range []*testClient{a, b} {
		var sawGoaway, sawData bool
		for !sawGoaway || (c == b && !sawData) {
			m := c.next()
			switch {
			case m.Type == typeControl && str(m.Action) == actGoaway:
				if str(m.Reason) != "shutdown" {
					t.Fatalf("goaway reason %q", str(m.Reason))
				}
				sawGoaway = true
			case m.Type == typeData:
				sawData = true
			}
		}
		if err := c.end(); errorName(err) != "unavailable" {
			t.Fatalf("stream ended with %v, want unavailable", err)
		}
	}
	// New streams are refused.
	late := ts.open(t, "late")
	if err := late.end(); errorName(err) != "unavailable" {
		t.Fatalf("stream opened while draining ended with %v", err)
	}
}

func TestMaxStreamAgeSendsGoawayAndMembershipsSurvive(t *testing.T) {
	ts := startServer(t, Config{MaxStreamAge: 200 * time.Millisecond})
	x := ts.open(t, "x")
	x.welcome()
	x.join("room")
	x.publish("room", "one")
	x.expect(typeData, "")
	if g := x.expect(typeControl, actGoaway); str(g.Reason) != "max_stream_age" {
		t.Fatalf("goaway %s", describe(g))
	}
	if err := x.end(); errorName(err) != "resource_exhausted" || !strings.Contains(err.Error(), "maximum stream age") {
		t.Fatalf("old stream ended with %v", err)
	}
	ts.gone(t, "x")
	again := ts.open(t, "x")
	again.welcome()
	if j := again.expect(typeControl, actJoined); !*j.Recovered || *j.Seq != 1 {
		t.Fatalf("membership not restored: %s", describe(j))
	}
}
