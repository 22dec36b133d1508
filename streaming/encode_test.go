package streaming

import (
	"context"
	"testing"
	"time"

	streampb "github.com/streamhub/streamhub/gen/grpc/stream_service/pb"
	streamsvr "github.com/streamhub/streamhub/gen/grpc/stream_service/server"
	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	"google.golang.org/protobuf/proto"
)

// A delivery encoded once per publish is, field by field, what the
// generated code encodes for the same message.
func TestEncodedDeliveryIsTheGeneratedEncoding(t *testing.T) {
	svc := &Service{cfg: Config{}.withDefaults(), metrics: nopMetrics{}}
	svc.budget = &budget{limit: svc.cfg.MemoryBudget}
	r := newSessions(svc.cfg, svc.budget)
	s := r.lock("room")
	s.mu.Unlock()
	from := newConn(svc, "alice", nil, context.Background(), "", time.Now())
	for i, msg := range []*streamsvc.DataMessage{
		{Type: typeData, SessionID: s.name, Data: []byte("hello"), ID: ptr("m1")},
		{Type: typeData, SessionID: s.name},                 // no data, no id
		{Type: typeData, SessionID: s.name, Data: []byte{}}, // empty data
		{Type: typeData, SessionID: s.name, Data: make([]byte, 70000), ID: ptr("big")},
	} {
		if err := s.publish(r, from, msg); err != nil {
			t.Fatal(err)
		}
		e := s.hist.tail
		var got streampb.StreamDataResponse
		if err := proto.Unmarshal(e.enc.Bytes(), &got); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		want := streamsvr.NewProtoDataMessageStreamDataResponse(&e.Msg)
		if !proto.Equal(&got, want) {
			t.Fatalf("message %d:\n got %v\nwant %v", i, &got, want)
		}
		if *got.Seq != uint64(i+1) || got.Timestamp == nil || (msg.Data == nil) != (got.Data == nil) {
			t.Fatalf("message %d: %v", i, &got)
		}
	}
}

// Clients see the same deliveries whether they were encoded once or for
// every member.
func TestEncodedAndPlainDeliveriesAgree(t *testing.T) {
	run := func(ts *testServer) []*streamsvc.DataMessage {
		pub := ts.open(t, "pub")
		pub.welcome()
		pub.join("room")
		pub.publishN("room", 3)
		x := ts.open(t, "x")
		x.welcome()
		x.send(joinMsg("room", ptr(uint64(0)), nil))
		x.expect(typeControl, actJoined)
		pub.send(&streamsvc.DataMessage{Type: typeData, SessionID: ptr("room"), Data: []byte("live"), ID: ptr("id")})
		var got []*streamsvc.DataMessage
		for range 4 {
			got = append(got, x.expect(typeData, ""))
		}
		return got
	}
	encoded, plainOnes := run(startServer(t, Config{})), run(startServer(t, Config{}, plain))
	for i := range encoded {
		a, b := encoded[i], plainOnes[i]
		if *a.Seq != *b.Seq || string(a.Data) != string(b.Data) || str(a.ID) != str(b.ID) ||
			str(a.ClientID) != str(b.ClientID) || str(a.SessionID) != str(b.SessionID) || a.Timestamp == nil || a.Epoch == nil {
			t.Fatalf("delivery %d: encoded %s seq %d, plain %s seq %d", i, describe(a), *a.Seq, describe(b), *b.Seq)
		}
	}
}

// discardSender takes encoded deliveries and drops them.
type discardSender struct{ sent int }

func (d *discardSender) SendMsg(any) error { d.sent++; return nil }

// A delivery costs no allocation on StreamHub's side: the cursor moves,
// the shared encoding goes out, the counts are batched per pass.
func TestDeliveryDoesNotAllocate(t *testing.T) {
	svc := &Service{cfg: Config{}.withDefaults(), metrics: nopMetrics{}}
	svc.budget = &budget{limit: svc.cfg.MemoryBudget}
	r := newSessions(svc.cfg, svc.budget)
	s := r.lock("room")
	s.mu.Unlock()
	from := newConn(svc, "pub", nil, context.Background(), "", time.Now())
	c := newConn(svc, "c", nil, context.Background(), "", time.Now())
	out := &discardSender{}
	c.raw = out
	m := &member{sess: s}
	c.activate(m, 0)
	for range deliverBatch {
		if err := s.publish(r, from, &streamsvc.DataMessage{Type: typeData, SessionID: s.name, Data: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	start := m.at
	allocs := testing.AllocsPerRun(100, func() {
		m.at = start
		if sent, ok := c.deliver(deliverBatch); !sent || !ok {
			t.Fatal("nothing delivered")
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per pass of %d deliveries", allocs, deliverBatch)
	}
	if out.sent < 100*deliverBatch {
		t.Fatalf("%d sent", out.sent)
	}
}
