package client

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/streamhub/streamhub/streaming"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestPublishAndReceive checks the common path: a subscriber joins, a
// publisher's Publish returns the seq its delivery carries, and both see
// the messages in order, the sender's own included.
func TestPublishAndReceive(t *testing.T) {
	ts := startServer(t, streaming.Config{})
	sub := dial(t, ts.addr, WithClientID("sub"))
	subEvents := record(t, sub)
	pub := dial(t, ts.addr, WithClientID("pub"))
	pubEvents := record(t, pub)

	if j := join(t, sub, "room"); j.Session != "room" || j.Seq != 0 || j.Epoch == "" || !j.Recovered || j.Rejoin {
		t.Fatalf("Join = %+v", j)
	}
	seqs := publishAll(t, pub, "room", ids("m", 0, 5))
	for i, seq := range seqs {
		if seq != uint64(i+1) {
			t.Fatalf("Publish seqs = %v, want 1..5", seqs)
		}
	}
	for who, r := range map[string]*recorder{"subscriber": subEvents, "publisher": pubEvents} {
		msgs := r.waitMessages(t, "room", 5)
		checkExactlyOnce(t, msgs, ids("m", 0, 5))
		for i, m := range msgs {
			if m.Sender != "pub" || m.Seq != uint64(i+1) || string(m.Data) != "data of "+m.ID || m.Time.IsZero() {
				t.Errorf("%s got %+v", who, *m)
			}
		}
	}

	// The subscriber's events: connecting, connected as itself, joined,
	// then the messages.
	evs := subEvents.all()
	if sc, ok := evs[0].(*StateChange); !ok || sc.State != StateConnecting {
		t.Errorf("first event %s", describeEvents(evs[:1]))
	}
	if sc, ok := evs[1].(*StateChange); !ok || sc.State != StateConnected || sc.ClientID != "sub" {
		t.Errorf("second event %s", describeEvents(evs[1:2]))
	}
	if _, ok := evs[2].(*Joined); !ok {
		t.Errorf("third event %s", describeEvents(evs[2:3]))
	}
	// Publishing joined the publisher live, with its own Joined.
	pubEvents.waitFor(t, "publisher's joined", isJoined("room", nil))
	if seq, epoch, ok := sub.Position("room"); !ok || seq != 5 || epoch == "" {
		t.Errorf("Position = %d, %q, %v", seq, epoch, ok)
	}
}

// TestAssignedClientID checks that a client without an ID keeps the one
// the server assigned.
func TestAssignedClientID(t *testing.T) {
	ts := startServer(t, streaming.Config{})
	c := dial(t, ts.addr)
	record(t, c)
	if id := c.ClientID(); id == "" {
		t.Fatal("no client ID after the welcome")
	}
}

// TestJoinFrom checks joins at a position: from the start, from a seq,
// and that a position from an earlier client resumes exactly.
func TestJoinFrom(t *testing.T) {
	ts := startServer(t, streaming.Config{})
	pub := dial(t, ts.addr, WithClientID("pub"))
	record(t, pub)
	publishAll(t, pub, "room", ids("m", 0, 6))

	all := dial(t, ts.addr, WithClientID("all"))
	allEvents := record(t, all)
	if j := join(t, all, "room", From(0, "")); j.Seq != 6 || !j.Recovered {
		t.Fatalf("Join From(0) = %+v", j)
	}
	checkExactlyOnce(t, allEvents.waitMessages(t, "room", 6), ids("m", 0, 6))
	_, epoch, _ := all.Position("room")

	later := dial(t, ts.addr, WithClientID("later"))
	laterEvents := record(t, later)
	join(t, later, "room", From(4, epoch))
	publishAll(t, pub, "room", ids("m", 6, 8))
	checkExactlyOnce(t, laterEvents.waitMessages(t, "room", 4), ids("m", 4, 8))

	// Another epoch's position replays nothing of this one's history,
	// says so, and goes on from the start of the current epoch.
	other := dial(t, ts.addr, WithClientID("other"))
	otherEvents := record(t, other)
	if j := join(t, other, "room", From(3, "not-this-epoch")); j.Recovered || j.Epoch != epoch {
		t.Fatalf("Join with another epoch = %+v", j)
	}
	checkExactlyOnce(t, otherEvents.waitMessages(t, "room", 8), ids("m", 0, 8))
}

