// Regression tests for the races and edge cases reviews of this package found.

package streaming

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"weak"

	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
)

// liveConn is the stream holding id's slot.
func liveConn(ts *testServer, id string) *conn {
	ts.svc.pool.mu.Lock()
	defer ts.svc.pool.mu.Unlock()
	if cl := ts.svc.pool.clients[id]; cl != nil {
		return cl.live
	}
	return nil
}

// stuckMember opens client id on a small window, joins room and has pub
// publish until the server's send to id blocks.
func stuckMember(t *testing.T, ts *testServer, id string) (*testClient, *conn, *testClient) {
	t.Helper()
	stuck := ts.openOn(t, ts.dialSmallWindow(t), id, false)
	stuck.send(joinMsg("room", nil, nil))
	pub := ts.open(t, "pub")
	pub.welcome()
	pub.join("room")
	eventually(t, "both joined", func() bool { return ts.members("room") == 2 })
	sc := liveConn(ts, id)
	payload := strings.Repeat("x", 16<<10)
	for i := 0; i < 40 && sc.sends.Load()%2 == 0; i++ {
		pub.publish("room", fmt.Sprint(i, payload))
		pub.expect(typeData, "")
	}
	eventually(t, id+" blocked in a send", func() bool { return sc.sends.Load()%2 == 1 })
	return stuck, sc, pub
}

// A replacing stream does not wait forever for an older one stuck in a
// send, gets its welcome first although heartbeats were due while it
// waited, and Shutdown keeps its deadline.
func TestReplacingAStuckStream(t *testing.T) {
	ts := startServer(t, Config{SendTimeout: 300 * time.Millisecond, HeartbeatInterval: 20 * time.Millisecond,
		QueueSize: 100000, MaxPendingBytes: 1 << 30})
	_, old, _ := stuckMember(t, ts, "x")
	newer := ts.open(t, "x")
	if first := newer.next(); first.Type != typeControl || str(first.Action) != actWelcome {
		t.Fatalf("first message %s, want welcome", describe(first))
	}
	if j := newer.expect(typeControl, actJoined); str(j.SessionID) != "room" {
		t.Fatalf("got %s", describe(j))
	}
	select {
	case <-old.finished:
	default:
		t.Fatal("new stream served while the old one still runs")
	}
}

func TestShutdownKeepsItsDeadlineWhileAStreamIsReplaced(t *testing.T) {
	ts := startServer(t, Config{SendTimeout: time.Hour, QueueSize: 100000, MaxPendingBytes: 1 << 30})
	_, old, _ := stuckMember(t, ts, "x")
	ts.open(t, "x") // waits for old, which no send timeout will end soon
	eventually(t, "replacement registered", func() bool { return liveConn(ts, "x") != old })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = ts.svc.Shutdown(ctx)
	}()
	select {
	case <-done:
	case <-time.After(waitTimeout):
		t.Fatal("Shutdown did not return")
	}
}

// A half-closing client gets the replay it asked for, and its own
// message, before the stream ends OK.
func TestHalfCloseCompletesReplays(t *testing.T) {
	ts := startServer(t, Config{})
	pub := ts.open(t, "pub")
	pub.welcome()
	pub.join("room")
	pub.publishN("room", 200)
	for round := range 10 {
		c := ts.open(t, fmt.Sprint("c", round))
		c.send(joinMsg("room", ptr(uint64(0)), nil))
		c.send(&streamsvc.DataMessage{Type: typeData, SessionID: ptr("room"), Data: []byte("mine")})
		if err := c.stream.Close(); err != nil {
			t.Fatal(err)
		}
		if err := c.end(); err != nil {
			t.Fatalf("ended with %v", err)
		}
		var seqs []uint64
		for len(c.msgs) > 0 {
			if m := <-c.msgs; m.Type == typeData {
				seqs = append(seqs, *m.Seq)
			}
		}
		want := uint64(201 + round)
		if uint64(len(seqs)) != want || seqs[0] != 1 || seqs[len(seqs)-1] != want {
			t.Fatalf("round %d: %d deliveries (%v…), want 1..%d", round, len(seqs), seqs[:min(len(seqs), 3)], want)
		}
	}
}

// An expiring client object must not remove the membership its successor
// (same ID) just made.
func TestExpiryLeavesANewerMembershipAlone(t *testing.T) {
	notShared(t, "memberships are retained here, not in a shared engine")
	ts := startServer(t, Config{})
	x := ts.open(t, "x")
	x.welcome()
	x.join("room")
	x.cancel()
	ts.gone(t, "x")
	expired := ts.svc.pool.expire(time.Now().Add(time.Hour)) // what the housekeeper does first
	if len(expired) != 1 || expired[0].id != "x" {
		t.Fatalf("expired %v", expired)
	}

	x2 := ts.open(t, "x")
	x2.welcome()
	x2.join("room")
	expired[0].forget(ts.svc.sessions) // what it does next

	pub := ts.open(t, "pub")
	pub.welcome()
	pub.publish("room", "hi")
	if m := x2.expect(typeData, ""); string(m.Data) != "hi" {
		t.Fatalf("got %s", describe(m))
	}
}

