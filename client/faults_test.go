package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	"github.com/streamhub/streamhub/streaming"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestCut cuts the subscriber's connection (a TCP reset both ways) again
// and again while messages flow: it reconnects, rejoins from the last seq
// it handed over, and sees every message once, in order.
func TestCut(t *testing.T) {
	ts := startServer(t, streaming.Config{})
	p := newProxy(t, ts.addr)
	sub := dial(t, p.Addr(), WithClientID("sub"))
	events := record(t, sub)
	pub := dial(t, ts.addr, WithClientID("pub"))
	record(t, pub)
	join(t, sub, "room")

	const cuts, per = 5, 20
	var resumes []time.Duration
	for i := range cuts {
		publishAll(t, pub, "room", ids("m", i*per, i*per+per/2))
		// Cut while the subscriber may still be receiving the first half.
		connects := sub.Stats().Connects
		cutAt := time.Now()
		p.Cut()
		publishAll(t, pub, "room", ids("m", i*per+per/2, (i+1)*per))
		eventually(t, "the subscriber reconnected", func() bool { return sub.Stats().Connects > connects }, nil)
		rejoin := isJoined("room", func(j *Joined) bool { return j.Rejoin })
		eventually(t, fmt.Sprintf("rejoin %d", i+1), func() bool { return events.count(rejoin) >= i+1 },
			func() string { return describeEvents(events.all()) })
		resumes = append(resumes, events.at(i+1, rejoin).Sub(cutAt))
	}
	checkExactlyOnce(t, events.waitMessages(t, "room", cuts*per), ids("m", 0, cuts*per))
	for _, ev := range events.all() {
		if j, ok := ev.(*Joined); ok && !j.Recovered {
			t.Errorf("a rejoin after a cut did not recover: %+v", *j)
		}
	}
	// One Joined per join and per reconnect: the server's own restores of
	// the membership are not reported on top of the rejoins.
	if n, m := events.count(isState(StateReconnecting)), events.count(isJoined("room", nil)); n != cuts || m != cuts+1 {
		t.Errorf("%d reconnecting and %d joined events for %d cuts, want %d and %d", n, m, cuts, cuts, cuts+1)
	}
	t.Logf("cut → rejoined: %v", resumes)
}

// TestShortStall stalls the subscriber's connection briefly: nothing is
// lost or doubled, whether or not the client reconnects.
func TestShortStall(t *testing.T) {
	ts := startServer(t, streaming.Config{})
	p := newProxy(t, ts.addr)
	sub := dial(t, p.Addr(), WithClientID("sub"))
	events := record(t, sub)
	pub := dial(t, ts.addr, WithClientID("pub"))
	record(t, pub)
	join(t, sub, "room")

	publishAll(t, pub, "room", ids("m", 0, 10))
	p.Stall()
	publishAll(t, pub, "room", ids("m", 10, 30))
	p.Unstall()
	publishAll(t, pub, "room", ids("m", 30, 40))
	checkExactlyOnce(t, events.waitMessages(t, "room", 40), ids("m", 0, 40))
}

// TestStallUntilSendTimeout stalls the subscriber's connection while more
// is published than its flow-control window takes: the server's send
// blocks past its send timeout and it ends the stream as a slow consumer.
// Once the path flows again the client sees that end, reconnects and
// recovers everything.
func TestStallUntilSendTimeout(t *testing.T) {
	ts := startServer(t, streaming.Config{SendTimeout: 200 * time.Millisecond})
	p := newProxy(t, ts.addr)
	// A fixed 64 KiB window (no BDP growth) so that the stall blocks the
	// server's sends soon, whatever the machine.
	window := WithDialOptions(grpc.WithInitialWindowSize(1<<16), grpc.WithInitialConnWindowSize(1<<16))
	sub := dial(t, p.Addr(), WithClientID("sub"), window)
	events := record(t, sub)
	pub := dial(t, ts.addr, WithClientID("pub"))
	record(t, pub)
	join(t, sub, "room")
	svc := ts.service()
	if n := svc.Connections(); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}

	const n = 200
	payload := make([]byte, 8<<10)
	p.Stall()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for i := range n {
		if _, err := pub.Publish(ctx, "room", fmt.Sprintf("m-%d", i), payload); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the server ended the stalled stream", func() bool { return svc.Connections() == 1 }, nil)
	p.Unstall()
	checkExactlyOnce(t, events.waitMessages(t, "room", n), ids("m", 0, n))
	ev := events.waitFor(t, "reconnecting", isState(StateReconnecting))
	if cause := ev.(*StateChange).Cause; status.Code(cause) != codes.ResourceExhausted {
		t.Errorf("stream ended with %v, want RESOURCE_EXHAUSTED (slow consumer)", cause)
	}
}

