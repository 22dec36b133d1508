package streaming

import (
	"fmt"
	"strings"
	"testing"
	"time"

	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
)

func TestWelcomeIsFirst(t *testing.T) {
	ts := startServer(t, Config{})
	a := ts.open(t, "alice")
	w := a.welcome()
	if str(w.ClientID) != "alice" || w.Timestamp == nil {
		t.Fatalf("welcome = %s client %s", describe(w), str(w.ClientID))
	}
	anon := ts.open(t, "")
	if w := anon.welcome(); !strings.HasPrefix(str(w.ClientID), "anon-") {
		t.Fatalf("anonymous welcome names %q", str(w.ClientID))
	}
}

func TestSessionDeliversInOrderToMembersOnly(t *testing.T) {
	ts := startServer(t, Config{})
	a, b, c := ts.open(t, "a"), ts.open(t, "b"), ts.open(t, "c")
	for _, cl := range []*testClient{a, b, c} {
		cl.welcome()
	}
	a.join("room")
	b.join("room")
	c.join("other")

	const n = 50
	for i := range n {
		a.publish("room", fmt.Sprint("a", i))
		b.publish("room", fmt.Sprint("b", i))
	}
	for _, cl := range []*testClient{a, b} {
		var fromA, fromB int
		for seq := uint64(1); seq <= 2*n; seq++ {
			m := cl.expect(typeData, "")
			if *m.Seq != seq || str(m.SessionID) != "room" || m.Epoch == nil || m.Timestamp == nil {
				t.Fatalf("delivery %d: %s seq %d", seq, describe(m), *m.Seq)
			}
			// Each sender's messages keep their order within the session's.
			switch str(m.ClientID) {
			case "a":
				if want := fmt.Sprint("a", fromA); string(m.Data) != want {
					t.Fatalf("got %q, want %q", m.Data, want)
				}
				fromA++
			case "b":
				if want := fmt.Sprint("b", fromB); string(m.Data) != want {
					t.Fatalf("got %q, want %q", m.Data, want)
				}
				fromB++
			default:
				t.Fatalf("delivery from %q", str(m.ClientID))
			}
		}
	}
	if got := c.sync(); len(got) != 0 {
		t.Fatalf("a client of another session received %s", describe(got[0]))
	}
}

func TestLeaveStopsDeliveries(t *testing.T) {
	ts := startServer(t, Config{})
	a, b := ts.open(t, "a"), ts.open(t, "b")
	a.welcome()
	b.welcome()
	a.join("room")
	b.join("room")
	b.send(&streamsvc.DataMessage{Type: typeControl, Action: ptr(actLeave), SessionID: ptr("room")})
	b.expect(typeControl, actLeft)
	a.publish("room", "after leave")
	if m := a.expect(typeData, ""); string(m.Data) != "after leave" {
		t.Fatalf("sender got %s", describe(m))
	}
	if got := b.sync(); len(got) != 0 {
		t.Fatalf("a client that left received %s", describe(got[0]))
	}
}

func TestDataJoinsImplicitly(t *testing.T) {
	ts := startServer(t, Config{})
	a := ts.open(t, "a")
	a.welcome()
	a.send(&streamsvc.DataMessage{Type: typeData, SessionID: ptr("room"), Data: []byte("hi"), ID: ptr("m1")})
	j := a.expect(typeControl, actJoined)
	if *j.Seq != 0 || j.Epoch == nil {
		t.Fatalf("implicit joined: %s", describe(j))
	}
	m := a.expect(typeData, "")
	if str(m.ID) != "m1" || *m.Seq != 1 || str(m.ClientID) != "a" || *m.Epoch != *j.Epoch {
		t.Fatalf("delivery: %s", describe(m))
	}
}

func TestMaxConnections(t *testing.T) {
	ts := startServer(t, Config{MaxConnections: 2})
	a, b := ts.open(t, "a"), ts.open(t, "b")
	a.welcome()
	b.welcome()
	c := ts.open(t, "c")
	err := c.end()
	if errorName(err) != "resource_exhausted" || !strings.Contains(err.Error(), "maximum connections reached") {
		t.Fatalf("third stream ended with %v", err)
	}
	// The others are untouched, and a freed slot can be taken again.
	a.join("room")
	b.cancel()
	eventually(t, "slot freed", func() bool { return ts.svc.Connections() == 1 })
	ts.open(t, "d").welcome()
}

func TestSameClientIDReplacesOlderStream(t *testing.T) {
	ts := startServer(t, Config{})
	old := ts.open(t, "x")
	old.welcome()
	old.join("room")

	newer := ts.open(t, "x")
	if g := old.expect(typeControl, actGoaway); str(g.Reason) != "replaced" {
		t.Fatalf("goaway: %s", describe(g))
	}
	if err := old.end(); errorName(err) != "aborted" {
		t.Fatalf("old stream ended with %v", err)
	}
	newer.welcome()
	if j := newer.expect(typeControl, actJoined); str(j.SessionID) != "room" || !*j.Recovered {
		t.Fatalf("membership not taken over: %s", describe(j))
	}
	// The old stream's cleanup left the new one intact.
	p := ts.open(t, "p")
	p.welcome()
	p.publish("room", "hello")
	if m := newer.expect(typeData, ""); string(m.Data) != "hello" {
		t.Fatalf("new stream got %s", describe(m))
	}
	if n := ts.svc.Connections(); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}
	eventually(t, "replaced disconnect counted", func() bool { return ts.metrics.disconnected("replaced") == 1 })
}