// A join with a seq beyond the session's last must not make a later
// restore skip what was published in between.
func TestJoinBeyondLastThenReconnect(t *testing.T) {
	ts := startServer(t, Config{})
	pub := ts.open(t, "pub")
	pub.welcome()
	pub.join("room")
	pub.publishN("room", 5)
	x := ts.open(t, "x")
	x.welcome()
	x.send(joinMsg("room", ptr(uint64(100)), nil))
	x.expect(typeControl, actJoined)
	x.sync()
	x.cancel()
	ts.gone(t, "x")
	pub.publishN("room", 5)
	x2 := ts.open(t, "x")
	x2.welcome()
	if j := x2.expect(typeControl, actJoined); !*j.Recovered {
		t.Fatal("not recovered")
	}
	x2.expectSeqs("room", 6, 10)
}

func TestPauseDuringReplayResumesWhereItStopped(t *testing.T) {
	ts := startServer(t, Config{HistorySize: 5000})
	pub := ts.open(t, "pub")
	pub.welcome()
	pub.join("room")
	for range 20 {
		pub.publishN("room", 100) // in steps its queue holds
	}
	for round := range 5 {
		x := ts.open(t, fmt.Sprint("x", round))
		x.welcome()
		x.send(joinMsg("room", ptr(uint64(0)), nil))
		x.send(&streamsvc.DataMessage{Type: typeControl, Action: ptr(actPause), SessionID: ptr("room")})
		x.expect(typeControl, actJoined)
		var last uint64
		for m := x.next(); str(m.Action) != actPaused; m = x.next() {
			if m.Type != typeData || *m.Seq != last+1 {
				t.Fatalf("got %s seq %v after %d", describe(m), m.Seq, last)
			}
			last = *m.Seq
		}
		if got := x.sync(); len(got) != 0 {
			t.Fatalf("after paused: %s", describe(got[0]))
		}
		x.send(&streamsvc.DataMessage{Type: typeControl, Action: ptr(actResume), SessionID: ptr("room")})
		x.expect(typeControl, actResumed)
		x.expectSeqs("room", last+1, 2000)
		if got := x.sync(); len(got) != 0 {
			t.Fatalf("extra: %s", describe(got[0]))
		}
	}
}

// A client with more memberships than its queue holds can still come back.
func TestRestoreDoesNotOverflowTheQueue(t *testing.T) {
	ts := startServer(t, Config{QueueSize: 8})
	x := ts.open(t, "x")
	x.welcome()
	for i := range 10 {
		x.join(fmt.Sprint("s", i))
	}
	x.cancel()
	ts.gone(t, "x")
	x2 := ts.open(t, "x")
	x2.welcome()
	for range 10 {
		x2.expect(typeControl, actJoined)
	}
}

// History entries must not keep their publisher's connection alive.
func TestEntriesDoNotPinTheirPublishersConnection(t *testing.T) {
	ts := startServer(t, Config{})
	pub := ts.open(t, "pub")
	pub.welcome()
	pub.join("room")
	pub.publishN("room", 1)
	wp := weak.Make(liveConn(ts, "pub"))
	pub.cancel()
	ts.gone(t, "pub")
	<-pub.done
	eventually(t, "publisher's connection collected", func() bool {
		runtime.GC()
		return wp.Value() == nil
	})
}

// Error replies are bounded, and a client that sends huge invalid messages
// and never reads is pushed back, then ended as a slow consumer.
func TestErrorRepliesAreBounded(t *testing.T) {
	ts := startServer(t, Config{QueueSize: 16, SendTimeout: 300 * time.Millisecond})
	a := ts.open(t, "a")
	a.welcome()
	a.send(&streamsvc.DataMessage{Type: typeData, SessionID: ptr(strings.Repeat("x", 1<<20))})
	if e := a.expect(typeControl, actError); len(str(e.Reason)) > maxReasonLen+4 {
		t.Fatalf("reason of %d bytes", len(str(e.Reason)))
	}

	stuck := ts.openOn(t, ts.dialSmallWindow(t), "stuck", false)
	bad := &streamsvc.DataMessage{Type: typeData, SessionID: ptr(strings.Repeat("x", 1<<10))}
	sending := make(chan struct{})
	go func() {
		// Once the server ends the stream it stops reading, and the end may
		// never reach a client that does not read: Send can block until
		// the client cancels, below.
		defer close(sending)
		for range 2000 {
			if stuck.stream.Send(bad) != nil {
				return
			}
		}
	}()
	eventually(t, "slow consumer", func() bool { return ts.metrics.disconnected("slow_consumer") == 1 })
	stuck.cancel()
	<-sending
}