// TestPauseResumeLeave checks that nothing of a paused session is handed
// over until Resume replays it, and nothing of a left one at all.
func TestPauseResumeLeave(t *testing.T) {
	ts := startServer(t, streaming.Config{})
	pub := dial(t, ts.addr, WithClientID("pub"))
	record(t, pub)
	sub := dial(t, ts.addr, WithClientID("sub"))
	events := record(t, sub)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()

	join(t, sub, "room")
	join(t, sub, "other")
	publishAll(t, pub, "room", ids("a", 0, 2))
	events.waitMessages(t, "room", 2)
	if err := sub.Pause(ctx, "room"); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Publish(ctx, "room", "x", nil); !errors.Is(err, ErrPaused) {
		t.Fatalf("Publish to a paused session: %v, want ErrPaused", err)
	}
	publishAll(t, pub, "room", ids("b", 0, 3))
	// A message to another session, published after the paused ones and
	// received by the same stream, shows nothing of room came meanwhile.
	publishAll(t, pub, "other", []string{"o"})
	events.waitMessages(t, "other", 1)
	if n := len(events.messages("room")); n != 2 {
		t.Fatalf("%d messages of the paused session, want 2", n)
	}
	j, err := sub.Resume(ctx, "room")
	if err != nil || !j.Resume || !j.Recovered || j.Seq != 5 {
		t.Fatalf("Resume = %+v, %v", j, err)
	}
	checkExactlyOnce(t, events.waitMessages(t, "room", 5), append(ids("a", 0, 2), ids("b", 0, 3)...))

	if err := sub.Leave(ctx, "room"); err != nil {
		t.Fatal(err)
	}
	if err := sub.Leave(ctx, "room"); !errors.Is(err, ErrNotJoined) {
		t.Fatalf("second Leave: %v, want ErrNotJoined", err)
	}
	publishAll(t, pub, "room", []string{"after-leave"})
	publishAll(t, pub, "other", []string{"o2"})
	events.waitMessages(t, "other", 2)
	if n := len(events.messages("room")); n != 5 {
		t.Fatalf("%d messages of room after Leave, want 5", n)
	}
}

