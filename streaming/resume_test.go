package streaming

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
)

func joinMsg(session string, seq *uint64, epoch *string) *streamsvc.DataMessage {
	return &streamsvc.DataMessage{Type: typeControl, Action: ptr(actJoin), SessionID: &session, Seq: seq, Epoch: epoch}
}

// expectSeqs reads data messages of session and checks their seqs are
// from..to in order.
func (c *testClient) expectSeqs(session string, from, to uint64) {
	c.t.Helper()
	for seq := from; seq <= to; seq++ {
		m := c.expect(typeData, "")
		if str(m.SessionID) != session || *m.Seq != seq {
			c.t.Fatalf("got %s seq %d, want %s seq %d", describe(m), *m.Seq, session, seq)
		}
	}
}

// publishN publishes n messages to session and waits until the publisher
// itself received them, so they are all in history.
func (c *testClient) publishN(session string, n int) {
	c.t.Helper()
	for i := range n {
		c.publish(session, fmt.Sprint(i))
	}
	for range n {
		c.expect(typeData, "")
	}
}

// gone waits until client id has no live stream.
func (ts *testServer) gone(t *testing.T, id string) {
	t.Helper()
	eventually(t, id+" disconnected", func() bool {
		ts.svc.pool.mu.Lock()
		defer ts.svc.pool.mu.Unlock()
		cl := ts.svc.pool.clients[id]
		return cl == nil || cl.live == nil
	})
}

func TestReconnectRecoversMissedMessages(t *testing.T) {
	ts := startServer(t, Config{})
	pub := ts.open(t, "pub")
	pub.welcome()
	pub.join("room")

	x := ts.open(t, "x")
	x.welcome()
	x.join("room")
	pub.publishN("room", 5)
	x.expectSeqs("room", 1, 5)
	x.cancel() // abrupt: the client vanishes
	ts.gone(t, "x")

	pub.publishN("room", 10)
	x2 := ts.open(t, "x")
	x2.welcome()
	j := x2.expect(typeControl, actJoined)
	if str(j.SessionID) != "room" || j.Recovered == nil || !*j.Recovered || *j.Seq != 15 {
		t.Fatalf("restored membership: %s seq %d", describe(j), *j.Seq)
	}
	x2.expectSeqs("room", 6, 15)
	pub.publish("room", "live")
	x2.expectSeqs("room", 16, 16)
}

func TestReconnectBeyondHistoryIsNotRecovered(t *testing.T) {
	ts := startServer(t, Config{HistorySize: 5})
	pub := ts.open(t, "pub")
	pub.welcome()
	pub.join("room")
	x := ts.open(t, "x")
	x.welcome()
	x.join("room")
	x.cancel()
	ts.gone(t, "x")

	pub.publishN("room", 20)
	x2 := ts.open(t, "x")
	x2.welcome()
	if j := x2.expect(typeControl, actJoined); *j.Recovered || *j.Seq != 20 {
		t.Fatalf("joined %s recovered %v seq %d, want not recovered", describe(j), *j.Recovered, *j.Seq)
	}
	x2.expectSeqs("room", 16, 20) // what history still holds, then live
	pub.publish("room", "live")
	x2.expectSeqs("room", 21, 21)
}

