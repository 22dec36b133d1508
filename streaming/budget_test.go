package streaming

import (
	"fmt"
	"strings"
	"testing"
	"time"

	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
)

// A hog filling many sessions with large messages evicts its own history,
// not a quiet session's, and the budget holds throughout.
func TestBudgetEvictsTheLargestSessionsFirst(t *testing.T) {
	const limit, size, sessions, messages = 8 << 20, 64 << 10, 20, 400
	ts := startServer(t, Config{MemoryBudget: limit})
	quiet := ts.open(t, "quiet")
	quiet.welcome()
	quiet.join("quiet")
	quiet.publishN("quiet", 100)
	quiet.cancel()

	hog := ts.open(t, "hog")
	hog.welcome()
	payload := strings.Repeat("x", size)
	for i := range messages {
		session := fmt.Sprint("hog", i%sessions)
		hog.send(&streamsvc.DataMessage{Type: typeData, SessionID: &session, Data: []byte(payload), ID: ptr(fmt.Sprint(i))})
		for m := hog.next(); m.Type != typeData; m = hog.next() { // paced: it reads its own echoes
			if str(m.Action) != actJoined {
				t.Fatalf("hog got %s", describe(m))
			}
		}
		// At most the message just accepted over: it is counted before it
		// is sent, and the eviction left a slack.
		if _, used := ts.svc.Memory(); used > limit+2*size {
			t.Fatalf("after %d messages %d bytes used, budget %d", i+1, used, limit)
		}
	}
	if n := ts.metrics.historyEvictions(); n == 0 {
		t.Fatal("no history evicted")
	}
	x := ts.open(t, "reader")
	x.welcome()
	x.send(joinMsg("quiet", ptr(uint64(0)), nil))
	if j := x.expect(typeControl, actJoined); !*j.Recovered {
		t.Fatal("the quiet session's history was evicted")
	}
	x.expectSeqs("quiet", 1, 100)
}

// Pending deliveries of clients that do not read count against the budget;
// when they are all that is left, publishes are refused with their id,
// and they go through again once the slow consumers are gone.
func TestBudgetRefusesWhatOnlyPendingBytesHold(t *testing.T) {
	const limit, size = 2 << 20, 64 << 10
	ts := startServer(t, Config{MemoryBudget: limit, MaxPendingBytes: 1 << 30, SendTimeout: time.Hour, QueueSize: 100000})
	var stuck []*testClient
	for i := range 3 {
		c := ts.openOn(t, ts.dialSmallWindow(t), fmt.Sprint("stuck", i), false)
		c.send(joinMsg("room", nil, nil))
		stuck = append(stuck, c)
	}
	eventually(t, "stuck clients joined", func() bool { return ts.members("room") == 3 })
	pub := ts.open(t, "pub")
	pub.welcome()
	pub.join("room")
	payload := []byte(strings.Repeat("x", size))
	var refused *streamsvc.DataMessage
	for i := 0; refused == nil; i++ {
		if i > 4*limit/size {
			t.Fatal("never refused")
		}
		pub.send(&streamsvc.DataMessage{Type: typeData, SessionID: ptr("room"), Data: payload, ID: ptr(fmt.Sprint("m", i))})
		switch m := pub.next(); {
		case m.Type == typeData:
		case str(m.Action) == actError && strings.Contains(str(m.Reason), "memory budget"):
			if str(m.ID) != fmt.Sprint("m", i) {
				t.Fatalf("refusal for id %s, want m%d", str(m.ID), i)
			}
			refused = m
		default:
			t.Fatalf("got %s", describe(m))
		}
	}
	if _, used := ts.svc.Memory(); used > limit+4*size {
		t.Fatalf("%d bytes used, budget %d", used, limit)
	}
	pub.sync() // the server serves on

	for _, c := range stuck {
		c.cancel()
	}
	eventually(t, "slow consumers gone", func() bool { return ts.svc.Connections() == 1 })
	pub.send(&streamsvc.DataMessage{Type: typeData, SessionID: ptr("room"), Data: payload, ID: ptr("after")})
	if m := pub.next(); m.Type != typeData || str(m.ID) != "after" {
		t.Fatalf("after the slow consumers left: %s", describe(m))
	}
}

// A publish that eviction could never make room for is refused without
// evicting anyone's history.
func TestBudgetRefusesWhatEvictionCannotFitWithoutEvicting(t *testing.T) {
	const limit = 2 << 20
	ts := startServer(t, Config{MemoryBudget: limit})
	quiet := ts.open(t, "quiet")
	quiet.welcome()
	quiet.join("quiet")
	for i := range 100 {
		quiet.send(&streamsvc.DataMessage{Type: typeData, SessionID: ptr("quiet"), Data: []byte(strings.Repeat("q", 10<<10)), ID: ptr(fmt.Sprint(i))})
		quiet.expect(typeData, "")
	}
	var crowd []*testClient
	for i := range 41 {
		c := ts.open(t, fmt.Sprint("c", i))
		c.welcome()
		c.join("crowd")
		crowd = append(crowd, c)
	}
	// Counted once in history and once for each of 42 members: more than
	// the whole budget.
	crowd[0].send(&streamsvc.DataMessage{Type: typeData, SessionID: ptr("crowd"), Data: make([]byte, 64<<10), ID: ptr("big")})
	if m := crowd[0].expect(typeControl, actError); !strings.Contains(str(m.Reason), "memory budget") || str(m.ID) != "big" {
		t.Fatalf("got %s", describe(m))
	}
	if n := ts.metrics.historyEvictions(); n != 0 {
		t.Fatalf("%d entries evicted for a publish that could not fit", n)
	}
	x := ts.open(t, "reader")
	x.welcome()
	x.send(joinMsg("quiet", ptr(uint64(0)), nil))
	if j := x.expect(typeControl, actJoined); !*j.Recovered {
		t.Fatal("the quiet session's history was evicted")
	}
	x.expectSeqs("quiet", 1, 100)
}
