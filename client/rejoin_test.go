package client

import (
	"context"
	"sync"
	"testing"
	"time"

	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	"github.com/streamhub/streamhub/internal/faultproxy"
	"github.com/streamhub/streamhub/streaming"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestRestoreAheadOfClient has the server hand a message to the stream
// that never reaches the client, then lose the stream: the membership the
// server restores on the reconnect replays from after that message. The
// client must not take that replay's messages before the one it missed:
// it waits for its own rejoin's replay, and sees each once, in order, with
// one Joined per join.
func TestRestoreAheadOfClient(t *testing.T) {
	var mu sync.Mutex
	phase := 0 // 0: swallow "lost" to sub; 1: fail the send of "b" to sub; 2: leave it be
	ts := startServerWrapped(t, streaming.Config{}, func(svc *streaming.Service) streamsvc.Service {
		return &hookedService{Service: svc, send: func(client string, m *streamsvc.DataMessage) error {
			if client != "sub" || m.Type != "data" {
				return nil
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case phase == 0 && deref(m.ID) == "lost":
				phase = 1
				return errSwallow // counts as handed to the stream, never arrives
			case phase == 1 && deref(m.ID) == "b":
				phase = 2
				return status.Error(codes.Unavailable, "connection lost")
			}
			return nil
		}}
	})
	sub := dial(t, ts.addr, WithClientID("sub"))
	events := record(t, sub)
	pub := dial(t, ts.addr, WithClientID("pub"))
	record(t, pub)
	join(t, sub, "room")
	publishAll(t, pub, "room", []string{"a", "lost", "b", "c"})

	checkExactlyOnce(t, events.waitMessages(t, "room", 4), []string{"a", "lost", "b", "c"})
	if n := events.count(isJoined("room", nil)); n != 2 {
		t.Errorf("%d Joined events, want 2 (the join and one rejoin):\n%s", n, describeEvents(events.all()))
	}
	if st := sub.Stats(); st.Connects != 2 {
		t.Errorf("stats %+v, want a second stream", st)
	}
}

// TestLeaveWhileDisconnected leaves a session while the client cannot
// connect: the server restores the membership on the reconnect, and the
// client leaves it instead of handing its messages over.
func TestLeaveWhileDisconnected(t *testing.T) {
	var mu sync.Mutex
	leaves := 0
	ts := startServerWrapped(t, streaming.Config{}, func(svc *streaming.Service) streamsvc.Service {
		return &hookedService{Service: svc, recv: func(client string, m *streamsvc.DataMessage) error {
			if client == "sub" && deref(m.Action) == "leave" && deref(m.SessionID) == "room" {
				mu.Lock()
				leaves++
				mu.Unlock()
			}
			return nil
		}}
	})
	p := newProxy(t, ts.addr)
	sub := dial(t, p.Addr(), WithClientID("sub"))
	events := record(t, sub)
	pub := dial(t, ts.addr, WithClientID("pub"))
	record(t, pub)
	join(t, sub, "room")
	join(t, sub, "other")

	disconnect(t, ts, p)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := sub.Leave(ctx, "room"); err != nil {
		t.Fatalf("Leave while disconnected: %v", err)
	}
	publishAll(t, pub, "room", []string{"unwanted"})
	p.Refuse(false)
	eventually(t, "the restored membership left", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return leaves == 1
	}, func() string { return describeEvents(events.all()) })
	publishAll(t, pub, "other", []string{"wanted"})
	events.waitMessages(t, "other", 1)
	if msgs := events.messages("room"); len(msgs) != 0 {
		t.Errorf("messages of a left session: %s", describeEvents(events.all()))
	}
}