func TestInvalidMessagesGetErrorsAndStreamGoesOn(t *testing.T) {
	ts := startServer(t, Config{})
	a := ts.open(t, "a")
	a.welcome()
	for _, tc := range []struct {
		name   string
		msg    *streamsvc.DataMessage
		reason string
	}{
		{"unknown type", &streamsvc.DataMessage{Type: "bogus"}, "type"},
		{"data without session", &streamsvc.DataMessage{Type: typeData, ID: ptr("m1")}, "session_id is required"},
		{"control without action", &streamsvc.DataMessage{Type: typeControl, SessionID: ptr("s")}, "action is required"},
		{"server action", &streamsvc.DataMessage{Type: typeControl, Action: ptr(actWelcome), SessionID: ptr("s")}, "not a client action"},
		{"unknown action", &streamsvc.DataMessage{Type: typeControl, Action: ptr("dance"), SessionID: ptr("s")}, "action"},
		{"malformed session", &streamsvc.DataMessage{Type: typeData, SessionID: ptr("no spaces")}, "session_id"},
		{"long session", &streamsvc.DataMessage{Type: typeData, SessionID: ptr(strings.Repeat("s", 129))}, "session_id"},
		{"malformed id", &streamsvc.DataMessage{Type: typeData, SessionID: ptr("s"), ID: ptr("a/b")}, "id"},
		{"leave a stranger", &streamsvc.DataMessage{Type: typeControl, Action: ptr(actLeave), SessionID: ptr("s"), ID: ptr("m2")}, "not a member"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a.t = t
			a.send(tc.msg)
			e := a.expect(typeControl, actError)
			if !strings.Contains(str(e.Reason), tc.reason) {
				t.Fatalf("reason %q does not mention %q", str(e.Reason), tc.reason)
			}
			if tc.msg.ID != nil && strings.HasPrefix(tc.name, "leave") && str(e.ID) != *tc.msg.ID {
				t.Fatalf("error does not echo id: %s", describe(e))
			}
		})
	}
	a.t = t
	a.publish("s", "valid")
	a.expect(typeControl, actJoined)
	if m := a.expect(typeData, ""); string(m.Data) != "valid" {
		t.Fatalf("got %s", describe(m))
	}
}

func TestMaxSessionsPerConnection(t *testing.T) {
	ts := startServer(t, Config{MaxSessionsPerConnection: 2})
	a := ts.open(t, "a")
	a.welcome()
	a.join("s1")
	a.join("s2")
	a.send(&streamsvc.DataMessage{Type: typeControl, Action: ptr(actJoin), SessionID: ptr("s3"), ID: ptr("j3")})
	if e := a.expect(typeControl, actError); !strings.Contains(str(e.Reason), "too many sessions") || str(e.ID) != "j3" {
		t.Fatalf("got %s", describe(e))
	}
	a.publish("s1", "still here")
	if m := a.expect(typeData, ""); string(m.Data) != "still here" {
		t.Fatalf("got %s", describe(m))
	}
}

func TestHeartbeatWhenIdle(t *testing.T) {
	ts := startServer(t, Config{HeartbeatInterval: 50 * time.Millisecond})
	a := ts.open(t, "a")
	a.welcome()
	deadline := time.After(waitTimeout)
	for {
		select {
		case m := <-a.msgs:
			if m.Type == typeHeartbeat {
				if m.Timestamp == nil {
					t.Fatal("heartbeat without timestamp")
				}
				return
			}
		case <-deadline:
			t.Fatal("no heartbeat")
		}
	}
}

func TestSilentClientIsProbedThenEnded(t *testing.T) {
	ts := startServer(t, Config{MaxInactivity: 100 * time.Millisecond, ProbeTimeout: 100 * time.Millisecond})
	quiet, chatty := ts.open(t, "quiet"), ts.open(t, "chatty")
	quiet.welcome()
	chatty.welcome()
	quiet.expect(typeHealthCheck, "")
	// chatty answers its probes; quiet does not.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case m := <-chatty.msgs:
				if m.Type == typeHealthCheck {
					_ = chatty.stream.Send(&streamsvc.DataMessage{Type: typeHeartbeat})
				}
			}
		}
	}()
	err := quiet.end()
	if errorName(err) != "unavailable" || !strings.Contains(err.Error(), "inactive") {
		t.Fatalf("silent client ended with %v", err)
	}
	eventually(t, "inactive disconnect counted", func() bool { return ts.metrics.disconnected("inactive") == 1 })
	eventually(t, "only chatty connected", func() bool { return ts.svc.Connections() == 1 })
}

func TestHalfCloseFlushesThenEndsOK(t *testing.T) {
	ts := startServer(t, Config{})
	a := ts.open(t, "a")
	a.welcome()
	a.join("room")
	a.publish("room", "last words")
	if err := a.stream.Close(); err != nil {
		t.Fatal(err)
	}
	if m := a.expect(typeData, ""); string(m.Data) != "last words" {
		t.Fatalf("got %s", describe(m))
	}
	if err := a.end(); err != nil {
		t.Fatalf("half-closed stream ended with %v, want OK", err)
	}
}
