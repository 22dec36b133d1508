package streaming

import (
	"strings"
	"testing"
)

// panickyHistory is a History whose Append panics, standing in for a bug
// in a History implementation.
type panickyHistory struct{ History }

func (panickyHistory) Append(*Entry) { panic("history failure") }

func TestPanicEndsOnlyItsStream(t *testing.T) {
	memory := NewMemoryHistory(10, 1<<30)
	ts := startServerWith(t, Config{}, []Option{WithHistory(func(session string) History {
		if session == "boom" {
			return panickyHistory{memory(session)}
		}
		return memory(session)
	})})
	victim, bystander := ts.open(t, "victim"), ts.open(t, "bystander")
	victim.welcome()
	bystander.welcome()
	bystander.join("room")
	victim.join("room")

	victim.publish("boom", "x")
	err := victim.end()
	if errorName(err) != "fault" || !strings.Contains(err.Error(), "internal error") {
		t.Fatalf("panicking stream ended with %v, want INTERNAL", err)
	}
	eventually(t, "internal disconnect counted", func() bool { return ts.metrics.disconnected("internal") == 1 })

	// Nothing was left locked: the session, the registry and the pool serve on.
	bystander.publish("room", "still fine")
	if m := bystander.expect(typeData, ""); string(m.Data) != "still fine" {
		t.Fatalf("got %s", describe(m))
	}
	again := ts.open(t, "victim")
	again.welcome()
	if j := again.expect(typeControl, actJoined); str(j.SessionID) != "room" && str(j.SessionID) != "boom" {
		t.Fatalf("got %s", describe(j))
	}
}
