// Regression tests for the delivery guarantees of SPEC §3 and §4 that
// ordinary timing used to break: bursts, overtaken positions, replacing a
// stuck stream, and churn against the session limit.

package streaming

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
)

// burst has each publisher send n small messages to session at full
// speed, without waiting for anything.
func burst(t *testing.T, pubs []*testClient, session string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	for _, p := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				msg := &streamsvc.DataMessage{Type: typeData, SessionID: &session, Data: []byte(fmt.Sprint(i))}
				if p.stream.Send(msg) != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
}

// expectAll reads session's deliveries 1..n in order, skipping controls.
func (c *testClient) expectAll(session string, n uint64) {
	c.t.Helper()
	for want := uint64(1); want <= n; {
		m := c.next()
		if m.Type != typeData {
			continue
		}
		if str(m.SessionID) != session || *m.Seq != want {
			c.t.Fatalf("got %s seq %d, want seq %d", describe(m), *m.Seq, want)
		}
		want++
	}
}

// A reader that keeps reading is never ended because publishers burst,
// publishers that are members included (SPEC §3, measured at defaults).
func TestBurstsDisconnectNobody(t *testing.T) {
	for _, tc := range []struct {
		name             string
		members, pubs, n int
	}{
		{"2 publishers × 300 into 3 members", 3, 2, 300},
		{"4 publishers × 2500 into 10 members", 10, 4, 2500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, Config{})
			members := make([]*testClient, tc.members)
			for i := range members {
				members[i] = ts.open(t, fmt.Sprint("m", i))
				members[i].welcome()
				members[i].join("room")
			}
			burst(t, members[:tc.pubs], "room", tc.n)
			total := uint64(tc.pubs * tc.n)
			for _, m := range members {
				m.expectAll("room", total)
			}
			for _, reason := range []string{"slow_consumer", "resource_exhausted"} {
				if n := ts.metrics.disconnected(reason); n != 0 {
					t.Fatalf("%d streams ended %s", n, reason)
				}
			}
			if live, _, _ := ts.metrics.counts(); live != tc.members*int(total) {
				t.Fatalf("%d live deliveries counted, want %d", live, tc.members*int(total))
			}
		})
	}
}

// A join at a position fixes it at once: a pause and resume, a second
// join or a reconnect that overtakes its replay continues from there.
func TestJoinPositionSurvivesWhatOvertakesIt(t *testing.T) {
	const size, at = 3000, 2990
	ts := startServer(t, Config{HistorySize: 5000})
	pub := ts.open(t, "pub")
	pub.welcome()
	pub.join("room")
	for range size / 100 {
		pub.publishN("room", 100)
	}
	pause := &streamsvc.DataMessage{Type: typeControl, Action: ptr(actPause), SessionID: ptr("room")}
	resume := &streamsvc.DataMessage{Type: typeControl, Action: ptr(actResume), SessionID: ptr("room")}

	for round := range 5 {
		t.Run(fmt.Sprint("pause and resume ", round), func(t *testing.T) {
			x := ts.open(t, fmt.Sprint("p", round))
			x.welcome()
			x.send(joinMsg("room", ptr(uint64(at)), nil))
			x.send(pause)
			x.send(resume)
			got := x.until(actResumed)
			got = append(got, x.sync()...)
			checkOnce(t, got, at+1, size, map[string]int{actJoined: 1, actPaused: 1, actResumed: 1})
		})
		t.Run(fmt.Sprint("second join ", round), func(t *testing.T) {
			x := ts.open(t, fmt.Sprint("j", round))
			x.welcome()
			x.send(joinMsg("room", ptr(uint64(0)), nil))
			x.send(joinMsg("room", ptr(uint64(at)), nil))
			var got []*streamsvc.DataMessage
			for joined := 0; joined < 2; {
				m := x.next()
				if str(m.Action) == actJoined {
					joined++
					got = nil // the second join starts over from its position
				}
				got = append(got, m)
			}
			got = append(got, x.sync()...)
			checkOnce(t, got, at+1, size, map[string]int{actJoined: 1})
		})
		t.Run(fmt.Sprint("reconnect ", round), func(t *testing.T) {
			// A longer replay, cut short once the join is served.
			const at = 1000
			id := fmt.Sprint("r", round)
			x := ts.open(t, id)
			x.welcome()
			x.send(joinMsg("room", ptr(uint64(at)), nil))
			x.expect(typeControl, actJoined)
			x.cancel()
			ts.gone(t, id)
			seen := map[uint64]bool{}
			for len(x.msgs) > 0 {
				if m := <-x.msgs; m.Type == typeData {
					seen[*m.Seq] = true
				}
			}
			again := ts.open(t, id)
			again.welcome()
			got := again.sync()
			for _, m := range got {
				if m.Type == typeData && (*m.Seq <= at || seen[*m.Seq]) {
					t.Fatalf("seq %d replayed after a join at %d", *m.Seq, at)
				}
			}
			if len(got) == 0 || str(got[0].Action) != actJoined || !*got[0].Recovered {
				t.Fatalf("restore began with %v", got)
			}
		})
	}
}