// TestServerRefusals checks that refusals come back from the call and as
// events, and that the stream stays usable.
func TestServerRefusals(t *testing.T) {
	ts := startServer(t, streaming.Config{MaxSessionsPerConnection: 1})
	c := dial(t, ts.addr, WithClientID("c"))
	events := record(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	join(t, c, "one")

	_, err := c.Join(ctx, "two")
	var se *ServerError
	if !errors.As(err, &se) || se.Session != "two" {
		t.Fatalf("Join over the limit: %v, want a ServerError about two", err)
	}
	events.waitFor(t, "the refusal as an event", func(ev Event) bool {
		e, ok := ev.(*ServerError)
		return ok && e.Session == "two"
	})
	if _, _, ok := c.Position("two"); ok {
		t.Error("a refused join left a membership")
	}
	// Publishing to a session not joined joins it, which is refused too.
	if _, err := c.Publish(ctx, "three", "p", []byte("x")); !errors.As(err, &se) {
		t.Fatalf("Publish over the limit: %v, want a ServerError", err)
	}
	if seq, err := c.Publish(ctx, "one", "ok", []byte("x")); err != nil || seq != 1 {
		t.Fatalf("Publish after refusals = %d, %v", seq, err)
	}
}

// TestClientSideChecks checks what the client refuses before sending.
func TestClientSideChecks(t *testing.T) {
	ts := startServer(t, streaming.Config{})
	c := dial(t, ts.addr, WithClientID("c"), WithMaxMessageSize(1024))
	record(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := c.Join(ctx, "bad session!"); err == nil {
		t.Error("Join accepted an invalid session name")
	}
	if _, err := c.Publish(ctx, "room", "bad id!", nil); err == nil {
		t.Error("Publish accepted an invalid ID")
	}
	if _, err := c.Publish(ctx, "room", "big", make([]byte, 2048)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Publish of 2 KiB with a 1 KiB limit: %v", err)
	}
	p, err := c.PublishAsync(ctx, "room", "same", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.PublishAsync(ctx, "room", "same", []byte("2")); err != nil && !errors.Is(err, ErrDuplicateID) {
		t.Errorf("a second publication with the ID in flight: %v", err)
	}
	if _, err := p.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := Dial(ctx, ts.addr, WithClientID("bad id!")); err == nil {
		t.Error("Dial accepted an invalid client ID")
	}
}

// TestCloseFailsWaitingCalls checks that Close ends what waits and closes
// Events after a StateClosed.
func TestCloseFailsWaitingCalls(t *testing.T) {
	ts := startServer(t, streaming.Config{})
	p := newProxy(t, ts.addr)
	c := dial(t, p.Addr(), WithClientID("c"))
	events := record(t, c)
	join(t, c, "room")
	p.Stall() // nothing comes back: the publication waits
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	pending, err := c.PublishAsync(ctx, "room", "stuck", []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	p.Unstall()
	if _, err := pending.Wait(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("publication after Close: %v, want ErrClosed", err)
	}
	<-events.done
	if evs := events.all(); !isState(StateClosed)(evs[len(evs)-1]) {
		t.Fatalf("last event %s, want closed", describeEvents(evs[len(evs)-1:]))
	}
	if _, err := c.Join(ctx, "room"); !errors.Is(err, ErrClosed) {
		t.Errorf("Join after Close: %v", err)
	}
	if c.Err() != nil {
		t.Errorf("Err after Close = %v, want nil", c.Err())
	}
	c.Close() // again: no effect
}

// TestDialGivesUp checks that Dial to an address where nothing listens
// keeps trying until its ctx ends, and then says why.
func TestDialGivesUp(t *testing.T) {
	ts := startServer(t, streaming.Config{})
	addr := ts.addr
	ts.kill()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := Dial(ctx, addr, fastBackoff)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dial: %v, want the deadline", err)
	}
}

// TestTokens checks JWT authentication: a refused token closes the client
// (retrying cannot help), while a token function is asked again for each
// attempt, so a fresh token gets through.
func TestTokens(t *testing.T) {
	secret := []byte("a test secret of at least 32 bytes!!")
	auth, err := streaming.NewJWTSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	ts := startServerWith(t, streaming.Config{}, streaming.WithAuthenticator(auth))
	token := func(sub string, exp time.Time) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": sub, "exp": exp.Unix()}).SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()

	_, err = Dial(ctx, ts.addr, fastBackoff, WithToken(token("alice", time.Now().Add(-time.Hour))))
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Dial with an expired token: %v, want UNAUTHENTICATED at once", err)
	}

	calls := 0
	c, err := Dial(ctx, ts.addr, fastBackoff, WithTokenFunc(func(context.Context) (string, error) {
		calls++ // Dial's attempts are sequential
		if calls == 1 {
			return token("bob", time.Now().Add(-time.Hour)), nil
		}
		return token("bob", time.Now().Add(time.Hour)), nil
	}))
	if err != nil {
		t.Fatalf("Dial with a token function: %v", err)
	}
	defer c.Close()
	record(t, c)
	if c.ClientID() != "bob" || calls != 2 {
		t.Errorf("client %q after %d tokens, want bob after 2", c.ClientID(), calls)
	}
}

// Dial returns once the server welcomed the client, whatever room the
// user's event buffer has.
func TestDialWithTheSmallestEventBuffer(t *testing.T) {
	ts := startServer(t, streaming.Config{})
	c := dial(t, ts.addr, WithClientID("tiny"), WithEventBuffer(1))
	events := record(t, c)
	join(t, c, "room")
	publishAll(t, c, "room", ids("m", 0, 3))
	checkExactlyOnce(t, events.waitMessages(t, "room", 3), ids("m", 0, 3))
}

// A publication is done only once its delivery is in the user's hands
// (read, or waiting in the event buffer): a user that closes the client
// right after its last publication is done has every one of its messages.
func TestPublicationIsDoneAfterItsMessageIsHanded(t *testing.T) {
	ts := startServer(t, streaming.Config{})
	const buffer = 2
	for round := range 10 {
		c := dial(t, ts.addr, WithClientID(fmt.Sprint("p", round)), WithEventBuffer(buffer))
		join(t, c, "room")
		var pubs []*Publication
		for i := range 20 {
			p, err := c.PublishAsync(context.Background(), "room", fmt.Sprint(round, "-", i), []byte("x"))
			if err != nil {
				t.Fatal(err)
			}
			pubs = append(pubs, p)
		}
		got := 0
		for ev := range c.Events() { // read slowly: after each, check the publications
			if m, ok := ev.(*Message); ok && m.Sender == c.ClientID() {
				got++
			}
			done := 0
			for _, p := range pubs {
				select {
				case <-p.Done():
					done++
				default:
				}
			}
			if done > got+buffer { // read, or in the buffer
				t.Fatalf("round %d: %d publications done, %d of their messages read, buffer %d", round, done, got, buffer)
			}
			if done == len(pubs) {
				break
			}
			if got == len(pubs) { // the last ones are completed right after they are handed
				for _, p := range pubs {
					<-p.Done()
				}
				break
			}
		}
		// As streamhub-cli does: close once everything is done, then read
		// what is left. Every message is there.
		c.Close()
		for ev := range c.Events() {
			if m, ok := ev.(*Message); ok && m.Sender == c.ClientID() {
				got++
			}
		}
		if got != len(pubs) {
			t.Fatalf("round %d: %d of %d messages handed before and after Close", round, got, len(pubs))
		}
	}
}

// A publication that was never sent is not completed by an older message
// of the same client with the same id that a replay brings.
func TestUnsentPublicationIsNotFoundInAReplay(t *testing.T) {
	ts := startServer(t, streaming.Config{})
	first := dial(t, ts.addr, WithClientID("script"))
	record(t, first)
	join(t, first, "room")
	publishAll(t, first, "room", []string{"hello"})
	first.Close()

	again := dial(t, ts.addr, WithClientID("script"))
	record(t, again)
	if _, err := again.Join(context.Background(), "room", From(0, "")); err != nil {
		t.Fatal(err)
	}
	seq, err := again.Publish(context.Background(), "room", "hello", []byte("again"))
	if err != nil {
		t.Fatal(err)
	}
	if seq != 2 {
		t.Fatalf("the second hello got seq %d, want 2 (seq 1 is the first run's)", seq)
	}
}
