package client

import (
	"testing"

	"github.com/streamhub/streamhub/internal/redistest"
	"github.com/streamhub/streamhub/streaming"
)

// TestEpochChangesUnderALiveMember runs the server on a Redis that then
// restarts empty: the session starts a new epoch under the connected
// client, which says so (Joined, recovered false, the new epoch) and hands
// its user the new epoch's messages from seq 1, each once.
func TestEpochChangesUnderALiveMember(t *testing.T) {
	rd := redistest.Start(t)
	cfg := streaming.Config{}
	eng, relay := rd.Engine(streaming.EngineBounds(cfg), "only") // closed after the server's kill, which runs first
	ts := startServerWith(t, cfg, streaming.WithEngine(eng, "only"))
	relay.Set(ts.service())

	sub := dial(t, ts.addr, WithClientID("sub"))
	subEvents := record(t, sub)
	pub := dial(t, ts.addr, WithClientID("pub"))
	record(t, pub)
	first := join(t, sub, "room")
	publishAll(t, pub, "room", ids("old", 0, 3))
	subEvents.waitMessages(t, "room", 3)

	rd.Kill()
	rd.Restart()
	subEvents.waitFor(t, "the new epoch's joined", isJoined("room", func(j *Joined) bool {
		return !j.Recovered && j.Epoch != first.Epoch
	}))
	eventually(t, "the engine answering again", func() bool { return ts.service().EngineErr() == nil }, func() string { return "" })
	publishAll(t, pub, "room", ids("new", 0, 3))
	msgs := subEvents.waitMessages(t, "room", 6)
	checkExactlyOnce(t, msgs, append(ids("old", 0, 3), ids("new", 0, 3)...))
	for _, m := range msgs[3:] {
		if m.Epoch == first.Epoch {
			t.Fatalf("message %s of the new epoch carries the old one", m.ID)
		}
	}
	if seq, epoch, _ := sub.Position("room"); seq != 3 || epoch == first.Epoch {
		t.Fatalf("Position = %d, %q", seq, epoch)
	}
}
