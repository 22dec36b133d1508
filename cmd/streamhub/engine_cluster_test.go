package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	streamsvcc "github.com/streamhub/streamhub/gen/grpc/stream_service/client"
	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	"github.com/streamhub/streamhub/internal/redistest"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// The tests here run what SPEC §9 promises of several instances on one
// Redis, end to end through the server as main builds it.

// TestTwoInstancesShareASession: members of one session on two instances
// get each other's messages, with the same seq, epoch, sender, id and
// accept time on both.
func TestTwoInstancesShareASession(t *testing.T) {
	r := redistest.Start(t)
	a := startMain(t, redisArgs(r)...)
	b := startMain(t, redisArgs(r)...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	room, join := "room", "join"

	bob := openStream(t, ctx, dialPlain(t, b), "bob")
	bobMsgs := messages(ctx, bob)
	if err := bob.Send(&streamsvc.DataMessage{Type: "control", Action: &join, SessionID: &room}); err != nil {
		t.Fatal(err)
	}
	await(t, bobMsgs, "bob's joined on instance B", isAction("joined"))
	alice := openStream(t, ctx, dialPlain(t, a), "alice")
	aliceMsgs := messages(ctx, alice)

	var epoch string
	for i := uint64(1); i <= 3; i++ {
		id := fmt.Sprint("a", i)
		own, reason := publish(t, alice, aliceMsgs, room, id, fmt.Sprint("hello ", i))
		if own == nil {
			t.Fatalf("alice's publish %s on A refused: %s", id, reason)
		}
		if i == 1 {
			epoch = deref(own.Epoch)
		}
		got := await(t, bobMsgs, "alice's "+id+" from instance A at bob on instance B", aboutID(id))
		if got.Type != "data" {
			t.Fatalf("bob got %+v, want the delivery of %s", got, id)
		}
		for _, m := range []*streamsvc.DataMessage{own, got} {
			if deref(m.Seq) != i || deref(m.Epoch) != epoch || deref(m.ClientID) != "alice" || string(m.Data) != fmt.Sprint("hello ", i) {
				t.Errorf("delivery of %s: seq %d epoch %q from %q data %q, want seq %d epoch %q from alice",
					id, deref(m.Seq), deref(m.Epoch), deref(m.ClientID), m.Data, i, epoch)
			}
		}
		if deref(own.Timestamp) != deref(got.Timestamp) {
			t.Errorf("%s accepted at %d on A and %d on B: one accept time for all", id, deref(own.Timestamp), deref(got.Timestamp))
		}
	}

	// The other way: bob's message on B reaches alice, a member of the
	// session on A since her first publish.
	own, reason := publish(t, bob, bobMsgs, room, "b1", "hi alice")
	if own == nil {
		t.Fatalf("bob's publish on B refused: %s", reason)
	}
	got := await(t, aliceMsgs, "bob's b1 from instance B at alice on instance A", aboutID("b1"))
	if deref(own.Seq) != 4 || deref(got.Seq) != 4 || deref(got.Epoch) != epoch {
		t.Errorf("bob's message: seq %d on B, %d (epoch %q) on A, want 4 in epoch %q", deref(own.Seq), deref(got.Seq), deref(got.Epoch), epoch)
	}
}

// TestReplaceAcrossInstances: a client's new stream on another instance
// gets its welcome, and its old stream gets goaway replaced and ends.
func TestReplaceAcrossInstances(t *testing.T) {
	r := redistest.Start(t)
	a := startMain(t, redisArgs(r)...)
	b := startMain(t, redisArgs(r)...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	old := openStream(t, ctx, dialPlain(t, a), "alice")
	oldMsgs := messages(ctx, old)
	openStream(t, ctx, dialPlain(t, b), "alice") // fails the test without a welcome
	m := await(t, oldMsgs, "goaway replaced on alice's old stream on instance A", isAction("goaway"))
	if deref(m.Reason) != "replaced" {
		t.Fatalf("goaway %q, want replaced", deref(m.Reason))
	}
	awaitEnd(t, oldMsgs, "the end of alice's old stream")
}

// awaitEnd waits for the stream ch reads to end, skipping what comes
// before, and fails the test after waitTimeout.
func awaitEnd(t *testing.T, ch <-chan *streamsvc.DataMessage, what string) {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// publishEventually publishes to session until a publish is delivered, for
// up to waitTimeout: an instance whose Redis came back may refuse
// publishes until it has reconnected. It returns the delivery and how
// many publishes were refused before it.
func publishEventually(t *testing.T, st *streamsvcc.StreamDataClientStream, msgs <-chan *streamsvc.DataMessage, session, idPrefix string) (*streamsvc.DataMessage, int) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for refused := 0; ; refused++ {
		m, reason := publish(t, st, msgs, session, fmt.Sprint(idPrefix, refused), "y")
		if m != nil {
			return m, refused
		}
		if time.Now().After(deadline) {
			t.Fatalf("publishes still refused %v after Redis came back: %s", waitTimeout, reason)
		}
		time.Sleep(50 * time.Millisecond) // polling interval: the instance reconnects on its own schedule
	}
}

// TestReadinessFollowsRedis: when Redis goes away the instance is not
// ready (/readyz, gRPC health), publishes get an error naming the engine,
// open streams stay open; when Redis is back the instance is ready again
// and publishes go through.
func TestReadinessFollowsRedis(t *testing.T) {
	r := redistest.Start(t)
	s := startMain(t, redisArgs(r)...)
	admin := "http://" + s.adminAddr()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cc := dialPlain(t, s)
	alice := openStream(t, ctx, cc, "alice")
	msgs := messages(ctx, alice)
	if m, reason := publish(t, alice, msgs, "room", "before", "1"); m == nil {
		t.Fatalf("publish refused with Redis up: %s", reason)
	}

	r.Kill()
	eventually(t, "/readyz failing with Redis gone", func() bool { return httpStatus(admin+"/readyz") == http.StatusServiceUnavailable })
	eventually(t, "gRPC health NOT_SERVING with Redis gone", func() bool {
		return grpcHealth(ctx, cc) == healthpb.HealthCheckResponse_NOT_SERVING
	})
	if httpStatus(admin+"/livez") != http.StatusOK {
		t.Error("/livez failed with Redis gone: the process is alive")
	}
	m, reason := publish(t, alice, msgs, "room", "while-down", "2")
	if m != nil {
		t.Fatalf("publish with Redis gone delivered as seq %d, want an error", deref(m.Seq))
	}
	if !strings.Contains(reason, "engine") {
		t.Errorf("publish with Redis gone refused with %q, want a reason naming the engine", reason)
	}

	r.Restart()
	eventually(t, "/readyz recovering with Redis back", func() bool { return httpStatus(admin+"/readyz") == http.StatusOK })
	eventually(t, "gRPC health SERVING with Redis back", func() bool {
		return grpcHealth(ctx, cc) == healthpb.HealthCheckResponse_SERVING
	})
	publishEventually(t, alice, msgs, "room", "after") // on the stream that stayed open
}

// TestRedisRestartedEmptyGivesNewEpoch: a Redis that lost its data (a
// restart without persistence) gives the session a new epoch starting at
// seq 1, and a rejoin with the old epoch says recovered false.
func TestRedisRestartedEmptyGivesNewEpoch(t *testing.T) {
	r := redistest.Start(t)
	s := startMain(t, redisArgs(r)...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cc := dialPlain(t, s)
	alice := openStream(t, ctx, cc, "alice")
	msgs := messages(ctx, alice)
	var last *streamsvc.DataMessage
	for i := range 3 {
		m, reason := publish(t, alice, msgs, "room", fmt.Sprint("old", i), "x")
		if m == nil {
			t.Fatalf("publish refused: %s", reason)
		}
		last = m
	}
	oldEpoch, oldSeq := deref(last.Epoch), deref(last.Seq)

	r.Restart()
	first, refused := publishEventually(t, alice, msgs, "room", "new")
	// A refused publish that timed out may still have been accepted: it
	// took a seq before this one.
	if deref(first.Epoch) == oldEpoch || deref(first.Seq) < 1 || deref(first.Seq) > uint64(refused)+1 {
		t.Fatalf("first publish after Redis lost its data (after %d refused): seq %d epoch %q, want seq 1 in a new epoch (the old one was %q, up to seq %d)",
			refused, deref(first.Seq), deref(first.Epoch), oldEpoch, oldSeq)
	}

	carol := openStream(t, ctx, cc, "carol")
	carolMsgs := messages(ctx, carol)
	join, room := "join", "room"
	if err := carol.Send(&streamsvc.DataMessage{Type: "control", Action: &join, SessionID: &room, Seq: &oldSeq, Epoch: &oldEpoch}); err != nil {
		t.Fatal(err)
	}
	joined := await(t, carolMsgs, "carol's joined", isAction("joined"))
	if deref(joined.Recovered) || deref(joined.Epoch) != deref(first.Epoch) {
		t.Fatalf("rejoin at seq %d of the lost epoch %q: recovered %v, epoch %q; want recovered false and the new epoch %q",
			oldSeq, oldEpoch, deref(joined.Recovered), deref(joined.Epoch), deref(first.Epoch))
	}
}
