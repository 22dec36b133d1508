package client

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	"github.com/streamhub/streamhub/streaming"
)

// joinRequest is a join the server read from a client.
type joinRequest struct {
	seq   *uint64
	epoch string
}

// epochServer is a server that keeps one session at a time (so a new one
// evicts an idle one, its history and its retained memberships with it),
// records the joins "sub" sends, and swallows the deliveries to "sub" of
// the message IDs in swallow: handed to the stream as far as the server
// knows, never received.
type epochServer struct {
	*testServer

	mu      sync.Mutex // guards the fields below
	joins   []joinRequest
	swallow map[string]bool
}

func startEpochServer(t *testing.T) *epochServer {
	t.Helper()
	es := &epochServer{swallow: map[string]bool{}}
	es.testServer = startServerWrapped(t, streaming.Config{MaxSessions: 1}, func(svc *streaming.Service) streamsvc.Service {
		return &hookedService{Service: svc,
			recv: func(client string, m *streamsvc.DataMessage) error {
				if client == "sub" && deref(m.Action) == "join" {
					es.mu.Lock()
					es.joins = append(es.joins, joinRequest{seq: m.Seq, epoch: deref(m.Epoch)})
					es.mu.Unlock()
				}
				return nil
			},
			send: func(client string, m *streamsvc.DataMessage) error {
				es.mu.Lock()
				defer es.mu.Unlock()
				if client == "sub" && m.Type == "data" && es.swallow[deref(m.ID)] {
					delete(es.swallow, deref(m.ID))
					return errSwallow
				}
				return nil
			},
		}
	})
	return es
}

// swallowNext has the next delivery of id to "sub" vanish.
func (es *epochServer) swallowNext(id string) {
	es.mu.Lock()
	es.swallow[id] = true
	es.mu.Unlock()
}

// joinsSince returns the joins "sub" sent after the first n.
func (es *epochServer) joinsSince(n int) []joinRequest {
	es.mu.Lock()
	defer es.mu.Unlock()
	return slices.Clone(es.joins[min(n, len(es.joins)):])
}

// recreate has the session "room" removed, with its history and the
// retained membership of the disconnected subscriber, and started again
// by pub: a session that must be made room for evicts the idle one, and
// leaving it, with no history, removes it too. It returns the seqs pub's
// msgIDs got in the new epoch.
func (es *epochServer) recreate(t *testing.T, pub *Client, msgIDs []string) []uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := pub.Leave(ctx, "room"); err != nil {
		t.Fatalf("pub Leave: %v", err)
	}
	svc := es.service()
	retained := svc.RetainedClients()
	join(t, pub, "evictor")
	if err := pub.Leave(ctx, "evictor"); err != nil {
		t.Fatalf("pub Leave evictor: %v", err)
	}
	eventually(t, "room evicted and evictor removed", func() bool { return svc.Sessions() == 0 }, nil)
	if n := svc.RetainedClients(); n >= retained {
		t.Fatalf("%d retained clients after the eviction, had %d: the subscriber's membership was kept", n, retained)
	}
	return publishAll(t, pub, "room", msgIDs)
}