func TestJoinWithSeqReplaysThenGoesLive(t *testing.T) {
	ts := startServer(t, Config{})
	pub := ts.open(t, "pub")
	pub.welcome()
	pub.join("room")
	pub.publishN("room", 10)

	for _, tc := range []struct {
		name      string
		seq       uint64
		epoch     func(string) *string
		recovered bool
		first     uint64
	}{
		{"from the start", 0, func(string) *string { return nil }, true, 1},
		{"from the middle", 6, func(string) *string { return nil }, true, 7},
		{"current epoch", 3, func(e string) *string { return &e }, true, 4},
		{"stale epoch", 3, func(string) *string { return ptr("0000") }, false, 11},
		{"caught up", 10, func(string) *string { return nil }, true, 11},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ts.open(t, "c-"+fmt.Sprint(tc.seq)+tc.name[:2])
			c.welcome()
			epoch := epochOf(t, ts, "room")
			c.send(joinMsg("room", &tc.seq, tc.epoch(epoch)))
			j := c.expect(typeControl, actJoined)
			if *j.Recovered != tc.recovered || *j.Epoch != epoch {
				t.Fatalf("joined recovered %v epoch %s, want %v %s", *j.Recovered, *j.Epoch, tc.recovered, epoch)
			}
			c.expectSeqs("room", tc.first, 10)
			if got := c.sync(); len(got) != 0 {
				t.Fatalf("unexpected %s", describe(got[0]))
			}
		})
	}
}

func epochOf(t *testing.T, ts *testServer, session string) string {
	t.Helper()
	s := ts.svc.sessions.get(session)
	if s == nil {
		t.Fatalf("no session %s", session)
	}
	return *s.epoch
}

func TestReplayLargerThanQueueIsStreamed(t *testing.T) {
	ts := startServer(t, Config{QueueSize: 8, HistorySize: 2000})
	pub := ts.open(t, "pub")
	pub.welcome()
	pub.join("room")
	const n = 500
	for i := range n {
		pub.publish("room", fmt.Sprint(i))
		pub.expect(typeData, "") // in step, so the publisher's own queue of 8 never overflows
	}
	c := ts.open(t, "late")
	c.welcome()
	c.send(joinMsg("room", ptr(uint64(0)), nil))
	if j := c.expect(typeControl, actJoined); !*j.Recovered {
		t.Fatal("not recovered")
	}
	c.expectSeqs("room", 1, n)
	if ts.metrics.disconnected("slow_consumer") != 0 {
		t.Fatal("a replay counted as slow consumption")
	}
}

func TestPauseThenResumeReplaysWhatWasMissed(t *testing.T) {
	ts := startServer(t, Config{})
	pub, x := ts.open(t, "pub"), ts.open(t, "x")
	pub.welcome()
	x.welcome()
	pub.join("room")
	x.join("room")
	pub.publishN("room", 2)
	x.expectSeqs("room", 1, 2)

	x.send(&streamsvc.DataMessage{Type: typeControl, Action: ptr(actPause), SessionID: ptr("room")})
	x.expect(typeControl, actPaused)
	pub.publishN("room", 5)
	if got := x.sync(); len(got) != 0 {
		t.Fatalf("paused member received %s", describe(got[0]))
	}
	x.send(&streamsvc.DataMessage{Type: typeControl, Action: ptr(actResume), SessionID: ptr("room")})
	if r := x.expect(typeControl, actResumed); !*r.Recovered || *r.Seq != 7 {
		t.Fatalf("resumed: recovered %v seq %d", *r.Recovered, *r.Seq)
	}
	x.expectSeqs("room", 3, 7)
	pub.publish("room", "live")
	x.expectSeqs("room", 8, 8)
}

func TestPausedMembershipStaysPausedAcrossReconnect(t *testing.T) {
	ts := startServer(t, Config{})
	pub, x := ts.open(t, "pub"), ts.open(t, "x")
	pub.welcome()
	x.welcome()
	pub.join("room")
	x.join("room")
	x.send(&streamsvc.DataMessage{Type: typeControl, Action: ptr(actPause), SessionID: ptr("room")})
	x.expect(typeControl, actPaused)
	x.cancel()
	ts.gone(t, "x")
	pub.publishN("room", 3)

	x2 := ts.open(t, "x")
	x2.welcome()
	x2.expect(typeControl, actJoined)
	x2.expect(typeControl, actPaused)
	if got := x2.sync(); len(got) != 0 {
		t.Fatalf("paused member received %s", describe(got[0]))
	}
	x2.send(&streamsvc.DataMessage{Type: typeControl, Action: ptr(actResume), SessionID: ptr("room")})
	x2.expect(typeControl, actResumed)
	x2.expectSeqs("room", 1, 3)
}