// until returns the messages up to and including the control action.
func (c *testClient) until(action string) []*streamsvc.DataMessage {
	c.t.Helper()
	var got []*streamsvc.DataMessage
	for {
		m := c.next()
		got = append(got, m)
		if m.Type == typeControl && str(m.Action) == action {
			return got
		}
	}
}

// checkOnce checks that got holds the deliveries from..to once each, in
// order, and the given number of each control action.
func checkOnce(t *testing.T, got []*streamsvc.DataMessage, from, to uint64, controls map[string]int) {
	t.Helper()
	want := from
	counted := map[string]int{}
	for _, m := range got {
		if m.Type == typeControl {
			counted[str(m.Action)]++
			continue
		}
		if *m.Seq != want {
			t.Fatalf("delivery seq %d, want %d", *m.Seq, want)
		}
		want++
	}
	if want != to+1 {
		t.Fatalf("deliveries up to %d, want up to %d", want-1, to)
	}
	for action, n := range controls {
		if counted[action] != n {
			t.Fatalf("%d %s, want %d (all: %v)", counted[action], action, n, counted)
		}
	}
}

// A client reconnecting while its old stream is stuck (its window full,
// the usual state after a network blip) gets its welcome at once, not
// after the send timeout, and its memberships right after.
func TestReplacingAStuckStreamIsPrompt(t *testing.T) {
	ts := startServer(t, Config{SendTimeout: time.Minute, QueueSize: 100000, MaxPendingBytes: 1 << 30})
	_, old, _ := stuckMember(t, ts, "x")
	start := time.Now()
	newer := ts.open(t, "x")
	newer.welcome()
	newer.expect(typeControl, actJoined)
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("the new stream waited %v for the stuck one", d)
	}
	select {
	case <-old.finished:
	default:
		t.Fatal("memberships taken over while the old stream still runs")
	}
}

// Short-lived clients that each join (and publish to) a fresh session and
// vanish never make the server refuse a live client: retained state makes
// room, oldest first, and clients without memberships are not kept.
func TestChurnNeverLocksOutLiveClients(t *testing.T) {
	notShared(t, "memberships are retained here, not in a shared engine")
	const limit, clients = 500, 1500
	ts := startServer(t, Config{MaxSessions: limit, MaxRetainedClients: 1000})
	cc := ts.dial(t)
	for i := range clients {
		c := ts.openOn(t, cc, "", true)
		c.welcome()
		session := fmt.Sprint("s", i)
		if j := c.join(session); str(j.SessionID) != session {
			t.Fatalf("client %d: %s", i, describe(j))
		}
		if i%2 == 0 {
			c.publish(session, "hello")
			c.expect(typeData, "")
		}
		c.cancel()
		<-c.done
	}
	eventually(t, "every stream gone", func() bool { return ts.svc.Connections() == 0 })
	if n := ts.svc.Sessions(); n > limit {
		t.Fatalf("%d sessions, limit %d", n, limit)
	}
	if n := ts.svc.RetainedClients(); n > limit {
		t.Fatalf("%d retained clients, but at most %d sessions hold them", n, limit)
	}
	if _, _, evicted := ts.metrics.counts(); evicted < clients-limit {
		t.Fatalf("%d evictions counted, want at least %d", evicted, clients-limit)
	}

	// A client without memberships is forgotten when its stream ends.
	c := ts.open(t, "passer-by")
	c.welcome()
	c.cancel()
	ts.gone(t, "passer-by")
	ts.svc.pool.mu.Lock()
	_, kept := ts.svc.pool.clients["passer-by"]
	ts.svc.pool.mu.Unlock()
	if kept {
		t.Fatal("a client without memberships was retained")
	}
}

// The retained-client bound forgets the oldest first.
func TestRetainedClientsAreBounded(t *testing.T) {
	notShared(t, "memberships are retained here, not in a shared engine")
	ts := startServer(t, Config{MaxRetainedClients: 3})
	for i := range 5 {
		c := ts.open(t, fmt.Sprint("c", i))
		c.welcome()
		c.join("room")
		c.cancel()
		ts.gone(t, fmt.Sprint("c", i))
	}
	if n := ts.svc.RetainedClients(); n != 3 {
		t.Fatalf("%d retained clients, want 3", n)
	}
	if n := ts.members("room"); n != 3 {
		t.Fatalf("room has %d members, want the 3 newest retained", n)
	}
	oldest := ts.open(t, "c0")
	oldest.welcome()
	newest := ts.open(t, "c4")
	newest.welcome()
	newest.expect(typeControl, actJoined)
	if got := oldest.sync(); len(got) != 0 {
		t.Fatalf("a forgotten client was restored: %s", describe(got[0]))
	}
}