// TestPauseWhileDisconnected pauses a session while the client cannot
// connect: nothing of it is handed over after the reconnect, and Resume
// replays what was published meanwhile, once.
func TestPauseWhileDisconnected(t *testing.T) {
	ts := startServer(t, streaming.Config{})
	p := newProxy(t, ts.addr)
	sub := dial(t, p.Addr(), WithClientID("sub"))
	events := record(t, sub)
	pub := dial(t, ts.addr, WithClientID("pub"))
	record(t, pub)
	join(t, sub, "room")
	publishAll(t, pub, "room", []string{"a"})
	events.waitMessages(t, "room", 1)

	disconnect(t, ts, p)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := sub.Pause(ctx, "room"); err != nil {
		t.Fatalf("Pause while disconnected: %v", err)
	}
	publishAll(t, pub, "room", ids("m", 0, 5))
	connects := sub.Stats().Connects
	p.Refuse(false)
	eventually(t, "the reconnect", func() bool { return sub.Stats().Connects > connects }, nil)
	publishAll(t, pub, "room", []string{"b"})
	// A message of another session, published later on the same stream,
	// shows the paused one's would have arrived by now.
	publishAll(t, pub, "other", []string{"x"})
	join(t, sub, "other", From(0, ""))
	events.waitMessages(t, "other", 1)
	if n := len(events.messages("room")); n != 1 {
		t.Fatalf("%d messages of the paused session, want 1:\n%s", n, describeEvents(events.all()))
	}
	j, err := sub.Resume(ctx, "room")
	if err != nil || !j.Recovered || !j.Resume {
		t.Fatalf("Resume = %+v, %v", j, err)
	}
	checkExactlyOnce(t, events.waitMessages(t, "room", 7), append(append([]string{"a"}, ids("m", 0, 5)...), "b"))
}

// disconnect cuts the client behind p off the server and keeps it off
// until p.Refuse(false).
func disconnect(t *testing.T, ts *testServer, p *faultproxy.Proxy) {
	t.Helper()
	svc := ts.service()
	before := svc.Connections()
	p.Refuse(true)
	p.Cut()
	eventually(t, "the server saw the client go", func() bool { return svc.Connections() < before }, nil)
}

// TestRejoinRefusedForNow has the server refuse the client's own rejoin
// after a reconnect for a passing reason (its shared engine unavailable,
// as when its Redis Pub/Sub connection is being re-established): the
// client keeps the membership, joins again on the same stream, and hands
// over what was published meanwhile, once — the user never asked to
// leave.
func TestRejoinRefusedForNow(t *testing.T) {
	var mu sync.Mutex
	stage := 0 // 1: armed; 2: sub's new stream welcomed; 3: its fence answered; 4: the rejoin refused
	joinID := ""
	ts := startServerWrapped(t, streaming.Config{}, func(svc *streaming.Service) streamsvc.Service {
		return &hookedService{Service: svc,
			recv: func(client string, m *streamsvc.DataMessage) error {
				if client == "sub" && deref(m.Action) == "join" {
					mu.Lock()
					joinID = deref(m.ID)
					mu.Unlock()
				}
				return nil
			},
			send: func(client string, m *streamsvc.DataMessage) error {
				mu.Lock()
				defer mu.Unlock()
				switch action := deref(m.Action); {
				case client != "sub":
				case stage == 1 && action == "welcome":
					stage = 2
				case stage == 2 && m.Type == "health_check":
					stage = 3 // what follows answers the client's requests
				case stage == 3 && action == "joined" && deref(m.SessionID) == "room":
					// The answer to the rejoin becomes a refusal of it.
					stage = 4
					m.Action, m.Reason, m.ID = ptr("error"), ptr("engine: engine unavailable: redis subscribe: the Pub/Sub connection is down"), ptr(joinID)
					m.Seq, m.Epoch, m.Recovered = nil, nil, nil
				}
				return nil
			},
		}
	})
	p := newProxy(t, ts.addr)
	// Heartbeats every 400ms make the client check four times as often,
	// so the join is sent again within a few hundred milliseconds.
	sub := dial(t, p.Addr(), WithClientID("sub"), WithHeartbeat(400*time.Millisecond))
	events := record(t, sub)
	pub := dial(t, ts.addr, WithClientID("pub"))
	record(t, pub)
	join(t, sub, "room")
	publishAll(t, pub, "room", []string{"a"})
	events.waitMessages(t, "room", 1)

	mu.Lock()
	stage = 1
	mu.Unlock()
	disconnect(t, ts, p)
	publishAll(t, pub, "room", []string{"b"})
	p.Refuse(false)
	events.waitFor(t, "the refusal of the rejoin", func(ev Event) bool {
		se, ok := ev.(*ServerError)
		return ok && se.Session == "room"
	})
	events.waitFor(t, "the answer to the join sent again", isJoined("room", func(j *Joined) bool { return j.Rejoin && j.Recovered }))
	publishAll(t, pub, "room", []string{"c"})
	checkExactlyOnce(t, events.waitMessages(t, "room", 3), []string{"a", "b", "c"})
	if st := sub.Stats(); st.Connects != 2 {
		t.Errorf("stats %+v: want the join sent again on the second stream", st)
	}
}

func ptr[T any](v T) *T { return &v }