func TestSlowConsumerReconnectsAndRecoversEverything(t *testing.T) {
	ts := startServer(t, Config{QueueSize: 16, HistorySize: 1000, SendTimeout: 300 * time.Millisecond})
	slow := ts.openOn(t, ts.dialSmallWindow(t), "slow", false)
	slow.send(joinMsg("room", nil, nil))
	pub := ts.open(t, "pub")
	pub.welcome()
	pub.join("room")
	eventually(t, "slow joined", func() bool { return ts.members("room") == 2 })
	const n = 300
	payload := make([]byte, 8<<10)
	for seq := range n {
		pub.send(&streamsvc.DataMessage{Type: typeData, SessionID: ptr("room"), Data: payload})
		pub.expectSeqs("room", uint64(seq+1), uint64(seq+1))
	}
	eventually(t, "slow consumer disconnected", func() bool { return ts.metrics.disconnected("slow_consumer") == 1 })

	// What the first stream carried, then the second.
	go slow.readAll()
	slow.end()
	seen := map[uint64]int{}
	for len(slow.msgs) > 0 {
		if m := <-slow.msgs; m.Type == typeData {
			seen[*m.Seq]++
		}
	}
	again := ts.open(t, "slow")
	again.welcome()
	if j := again.expect(typeControl, actJoined); !*j.Recovered {
		t.Fatal("slow consumer's membership not recovered")
	}
	first := uint64(len(seen) + 1)
	again.expectSeqs("room", first, n)
	for seq := uint64(1); seq < first; seq++ {
		if seen[seq] != 1 {
			t.Fatalf("seq %d seen %d times on the first stream", seq, seen[seq])
		}
	}
}

// TestJoinWithSeqWhilePublishing races two publishers at full speed with a
// joiner replaying from the start: the joiner must see one gapless,
// duplicate-free sequence, the same one a live member sees.
func TestJoinWithSeqWhilePublishing(t *testing.T) {
	const afterJoin = 300 // messages each publisher sends once the joiner is answered
	for round := range 5 {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			ts := startServer(t, Config{QueueSize: 1 << 20, HistorySize: 1 << 20})
			a, b := ts.open(t, "a"), ts.open(t, "b")
			a.welcome()
			b.welcome()
			a.join("room")
			b.join("room")
			j := ts.open(t, "joiner")
			j.welcome()
			last := func() uint64 {
				s := ts.svc.sessions.get("room")
				s.mu.Lock()
				defer s.mu.Unlock()
				return s.hist.last()
			}
			var joined atomic.Bool
			joinedCh := make(chan struct{})
			var wg sync.WaitGroup
			var sent [2]int
			for i, p := range []*testClient{a, b} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for n := 0; n < afterJoin; {
						if joined.Load() {
							n++
						} else if ts.isShared() && sent[i] >= 1000 {
							// A shared engine accepts one publish of a
							// client per round trip: a backlog of them
							// would outlast the test's waits.
							<-joinedCh
						}
						if p.stream.Send(&streamsvc.DataMessage{Type: typeData, SessionID: ptr("room"), Data: []byte(fmt.Sprint(sent[i]))}) != nil {
							return
						}
						sent[i]++
					}
				}()
			}
			eventually(t, "publishing under way", func() bool { return last() >= 100 })
			j.send(joinMsg("room", ptr(uint64(0)), nil))
			r := j.expect(typeControl, actJoined)
			joined.Store(true)
			close(joinedCh)
			if !*r.Recovered {
				t.Fatal("not recovered")
			}
			wg.Wait()
			total := uint64(sent[0] + sent[1])
			t.Logf("joined at seq %d of %d", *r.Seq, total)
			if *r.Seq >= total {
				t.Fatalf("joined at seq %d of %d: publishing stopped before the join", *r.Seq, total)
			}
			eventually(t, "every message accepted", func() bool { return last() == total })

			want := make([]string, 0, total)
			for range total {
				m := a.expect(typeData, "")
				want = append(want, str(m.ClientID)+string(m.Data))
			}
			for seq := uint64(1); seq <= total; seq++ {
				m := j.expect(typeData, "")
				if *m.Seq != seq || str(m.ClientID)+string(m.Data) != want[seq-1] {
					t.Fatalf("joiner got seq %d %q, want seq %d %q", *m.Seq, m.Data, seq, want[seq-1])
				}
			}
			if got := j.sync(); len(got) != 0 {
				t.Fatalf("joiner got extra %s", describe(got[0]))
			}
		})
	}
}