// A client that stops reading is ended within the send timeout (and a
// tick), and as soon as more than the byte bound is pending for it once its
// send has been blocked for a housekeeping tick: it never holds more than
// the bound and what was published to it during that tick.
func TestStoppedReaderIsEndedWithinTheSendTimeout(t *testing.T) {
	const sendTimeout, maxPending = 2 * time.Second, 1 << 20
	ts := startServer(t, Config{SendTimeout: sendTimeout, MaxPendingBytes: maxPending, HeartbeatInterval: 200 * time.Millisecond})
	stuck := ts.openOn(t, ts.dialSmallWindow(t), "stuck", false)
	stuck.send(joinMsg("room", nil, nil))
	pub := ts.open(t, "pub")
	pub.welcome()
	pub.join("room")
	eventually(t, "both joined", func() bool { return ts.members("room") == 2 })
	sc := liveConn(ts, "stuck")
	payload := strings.Repeat("x", 4<<10)
	var blockedAt time.Time
	var peak int64
	for !sc.isClosing() {
		pub.publish("room", payload)
		pub.expect(typeData, "")
		peak = max(peak, sc.pendingBytes.Load())
		if blockedAt.IsZero() && sc.sends.Load()%2 == 1 {
			blockedAt = time.Now()
		}
		if !blockedAt.IsZero() && time.Since(blockedAt) > sendTimeout+5*time.Second {
			t.Fatalf("still not ended %v after its send blocked", time.Since(blockedAt))
		}
	}
	// Publishing for the send timeout would have left about ten times the
	// bound pending here.
	if peak > 4*maxPending {
		t.Fatalf("%d bytes pending, bound %d", peak, maxPending)
	}
	eventually(t, "slow consumer counted", func() bool { return ts.metrics.disconnected("slow_consumer") == 1 })
}

// A reader that keeps reading is not ended when a burst of larger messages
// leaves more than the byte bound pending for a while.
func TestBurstOverTheByteBoundDisconnectsNobody(t *testing.T) {
	ts := startServer(t, Config{MaxPendingBytes: 256 << 10})
	members := make([]*testClient, 5)
	for i := range members {
		members[i] = ts.open(t, fmt.Sprint("m", i))
		members[i].welcome()
		members[i].join("room")
	}
	payload := []byte(strings.Repeat("x", 16<<10))
	var wg sync.WaitGroup
	for _, p := range members[:4] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				if p.stream.Send(&streamsvc.DataMessage{Type: typeData, SessionID: ptr("room"), Data: payload}) != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, m := range members {
		m.expectAll("room", 400)
	}
	if n := ts.metrics.disconnected("slow_consumer"); n != 0 {
		t.Fatalf("%d readers ended as slow consumers", n)
	}
}

// Replays are counted as such, and only live deliveries feed the latency.
func TestReplaysAreNotLiveDeliveries(t *testing.T) {
	ts := startServer(t, Config{})
	pub := ts.open(t, "pub")
	pub.welcome()
	pub.join("room")
	pub.publishN("room", 50)
	x := ts.open(t, "x")
	x.welcome()
	x.send(joinMsg("room", ptr(uint64(0)), nil))
	x.expect(typeControl, actJoined)
	x.expectSeqs("room", 1, 50)
	pub.publishN("room", 1)
	x.expectSeqs("room", 51, 51)
	eventually(t, "counts", func() bool {
		live, replayed, _ := ts.metrics.counts()
		return live == 52 && replayed == 50 // the publisher's 51 and x's one live delivery
	})
}

// The backlog rule, tick by tick: a backlog over the queue size that
// drains is a burst being read, however long it takes; one that does not
// go down for a whole send timeout is a client slower than its sessions.
func TestBacklogRule(t *testing.T) {
	const queue, timeout = 10, time.Second
	svc := &Service{cfg: Config{QueueSize: queue, SendTimeout: timeout, HeartbeatInterval: time.Hour,
		MaxInactivity: time.Hour}.withDefaults(), metrics: nopMetrics{}}
	start := time.Now()
	for _, tc := range []struct {
		name    string
		pending []int64 // at ticks a quarter of the timeout apart
		slow    bool
	}{
		{"under the queue size", []int64{10, 10, 10, 10, 10, 10, 10}, false},
		{"a burst that drains", []int64{5000, 4000, 3000, 2500, 2000, 1500, 1000, 500, 100, 11, 5}, false},
		{"a burst that drains slowly", []int64{5000, 5000, 4999, 4999, 4998, 4998, 4997, 4997, 4996}, false},
		{"a backlog that stays", []int64{50, 50, 50, 50, 50}, true},
		{"a backlog that grows", []int64{20, 30, 40, 50, 60}, true},
		{"drains, then grows", []int64{100, 80, 60, 40, 20, 40, 60, 80, 100, 120}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newConn(svc, "c", nil, context.Background(), "", start)
			c.serving.Store(true)
			for i, p := range tc.pending {
				c.pending.Store(p)
				svc.check(c, start.Add(time.Duration(i)*timeout/4))
			}
			if c.isClosing() != tc.slow {
				t.Fatalf("ended %v, want %v", c.isClosing(), tc.slow)
			}
			if tc.slow && c.reason != reasonSlowConsumer {
				t.Fatalf("ended %v", c.reason)
			}
		})
	}
}