// TestStallDetectedByClient stalls the connection with nothing to send:
// the client probes the silent server, gets no answer, gives the
// connection up and reconnects once the path flows again.
func TestStallDetectedByClient(t *testing.T) {
	ts := startServer(t, streaming.Config{})
	p := newProxy(t, ts.addr)
	sub := dial(t, p.Addr(), WithClientID("sub"), WithHealthCheck(100*time.Millisecond, 200*time.Millisecond))
	events := record(t, sub)
	pub := dial(t, ts.addr, WithClientID("pub"))
	record(t, pub)
	join(t, sub, "room")
	publishAll(t, pub, "room", ids("m", 0, 5))
	events.waitMessages(t, "room", 5)

	p.Stall()
	ev := events.waitFor(t, "the client gave the stalled connection up", isState(StateReconnecting))
	if cause := ev.(*StateChange).Cause; !errors.Is(cause, errNoAnswer) {
		t.Fatalf("reconnecting because of %v, want no answer", cause)
	}
	publishAll(t, pub, "room", ids("m", 5, 10))
	p.Unstall()
	checkExactlyOnce(t, events.waitMessages(t, "room", 10), ids("m", 0, 10))
}

// TestServerRestart kills the server and starts a new one on the same
// address. The new one has no history (the memory engine), so every
// session has a new epoch: the client says Recovered: false and carries
// on from the start of the new epoch, and a publication made while the
// server was down is delivered once.
func TestServerRestart(t *testing.T) {
	ts := startServer(t, streaming.Config{})
	sub := dial(t, ts.addr, WithClientID("sub"))
	events := record(t, sub)
	pub := dial(t, ts.addr, WithClientID("pub"))
	pubEvents := record(t, pub)
	first := join(t, sub, "room")
	publishAll(t, pub, "room", ids("m", 0, 5))
	events.waitMessages(t, "room", 5)

	ts.kill()
	// Published while no server runs: held until the rejoin.
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	during, err := pub.PublishAsync(ctx, "room", "during", []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	ts.start()
	startedAt := time.Now()
	if _, err := during.Wait(ctx); err != nil {
		t.Fatalf("publication made while the server was down: %v", err)
	}
	publishAll(t, pub, "room", ids("m", 5, 10))

	want := append(append(ids("m", 0, 5), "during"), ids("m", 5, 10)...)
	msgs := events.waitMessages(t, "room", len(want))
	checkExactlyOnce(t, msgs, want)
	rejoin := events.waitFor(t, "the rejoin", isJoined("room", func(j *Joined) bool { return j.Rejoin })).(*Joined)
	if rejoin.Recovered || rejoin.Epoch == first.Epoch {
		t.Errorf("rejoin after a restart = %+v, want Recovered false and a new epoch", *rejoin)
	}
	if m := msgs[5]; m.Epoch != rejoin.Epoch || m.Seq != 1 {
		t.Errorf("first message after the restart: seq %d epoch %s, want seq 1 of %s", m.Seq, m.Epoch, rejoin.Epoch)
	}
	pubEvents.waitFor(t, "the publisher's rejoin", isJoined("room", func(j *Joined) bool { return j.Rejoin && !j.Recovered }))
	t.Logf("new server listening → subscriber rejoined: %v", events.at(1, isJoined("room", func(j *Joined) bool { return j.Rejoin })).Sub(startedAt))
}

// TestDrain shuts the server down gracefully while a new server answers
// at the address: the client reconnects at once on the goaway — its
// backoff is a minute, so anything else would time the test out — and
// carries on with the new server.
func TestDrain(t *testing.T) {
	old := startServer(t, streaming.Config{})
	p := newProxy(t, old.addr)
	c := dial(t, p.Addr(), WithClientID("c"), WithBackoff(time.Minute, time.Minute))
	events := record(t, c)
	first := join(t, c, "room")
	publishAll(t, c, "room", ids("old", 0, 3))

	replacement := startServer(t, streaming.Config{})
	if err := p.Retarget(replacement.addr); err != nil {
		t.Fatal(err)
	}
	drainedAt := time.Now()
	old.drain()
	events.waitFor(t, "reconnected", func(ev Event) bool {
		return isState(StateConnected)(ev) && c.Stats().Connects == 2
	})
	t.Logf("drain started → connected to the new server: %v", events.at(2, isState(StateConnected)).Sub(drainedAt))
	rejoin := events.waitFor(t, "the rejoin", isJoined("room", func(j *Joined) bool { return j.Rejoin })).(*Joined)
	if rejoin.Recovered || rejoin.Epoch == first.Epoch {
		t.Errorf("rejoin on another server = %+v, want Recovered false and a new epoch", *rejoin)
	}
	publishAll(t, c, "room", ids("new", 0, 3))
	checkExactlyOnce(t, events.waitMessages(t, "room", 6), append(ids("old", 0, 3), ids("new", 0, 3)...))
	ev := events.waitFor(t, "reconnecting", isState(StateReconnecting))
	if cause := ev.(*StateChange).Cause; status.Code(cause) != codes.Unavailable {
		t.Errorf("drained stream ended with %v, want UNAVAILABLE", cause)
	}
}

// TestReplaced opens the client's ID elsewhere: the client closes itself
// with ErrReplaced instead of taking the ID back.
func TestReplaced(t *testing.T) {
	ts := startServer(t, streaming.Config{})
	first := dial(t, ts.addr, WithClientID("twin"))
	events := record(t, first)
	join(t, first, "room")

	second := dial(t, ts.addr, WithClientID("twin"))
	secondEvents := record(t, second)
	<-events.done // Events closed: the client closed itself
	ev := events.all()[len(events.all())-1].(*StateChange)
	if ev.State != StateClosed || !errors.Is(ev.Cause, ErrReplaced) || !errors.Is(first.Err(), ErrReplaced) {
		t.Fatalf("last event %+v, Err %v; want closed with ErrReplaced", *ev, first.Err())
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := first.Publish(ctx, "room", "x", nil); !errors.Is(err, ErrReplaced) {
		t.Errorf("Publish on a replaced client: %v", err)
	}
	// The newer stream took the membership over, unasked: the client had
	// not joined it, so it left it.
	publishAll(t, second, "other", []string{"fine"})
	secondEvents.waitMessages(t, "other", 1)
	if msgs := secondEvents.messages("room"); len(msgs) != 0 {
		t.Errorf("the new client got messages of a session it never joined: %v", msgs)
	}
}

// TestRecoveredFalse evicts history the subscriber missed while it could
// not connect: its rejoin says Recovered: false, and it goes on with what
// history holds, in order.
func TestRecoveredFalse(t *testing.T) {
	ts := startServer(t, streaming.Config{HistorySize: 5})
	p := newProxy(t, ts.addr)
	sub := dial(t, p.Addr(), WithClientID("sub"))
	events := record(t, sub)
	pub := dial(t, ts.addr, WithClientID("pub"))
	record(t, pub)
	join(t, sub, "room")
	publishAll(t, pub, "room", ids("m", 0, 3))
	events.waitMessages(t, "room", 3)

	svc := ts.service()
	p.Refuse(true)
	p.Cut()
	eventually(t, "the server saw the subscriber go", func() bool { return svc.Connections() == 1 }, nil)
	publishAll(t, pub, "room", ids("m", 3, 20))
	p.Refuse(false)

	msgs := events.waitMessages(t, "room", 8)
	checkExactlyOnce(t, msgs, append(ids("m", 0, 3), ids("m", 15, 20)...))
	rejoin := events.waitFor(t, "the rejoin", isJoined("room", func(j *Joined) bool { return j.Rejoin })).(*Joined)
	if rejoin.Recovered || rejoin.Seq != 20 {
		t.Errorf("rejoin = %+v, want Recovered false at seq 20", *rejoin)
	}
	publishAll(t, pub, "room", []string{"after"})
	checkExactlyOnce(t, events.waitMessages(t, "room", 9), append(append(ids("m", 0, 3), ids("m", 15, 20)...), "after"))
}

// TestPublishRetryNotReceived loses a publication on its way to the
// server (the connection breaks before the server reads it): the client
// sends it again after the rejoin, and it is delivered once.
func TestPublishRetryNotReceived(t *testing.T) {
	var once sync.Once
	ts := startServerWrapped(t, streaming.Config{}, func(svc *streaming.Service) streamsvc.Service {
		return &hookedService{Service: svc, recv: func(client string, m *streamsvc.DataMessage) error {
			var err error
			if m.Type == "data" && deref(m.ID) == "lost" {
				once.Do(func() { err = status.Error(codes.Unavailable, "connection lost") })
			}
			return err
		}}
	})
	sub := dial(t, ts.addr, WithClientID("sub"))
	events := record(t, sub)
	pub := dial(t, ts.addr, WithClientID("pub"))
	record(t, pub)
	join(t, sub, "room")
	publishAll(t, pub, "room", []string{"before", "lost", "after"})
	checkExactlyOnce(t, events.waitMessages(t, "room", 3), []string{"before", "lost", "after"})
	if st := pub.Stats(); st.Resent != 1 || st.FoundInReplay != 0 || st.Connects != 2 {
		t.Errorf("publisher stats %+v, want one resend on a second stream", st)
	}
}

// TestPublishRetryAccepted loses the delivery of an accepted publication
// (the connection breaks before it goes out to its publisher): the replay
// after the rejoin shows it, so it is not sent again.
func TestPublishRetryAccepted(t *testing.T) {
	var once sync.Once
	ts := startServerWrapped(t, streaming.Config{}, func(svc *streaming.Service) streamsvc.Service {
		return &hookedService{Service: svc, send: func(client string, m *streamsvc.DataMessage) error {
			var err error
			if client == "pub" && m.Type == "data" && deref(m.ID) == "unseen" {
				once.Do(func() { err = status.Error(codes.Unavailable, "connection lost") })
			}
			return err
		}}
	})
	sub := dial(t, ts.addr, WithClientID("sub"))
	events := record(t, sub)
	pub := dial(t, ts.addr, WithClientID("pub"))
	record(t, pub)
	join(t, sub, "room")
	seqs := publishAll(t, pub, "room", []string{"before", "unseen", "after"})
	if seqs[1] != 2 || seqs[2] != 3 {
		t.Errorf("seqs %v, want 1, 2, 3", seqs)
	}
	checkExactlyOnce(t, events.waitMessages(t, "room", 3), []string{"before", "unseen", "after"})
	if st := pub.Stats(); st.Resent != 0 || st.FoundInReplay != 1 || st.Connects != 2 {
		t.Errorf("publisher stats %+v, want the publication found in the replay on a second stream", st)
	}
}

// TestPublishAcrossCuts publishes with many publications in flight while
// the publisher's connection is cut again and again: every publication
// completes with its own seq, and a subscriber sees each exactly once.
func TestPublishAcrossCuts(t *testing.T) {
	ts := startServer(t, streaming.Config{})
	p := newProxy(t, ts.addr)
	sub := dial(t, ts.addr, WithClientID("sub"))
	events := record(t, sub)
	pub := dial(t, p.Addr(), WithClientID("pub"), WithMaxInflight(16))
	record(t, pub)
	join(t, sub, "room")
	join(t, pub, "room")

	const n, cuts = 400, 8
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	pubs := make([]*Publication, n)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range n {
			var err error
			if pubs[i], err = pub.PublishAsync(ctx, "room", fmt.Sprintf("m-%d", i), []byte("x")); err != nil {
				t.Errorf("PublishAsync %d: %v", i, err)
				return
			}
		}
	})
	for i := range cuts {
		eventually(t, "more deliveries", func() bool { return len(events.messages("room")) >= (i+1)*n/(cuts+1) }, nil)
		connects := pub.Stats().Connects
		p.Cut()
		eventually(t, "the publisher reconnected", func() bool { return pub.Stats().Connects > connects }, nil)
	}
	wg.Wait()
	seen := map[uint64]bool{}
	for i, pb := range pubs {
		seq, err := pb.Wait(ctx)
		if err != nil || seen[seq] {
			t.Fatalf("publication %d: seq %d, %v", i, seq, err)
		}
		seen[seq] = true
	}
	msgs := events.waitMessages(t, "room", n)
	got := checkInOrder(t, msgs)
	count := map[string]int{}
	for _, id := range got {
		count[id]++
	}
	for i := range n {
		if id := fmt.Sprintf("m-%d", i); count[id] != 1 {
			t.Errorf("%s delivered %d times", id, count[id])
		}
	}
	if len(got) != n {
		t.Errorf("%d deliveries for %d publications", len(got), n)
	}
	t.Logf("publisher stats after %d cuts: %+v", cuts, pub.Stats())
}