func TestUnusedSessionIsRemovedAndNameStartsNewEpoch(t *testing.T) {
	ts := startServer(t, Config{HistoryTTL: 50 * time.Millisecond})
	x := ts.open(t, "x")
	x.welcome()
	first := x.join("room")
	x.publishN("room", 3)
	x.send(&streamsvc.DataMessage{Type: typeControl, Action: ptr(actLeave), SessionID: ptr("room")})
	x.expect(typeControl, actLeft)
	eventually(t, "session removed", func() bool { return ts.svc.Sessions() == 0 })

	second := x.join("room")
	// A shared engine keeps the epoch for a moment after the last member
	// here left (EngineBounds): poll.
	for deadline := time.Now().Add(waitTimeout); ts.isShared() && *second.Epoch == *first.Epoch && time.Now().Before(deadline); {
		x.send(&streamsvc.DataMessage{Type: typeControl, Action: ptr(actLeave), SessionID: ptr("room")})
		// The epoch may go while x is a member: the view restarts, and
		// its joined (recovered false) comes before the left.
		for m := x.next(); m.Type != typeControl || str(m.Action) != actLeft; m = x.next() {
		}
		eventually(t, "session removed", func() bool { return ts.svc.Sessions() == 0 })
		second = x.join("room")
	}
	if *second.Epoch == *first.Epoch || *second.Seq != 0 {
		t.Fatalf("reused name kept epoch %s seq %d", *second.Epoch, *second.Seq)
	}
	// A client coming back with the old epoch learns it lost the history.
	y := ts.open(t, "y")
	y.welcome()
	y.send(joinMsg("room", ptr(uint64(1)), first.Epoch))
	if j := y.expect(typeControl, actJoined); *j.Recovered {
		t.Fatal("old epoch recovered")
	}
}

func TestRetainedMembershipExpires(t *testing.T) {
	notShared(t, "memberships are retained here, not in a shared engine")
	ts := startServer(t, Config{SessionTTL: 50 * time.Millisecond, HistoryTTL: 50 * time.Millisecond})
	x := ts.open(t, "x")
	x.welcome()
	x.join("room")
	x.cancel()
	ts.gone(t, "x")
	eventually(t, "membership and session expired", func() bool { return ts.svc.Sessions() == 0 })
	x2 := ts.open(t, "x")
	x2.welcome()
	if got := x2.sync(); len(got) != 0 {
		t.Fatalf("expired membership restored: %s", describe(got[0]))
	}
}

func TestHistoryStaysBoundedUnderEndlessPublishing(t *testing.T) {
	const size = 64
	ts := startServer(t, Config{HistorySize: size})
	pub := ts.open(t, "pub")
	pub.welcome()
	pub.join("room")
	held := func() (n, capacity int) {
		s := ts.svc.sessions.get("room")
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.hist.n, len(s.hist.ring)
	}
	for round := range 20 {
		pub.publishN("room", 50)
		n, capacity := held()
		if want := min((round+1)*50, size); n != want || capacity > size {
			t.Fatalf("after %d messages history holds %d in a ring of %d, want %d in at most %d",
				(round+1)*50, n, capacity, want, size)
		}
	}
}
