package streaming

import (
	"context"
	"strings"
	"testing"

	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
)

// panicky serves streams whose Send panics on a delivery of "boom",
// standing in for a bug on the sender's path.
type panicky struct{ *Service }

func (p panicky) StreamData(ctx context.Context, pl *streamsvc.StreamDataPayload, stream streamsvc.StreamDataServerStream) error {
	return p.Service.StreamData(ctx, pl, panickyStream{stream})
}

type panickyStream struct {
	streamsvc.StreamDataServerStream
}

func (s panickyStream) Send(m *streamsvc.DataMessage) error {
	if string(m.Data) == "boom" {
		panic("send failure")
	}
	return s.StreamDataServerStream.Send(m)
}

func TestPanicEndsOnlyItsStream(t *testing.T) {
	// Deliveries through the generated Send, which panics.
	ts := startServerWrapped(t, Config{}, func(s *Service) streamsvc.Service { return panicky{s} }, plain)
	victim, bystander := ts.open(t, "victim"), ts.open(t, "bystander")
	victim.welcome()
	bystander.welcome()
	bystander.join("room")
	victim.join("room")
	victim.join("boom")

	victim.publish("boom", "boom")
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
	for range 2 {
		if j := again.expect(typeControl, actJoined); str(j.SessionID) != "room" && str(j.SessionID) != "boom" {
			t.Fatalf("got %s", describe(j))
		}
	}
}