// TestUserStopsReading has the user stop reading events: the client stops
// reading the stream, holding no more than its event buffer, until the
// server ends the stream as a slow consumer. Once the user reads again,
// the client reconnects and everything arrives once, in order.
func TestUserStopsReading(t *testing.T) {
	ts := startServer(t, streaming.Config{SendTimeout: 200 * time.Millisecond, QueueSize: 16})
	window := WithDialOptions(grpc.WithInitialWindowSize(1<<16), grpc.WithInitialConnWindowSize(1<<16))
	sub := dial(t, ts.addr, WithClientID("sub"), WithEventBuffer(8), window)
	pub := dial(t, ts.addr, WithClientID("pub"))
	record(t, pub)
	join(t, sub, "room")
	svc := ts.service()

	// Nobody reads sub's events meanwhile. 300 KiB is more than its
	// window, so the server's sends block.
	const n = 300
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for i := range n {
		if _, err := pub.Publish(ctx, "room", fmt.Sprintf("m-%d", i), make([]byte, 1<<10)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the server ended the unread stream", func() bool { return svc.Connections() == 1 }, nil)
	if l := len(sub.Events()); l > 8 {
		t.Fatalf("%d events buffered, more than the buffer of 8", l)
	}

	events := record(t, sub)
	checkExactlyOnce(t, events.waitMessages(t, "room", n), ids("m", 0, n))
	ev := events.waitFor(t, "reconnecting", isState(StateReconnecting))
	if cause := ev.(*StateChange).Cause; status.Code(cause) != codes.ResourceExhausted {
		t.Errorf("stream ended with %v, want RESOURCE_EXHAUSTED (slow consumer)", cause)
	}
}

// TestAnswersProbesAndSendsHeartbeats checks the client keeps a quiet
// stream alive: with its heartbeats rarer than the server's inactivity
// limit it answers the server's probes; with them frequent, they arrive.
func TestAnswersProbesAndSendsHeartbeats(t *testing.T) {
	var mu sync.Mutex
	probes, heartbeats := 0, 0
	ts := startServerWrapped(t, streaming.Config{MaxInactivity: 50 * time.Millisecond, ProbeTimeout: 500 * time.Millisecond},
		func(svc *streaming.Service) streamsvc.Service {
			return &hookedService{Service: svc,
				send: func(_ string, m *streamsvc.DataMessage) error {
					if m.Type == "health_check" {
						mu.Lock()
						probes++
						mu.Unlock()
					}
					return nil
				},
				recv: func(_ string, m *streamsvc.DataMessage) error {
					if m.Type == "heartbeat" {
						mu.Lock()
						heartbeats++
						mu.Unlock()
					}
					return nil
				},
			}
		})
	counts := func() (int, int) {
		mu.Lock()
		defer mu.Unlock()
		return probes, heartbeats
	}

	quiet := dial(t, ts.addr, WithClientID("quiet"), WithHeartbeat(time.Hour))
	events := record(t, quiet)
	// The post-welcome health_check is answered too: count beyond it.
	eventually(t, "five probes answered", func() bool { p, _ := counts(); return p >= 6 }, nil)
	if n := events.count(isState(StateReconnecting)); n != 0 || quiet.Stats().Connects != 1 {
		t.Fatalf("the quiet client lost its stream: %s", describeEvents(events.all()))
	}
	quiet.Close()

	_, before := counts()
	chatty := dial(t, ts.addr, WithClientID("chatty"), WithHeartbeat(10*time.Millisecond))
	record(t, chatty)
	eventually(t, "heartbeats", func() bool { _, h := counts(); return h >= before+5 }, nil)
}

// TestOversizedPublicationFails publishes more than the server's gRPC
// message limit (4 MiB here) with a client told the limit is larger: the
// server ends the stream, and the client fails that publication instead
// of sending it again on every new stream.
func TestOversizedPublicationFails(t *testing.T) {
	ts := startServer(t, streaming.Config{})
	c := dial(t, ts.addr, WithClientID("c"), WithMaxMessageSize(16<<20))
	events := record(t, c)
	join(t, c, "room")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	_, err := c.Publish(ctx, "room", "huge", make([]byte, 5<<20))
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Publish of 5 MiB: %v, want ErrTooLarge", err)
	}
	if seq, err := c.Publish(ctx, "room", "small", []byte("x")); err != nil || seq != 1 {
		t.Fatalf("Publish after: %d, %v", seq, err)
	}
	checkExactlyOnce(t, events.waitMessages(t, "room", 1), []string{"small"})
}