// lateOpener holds the first stream it serves back until the client has
// cancelled it and released is closed, as a busy server may: the stream's
// handler only gets to run after the client gave up on it and opened a
// newer one.
type lateOpener struct {
	*Service
	calls    atomic.Int32
	released chan struct{}
	served   chan struct{} // closed when the first stream's handler returned
}

func (l *lateOpener) StreamData(ctx context.Context, p *streamsvc.StreamDataPayload, stream streamsvc.StreamDataServerStream) error {
	if l.calls.Add(1) > 1 {
		return l.Service.StreamData(ctx, p, stream)
	}
	defer close(l.served)
	<-ctx.Done()
	<-l.released
	return l.Service.StreamData(ctx, p, stream)
}

// A stream the client cancelled before the server got to it never
// replaces the newer stream the client opened meanwhile (found by
// TestModel: the client's live stream got goaway replaced and ended, in
// favour of one it had abandoned).
func TestCancelledStreamDoesNotReplaceANewerOne(t *testing.T) {
	late := &lateOpener{released: make(chan struct{}), served: make(chan struct{})}
	ts := startServerWrapped(t, Config{}, func(s *Service) streamsvc.Service {
		late.Service = s
		return late
	})
	abandoned := ts.open(t, "x")
	eventually(t, "the first stream's handler called", func() bool { return late.calls.Load() == 1 })
	abandoned.cancel()
	newer := ts.open(t, "x")
	newer.welcome()
	newer.join("room")
	close(late.released)
	select {
	case <-late.served:
	case <-time.After(waitTimeout):
		t.Fatal("the abandoned stream's handler did not return")
	}
	if got := newer.sync(); len(got) != 0 {
		t.Fatalf("the live stream got %s", describe(got[0]))
	}
	pub := ts.open(t, "pub")
	pub.welcome()
	pub.join("room")
	pub.publish("room", "still here")
	if m := newer.expect(typeData, ""); string(m.Data) != "still here" {
		t.Fatalf("got %s", describe(m))
	}
}

// A membership change the server served but could not queue yet, because
// the stream's queue was full, is not lost when the stream ends: a join
// keeps the position it fixed, so the reconnect's restore replays nothing
// at or before it (SPEC §3), and a leave lets go of the membership.
func TestChangeWaitingForRoomSurvivesTheStreamsEnd(t *testing.T) {
	const queue, at = 4, 10
	for _, tc := range []struct {
		name   string
		change *streamsvc.DataMessage
		served func(ts *testServer) bool
		check  func(t *testing.T, ts *testServer)
	}{
		{"join", joinMsg("room", ptr(uint64(at)), nil),
			func(ts *testServer) bool { return ts.members("room") == 2 },
			func(t *testing.T, ts *testServer) {
				x := ts.open(t, "x")
				x.welcome()
				for _, m := range x.sync() {
					if m.Type == typeData && str(m.SessionID) == "room" && *m.Seq <= at {
						t.Fatalf("the restore replayed seq %d of room, joined at %d", *m.Seq, at)
					}
				}
			}},
		{"leave", &streamsvc.DataMessage{Type: typeControl, Action: ptr(actLeave), SessionID: ptr("room")},
			func(ts *testServer) bool { return !isMember(ts, "x", "room") },
			func(t *testing.T, ts *testServer) {
				if n := ts.members("room"); n != 1 {
					t.Fatalf("room has %d members after x left, want 1", n)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, Config{QueueSize: queue, SendTimeout: time.Minute, MaxPendingBytes: 1 << 30})
			pub := ts.open(t, "pub")
			pub.welcome()
			pub.join("room")
			pub.join("big")
			pub.publishN("room", at)
			// x does not read, so its sender blocks in a send of big, and
			// then its queue fills with replies.
			x := ts.openOn(t, ts.dialSmallWindow(t), "x", false)
			x.send(joinMsg("big", nil, nil))
			if tc.name == "leave" {
				x.send(joinMsg("room", nil, nil))
			}
			eventually(t, "x joined", func() bool { return ts.members("big") == 2 })
			payload := strings.Repeat("x", 16<<10)
			for range 40 { // far beyond x's 64 KiB window
				pub.publish("big", payload)
				pub.expect(typeData, "")
			}
			xc := liveConn(ts, "x")
			for range queue {
				x.send(&streamsvc.DataMessage{Type: typeHealthCheck})
			}
			eventually(t, "x's queue full", func() bool {
				xc.q.mu.Lock()
				defer xc.q.mu.Unlock()
				return len(xc.q.items) == queue
			})
			x.send(tc.change)
			eventually(t, "the change served", func() bool { return tc.served(ts) })
			x.cancel()
			ts.gone(t, "x")
			tc.check(t, ts)
		})
	}
}

// isMember says whether client id has a membership of session.
func isMember(ts *testServer, id, session string) bool {
	ts.svc.pool.mu.Lock()
	cl := ts.svc.pool.clients[id]
	ts.svc.pool.mu.Unlock()
	if cl == nil {
		return false
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.members[session] != nil
}