// TestSessionRecreatedWhileDisconnected removes a session, its history and
// the subscriber's retained membership while the subscriber is cut off,
// and starts it again with fewer messages than the subscriber had seen.
// The subscriber rejoins from its old position; the server answers with
// the new epoch and Recovered: false. The client must then hand over the
// new epoch from seq 1 — seqs the old epoch had too, which are no
// duplicates — and say Recovered: false once. A publication the server
// accepted in the old epoch but never delivered back, and one made while
// cut off, are each delivered once in the new epoch. Then, cut off again,
// the client rejoins at its position in the new epoch, and finds there by
// ID a publication whose delivery it had missed.
func TestSessionRecreatedWhileDisconnected(t *testing.T) {
	es := startEpochServer(t)
	p := newProxy(t, es.addr)
	sub := dial(t, p.Addr(), WithClientID("sub"))
	events := record(t, sub)
	pub := dial(t, es.addr, WithClientID("pub"))
	pubEvents := record(t, pub)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()

	first := join(t, sub, "room")
	publishAll(t, pub, "room", ids("old", 0, 5))
	events.waitMessages(t, "room", 5)
	// Accepted in the old epoch (seq 6), never delivered back to sub.
	es.swallowNext("sent-lost")
	sentLost, err := sub.PublishAsync(ctx, "room", "sent-lost", []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	pubEvents.waitFor(t, "sent-lost accepted", func(ev Event) bool {
		m, ok := ev.(*Message)
		return ok && m.ID == "sent-lost" && m.Epoch == first.Epoch
	})

	joinsBefore := len(es.joinsSince(0))
	disconnect(t, es.testServer, p)
	// Made once the client knows it is cut off: held, never sent.
	eventually(t, "the client saw the stream go", func() bool { return events.count(isState(StateReconnecting)) == 1 }, nil)
	held, err := sub.PublishAsync(ctx, "room", "held", []byte("y"))
	if err != nil {
		t.Fatal(err)
	}
	newSeqs := es.recreate(t, pub, ids("new", 0, 3))
	if !slices.Equal(newSeqs, []uint64{1, 2, 3}) {
		t.Fatalf("the recreated session gave seqs %v, want 1, 2, 3", newSeqs)
	}
	p.Refuse(false)

	for _, pb := range []*Publication{sentLost, held} {
		if _, err := pb.Wait(ctx); err != nil {
			t.Fatalf("publication %s: %v", pb.ID(), err)
		}
	}
	want := append(append(ids("old", 0, 5), ids("new", 0, 3)...), "sent-lost", "held")
	msgs := events.waitMessages(t, "room", len(want))
	checkExactlyOnce(t, msgs, want)
	rejoin := events.waitFor(t, "the rejoin", isJoined("room", func(j *Joined) bool { return j.Rejoin })).(*Joined)
	if rejoin.Recovered || rejoin.Epoch == first.Epoch || rejoin.Epoch == "" {
		t.Errorf("rejoin = %+v, want Recovered false in a new epoch (the old one was %s)", *rejoin, first.Epoch)
	}
	for i, m := range msgs[5:] {
		if m.Epoch != rejoin.Epoch || m.Seq != uint64(i+1) {
			t.Errorf("message %s: seq %d of epoch %s, want seq %d of %s", m.ID, m.Seq, m.Epoch, i+1, rejoin.Epoch)
		}
	}
	if n := events.count(isJoined("room", func(j *Joined) bool { return !j.Recovered })); n != 1 {
		t.Errorf("%d Joined events with Recovered false, want 1:\n%s", n, describeEvents(events.all()))
	}
	if seq, epoch, ok := sub.Position("room"); !ok || seq != 5 || epoch != rejoin.Epoch {
		t.Errorf("Position = %d, %q, %v; want 5 in %s", seq, epoch, ok, rejoin.Epoch)
	}
	// The rejoin asked from the old position; the server's answer moved
	// the client to the start of the new epoch.
	joins := es.joinsSince(joinsBefore)
	if len(joins) < 2 || deref(joins[0].seq) != 5 || joins[0].epoch != first.Epoch ||
		joins[1].seq == nil || *joins[1].seq != 0 || joins[1].epoch != rejoin.Epoch {
		t.Errorf("joins after the reconnect: %s; want seq 5 of %s, then seq 0 of %s", describeJoins(joins), first.Epoch, rejoin.Epoch)
	}
	if st := sub.Stats(); st.Resent != 1 || st.FoundInReplay != 0 {
		t.Errorf("stats %+v: want sent-lost sent again, nothing found in the replay", st)
	}

	// Accepted in the new epoch (seq 6), never delivered back; the stream
	// is lost before the client notices.
	es.swallowNext("found")
	found, err := sub.PublishAsync(ctx, "room", "found", []byte("z"))
	if err != nil {
		t.Fatal(err)
	}
	pubEvents.waitFor(t, "found accepted", func(ev Event) bool {
		m, ok := ev.(*Message)
		return ok && m.ID == "found"
	})
	joinsBefore = len(es.joinsSince(0))
	connects := sub.Stats().Connects
	disconnect(t, es.testServer, p)
	p.Refuse(false)
	eventually(t, "the second reconnect", func() bool { return sub.Stats().Connects > connects }, nil)
	if seq, err := found.Wait(ctx); err != nil || seq != 6 {
		t.Fatalf("publication found = %d, %v; want seq 6", seq, err)
	}
	checkExactlyOnce(t, events.waitMessages(t, "room", len(want)+1), append(want, "found"))
	if joins := es.joinsSince(joinsBefore); len(joins) != 1 || deref(joins[0].seq) != 5 || joins[0].epoch != rejoin.Epoch {
		t.Errorf("joins after the second reconnect: %s; want one, seq 5 of %s", describeJoins(joins), rejoin.Epoch)
	}
	last := events.waitFor(t, "the second rejoin", isJoined("room", func(j *Joined) bool { return j.Rejoin && j.Recovered })).(*Joined)
	if last.Epoch != rejoin.Epoch {
		t.Errorf("second rejoin = %+v, want epoch %s", *last, rejoin.Epoch)
	}
	if st := sub.Stats(); st.Resent != 1 || st.FoundInReplay != 1 {
		t.Errorf("stats %+v: want found in the replay, not sent again", st)
	}
}

// describeJoins renders join requests for a failure message.
func describeJoins(joins []joinRequest) string {
	s := ""
	for _, j := range joins {
		if j.seq == nil {
			s += "[live] "
			continue
		}
		s += fmt.Sprintf("[seq %d epoch %s] ", *j.seq, j.epoch)
	}
	return s
}
