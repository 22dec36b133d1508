package streaming

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"
	streamsvc "github.com/streamhub/streamhub/gen/stream_service"

	"github.com/streamhub/streamhub/engine"
	"github.com/streamhub/streamhub/engine/memory"
	"github.com/streamhub/streamhub/internal/redistest"
)

// testEngine is the engine every test server shares its sessions through
// when STREAMHUB_TEST_ENGINE says so ("memory" or "redis"): the whole
// single-instance contract then runs against it. Empty: the service's own
// history, the default.
var testEngine = os.Getenv("STREAMHUB_TEST_ENGINE")

var instanceSeq atomic.Int64

// engineOption returns the option that makes a service share its sessions
// through a new engine of the given kind ("memory" or "redis"), on rd for
// redis (nil: a Redis of the test's own), with the service's history
// bounds, closed when the test ends.
func engineOption(t testing.TB, kind string, cfg Config, rd *redistest.Server) Option {
	t.Helper()
	instance := fmt.Sprintf("instance-%d", instanceSeq.Add(1))
	var eng engine.Engine
	var relay *engine.Relay
	switch kind {
	case "memory":
		relay = new(engine.Relay)
		mem, err := memory.New(memory.Options{Bounds: EngineBounds(cfg), Handler: relay, Instance: instance})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = mem.Close() })
		eng = mem
	case "redis":
		if rd == nil {
			rd = redistest.Start(t)
		}
		eng, relay = rd.Engine(EngineBounds(cfg), instance)
	default:
		t.Fatalf("unknown engine %q", kind)
	}
	return func(s *Service) {
		WithEngine(eng, instance)(s)
		relay.Set(s)
	}
}

// member opens a stream as clientID, reads its welcome and joins session
// live.
func (ts *testServer) member(t *testing.T, clientID, session string) *testClient {
	t.Helper()
	c := ts.open(t, clientID)
	c.welcome()
	c.join(session)
	return c
}

// publishAsync publishes n messages to session from another goroutine,
// without waiting: each with its index as id and data.
func (c *testClient) publishAsync(session string, n int) {
	go func() {
		for k := range n {
			if c.stream.Send(&streamsvc.DataMessage{Type: typeData, SessionID: &session, ID: ptr(fmt.Sprint(k)), Data: []byte(fmt.Sprint(k))}) != nil {
				return
			}
		}
	}()
}

// cluster is several instances sharing one Redis.
type cluster struct {
	redis *redistest.Server
	nodes []*node
}

// node is one instance of a cluster.
type node struct {
	*testServer
	eng engine.Engine
}

// startCluster starts n instances of cfg on one Redis.
func startCluster(t *testing.T, n int, cfg Config) *cluster {
	t.Helper()
	cl := &cluster{redis: redistest.Start(t)}
	for range n {
		cl.nodes = append(cl.nodes, cl.start(t, cfg))
	}
	return cl
}

// start starts one more instance.
func (cl *cluster) start(t *testing.T, cfg Config) *node {
	t.Helper()
	var eng engine.Engine
	opt := engineOption(t, "redis", cfg, cl.redis)
	ts := startServerWith(t, cfg, []Option{opt, func(s *Service) { eng = s.shared.eng }})
	return &node{testServer: ts, eng: eng}
}

// crash ends the instance as a crash would, as far as the others can tell:
// it stops talking to Redis (no goodbye, no last save, its liveness lapses)
// and every connection to it is cut.
func (n *node) crash() {
	_ = n.eng.Close()
	n.grpc.Stop()
}

func (ts *testServer) isShared() bool { return ts.svc.shared != nil }

func notShared(t *testing.T, why string) {
	t.Helper()
	if testEngine != "" {
		t.Skip("not with a shared engine: " + why)
	}
}

// TestInstancesShareOneOrder has publishers on three instances publish into
// one session at once: every member, on every instance, receives the same
// gapless sequence.
func TestInstancesShareOneOrder(t *testing.T) {
	cl := startCluster(t, 3, Config{})
	const perPublisher = 100
	var members, publishers []*testClient
	for i, n := range cl.nodes {
		members = append(members, n.member(t, fmt.Sprint("member", i), "room"))
		publishers = append(publishers, n.member(t, fmt.Sprint("publisher", i), "room"))
	}
	for _, p := range publishers {
		p.publishAsync("room", perPublisher)
	}
	total := uint64(perPublisher * len(publishers))
	var order []string
	for i, m := range members {
		for seq := uint64(1); seq <= total; seq++ {
			d := m.expect(typeData, "")
			if *d.Seq != seq {
				t.Fatalf("member %d got seq %d, want %d", i, *d.Seq, seq)
			}
			key := str(d.ClientID) + "/" + str(d.ID)
			if i == 0 {
				order = append(order, key)
			} else if order[seq-1] != key {
				t.Fatalf("member %d got %s at seq %d, member 0 got %s", i, key, seq, order[seq-1])
			}
		}
	}
}

// TestJoinAtAPositionReadsSharedHistory joins, on one instance, at a
// position in what was published on another.
func TestJoinAtAPositionReadsSharedHistory(t *testing.T) {
	cl := startCluster(t, 2, Config{})
	a, b := cl.nodes[0], cl.nodes[1]
	p := a.member(t, "p", "room")
	p.publishN("room", 10)

	j := b.open(t, "j")
	j.welcome()
	j.send(joinMsg("room", ptr(uint64(3)), nil))
	r := j.expect(typeControl, actJoined)
	if *r.Seq != 10 || !*r.Recovered {
		t.Fatalf("joined seq %d recovered %v, want 10 and true", *r.Seq, *r.Recovered)
	}
	j.expectSeqs("room", 4, 10)
	p.publish("room", "live")
	j.expectSeqs("room", 11, 11)
}

// TestReplaceAcrossInstances opens a client's second stream on another
// instance: the first gets goaway replaced, the second its memberships.
func TestReplaceAcrossInstances(t *testing.T) {
	cl := startCluster(t, 2, Config{})
	a, b := cl.nodes[0], cl.nodes[1]
	p := a.member(t, "p", "room")
	x := a.member(t, "x", "room")
	p.publishN("room", 3)
	x.expectSeqs("room", 1, 3)
	x.sync() // its position is handed over

	x2 := b.open(t, "x")
	x2.welcome()
	if g := x.expect(typeControl, actGoaway); str(g.Reason) != "replaced" {
		t.Fatalf("old stream got %s", describe(g))
	}
	if err := x.end(); errorName(err) != "aborted" {
		t.Fatalf("old stream ended with %v", err)
	}
	r := x2.expect(typeControl, actJoined)
	if str(r.SessionID) != "room" || !*r.Recovered || *r.Seq != 3 {
		t.Fatalf("restored %s seq %d recovered %v", describe(r), *r.Seq, *r.Recovered)
	}
	p.publish("room", "after")
	// At least once from the last saved position: what x had may come
	// again, then what it missed, in order.
	next := x2.expect(typeData, "")
	for *next.Seq < 4 {
		next = x2.expect(typeData, "")
	}
	if *next.Seq != 4 {
		t.Fatalf("got seq %d after the replace, want 4", *next.Seq)
	}
}

// TestReplaceWhenTheOldInstanceIsDead opens a client's stream on another
// instance after the one it was on crashed: its welcome and memberships
// come at once, and nothing published meanwhile is lost.
func TestReplaceWhenTheOldInstanceIsDead(t *testing.T) {
	cl := startCluster(t, 2, Config{})
	a, b := cl.nodes[0], cl.nodes[1]
	p := b.member(t, "p", "room")
	x := a.member(t, "x", "room")
	p.publishN("room", 5)
	x.expectSeqs("room", 1, 5)
	// Wait for a periodic save to carry the position.
	eventually(t, "position saved", func() bool {
		ms, err := b.eng.LoadMemberships(context.Background(), "x")
		return err == nil && len(ms) == 1 && ms[0].Seq == 5
	})
	a.crash()
	p.publishN("room", 5) // while x is away

	start := time.Now()
	x2 := b.open(t, "x")
	x2.welcome()
	r := x2.expect(typeControl, actJoined)
	if took := time.Since(start); took > time.Second {
		t.Fatalf("welcome and restore took %v", took)
	}
	if str(r.SessionID) != "room" || !*r.Recovered {
		t.Fatalf("restored %s recovered %v", describe(r), *r.Recovered)
	}
	x2.expectSeqs("room", 6, 10)
}

// TestResumeAfterAnInstanceCrash has a client whose instance crashed
// reconnect to another: delivery resumes from the last saved position,
// at least once, nothing lost.
func TestResumeAfterAnInstanceCrash(t *testing.T) {
	cl := startCluster(t, 2, Config{})
	a, b := cl.nodes[0], cl.nodes[1]
	p := b.member(t, "p", "room")
	x := a.member(t, "x", "room")
	p.publishAsync("room", 200)
	var got uint64
	for got < 50 {
		got = *x.expect(typeData, "").Seq
	}
	a.crash()
	x2 := b.open(t, "x")
	x2.welcome()
	r := x2.expect(typeControl, actJoined)
	if !*r.Recovered {
		t.Fatalf("restored %s recovered false", describe(r))
	}
	seen := uint64(0)
	for seen < 200 {
		d := x2.expect(typeData, "")
		switch {
		case seen == 0 && *d.Seq > got+1:
			t.Fatalf("resumed at seq %d, after %d was handed over: lost", *d.Seq, got)
		case seen != 0 && *d.Seq != seen+1:
			t.Fatalf("got seq %d after %d", *d.Seq, seen)
		}
		seen = *d.Seq
	}
}

// TestRedisRestartedEmptyStartsANewEpoch restarts Redis without its data:
// members learn that their session restarted (joined, recovered false,
// the new epoch), and publishing works again without restarting StreamHub.
func TestRedisRestartedEmptyStartsANewEpoch(t *testing.T) {
	cl := startCluster(t, 2, Config{})
	a, b := cl.nodes[0], cl.nodes[1]
	p := a.open(t, "p")
	p.welcome()
	first := p.join("room")
	m := b.member(t, "m", "room")
	p.publishN("room", 3)
	m.expectSeqs("room", 1, 3)

	cl.redis.Kill()
	cl.redis.Restart()
	for _, c := range []*testClient{p, m} {
		r := c.expect(typeControl, actJoined)
		if *r.Recovered || str(r.Epoch) == str(first.Epoch) {
			t.Fatalf("after Redis lost its data: %s recovered %v epoch %s", describe(r), *r.Recovered, str(r.Epoch))
		}
	}
	eventually(t, "the engine answers again", func() bool { return a.svc.EngineErr() == nil && b.svc.EngineErr() == nil })
	p.publish("room", "again")
	for _, c := range []*testClient{p, m} {
		d := c.expect(typeData, "")
		if *d.Seq != 1 || str(d.Epoch) == str(first.Epoch) {
			t.Fatalf("first message after the restart: seq %d epoch %s", *d.Seq, str(d.Epoch))
		}
	}
}

// TestRedisDownThenBack stops Redis: publishes get an error naming the
// engine, the instance says the engine is unavailable, open streams stay
// open; once Redis is back, delivery resumes where each member was.
func TestRedisDownThenBack(t *testing.T) {
	cl := startCluster(t, 2, Config{})
	a, b := cl.nodes[0], cl.nodes[1]
	p := a.member(t, "p", "room")
	m := b.member(t, "m", "room")
	p.publishN("room", 2)
	m.expectSeqs("room", 1, 2)

	cl.redis.Freeze()
	p.send(&streamsvc.DataMessage{Type: typeData, SessionID: ptr("room"), ID: ptr("lost"), Data: []byte("x")})
	e := p.expect(typeControl, actError)
	if str(e.ID) != "lost" || !strings.Contains(str(e.Reason), "engine") {
		t.Fatalf("publish while Redis is down: %s id %s", describe(e), str(e.ID))
	}
	eventually(t, "the engine reported unavailable", func() bool { return a.svc.EngineErr() != nil })
	cl.redis.Thaw()
	eventually(t, "the engine answers again", func() bool { return a.svc.EngineErr() == nil })
	p.publish("room", "back")
	m.expectSeqs("room", 3, 3)
	p.expectSeqs("room", 3, 3)
}

// TestPubSubConnectionKilledLosesNothing kills the instances' Pub/Sub
// connections in Redis while publishing: the entries the live feed lost
// are read from history, in order, before anything after them.
func TestPubSubConnectionKilledLosesNothing(t *testing.T) {
	cl := startCluster(t, 2, Config{})
	a, b := cl.nodes[0], cl.nodes[1]
	p := a.member(t, "p", "room")
	m := b.member(t, "m", "room")
	const total = 300
	p.publishAsync("room", total)
	for seq := uint64(1); seq <= total; seq++ {
		if seq == 50 || seq == 150 {
			killPubSub(t, cl.redis)
		}
		if d := m.expect(typeData, ""); *d.Seq != seq {
			t.Fatalf("got seq %d, want %d", *d.Seq, seq)
		}
	}
}

// killPubSub kills every Pub/Sub connection of the Redis.
func killPubSub(t *testing.T, rd *redistest.Server) {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{rd.Addr()}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Do(context.Background(), c.B().ClientKill().TypePubsub().Build()).Error(); err != nil {
		t.Fatal(err)
	}
}

// TestClaimFailureEndsTheReplacedStream opens a client's second stream
// while Redis does not answer: the new stream fails UNAVAILABLE, and the
// one it replaced ends too (it was replaced all the same) instead of
// running on outside the pool; the service still shuts down in time.
func TestClaimFailureEndsTheReplacedStream(t *testing.T) {
	cl := startCluster(t, 1, Config{})
	a := cl.nodes[0]
	x := a.member(t, "x", "room")
	cl.redis.Freeze()
	x2 := a.open(t, "x")
	if err := x2.end(); err == nil || !strings.Contains(err.Error(), "Unavailable") {
		t.Fatalf("the new stream ended with %v", err)
	}
	if err := x.end(); err == nil {
		t.Fatal("the replaced stream ended OK")
	}
	cl.redis.Thaw()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.svc.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// TestStaleStreamDoesNotTakeTheClientBack has a newer stream of x claim,
// save and end elsewhere without the notice reaching x's instance: x's
// next save finds it fenced and ends x as replaced, leaving what the newer
// stream saved as it was.
func TestStaleStreamDoesNotTakeTheClientBack(t *testing.T) {
	cl := startCluster(t, 1, Config{})
	a := cl.nodes[0]
	x := a.member(t, "x", "room")
	x.join("keep")
	ctx := context.Background()
	eng := a.eng
	fence, _, err := eng.Claim(ctx, "x", "ghost", time.Now()) // no such instance: no notice
	if err != nil {
		t.Fatal(err)
	}
	saved := []engine.Membership{{Session: "room", Epoch: "e"}}
	if err := eng.SaveMemberships(ctx, "x", fence, saved); err != nil {
		t.Fatal(err)
	}
	if _, err := eng.Release(ctx, "x", "ghost", fence); err != nil {
		t.Fatal(err)
	}
	// A change, so a save at once, unless the periodic one came first and
	// the stream is already ending.
	_ = x.stream.Send(&streamsvc.DataMessage{Type: typeControl, Action: ptr(actLeave), SessionID: ptr("keep")})
	for m := x.next(); !(m.Type == typeControl && str(m.Action) == actGoaway); m = x.next() {
	}
	if err := x.end(); errorName(err) != "aborted" {
		t.Fatalf("x ended with %v", err)
	}
	ms, err := eng.LoadMemberships(ctx, "x")
	if err != nil || len(ms) != 1 || ms[0].Session != "room" || ms[0].Epoch != "e" {
		t.Fatalf("stored memberships %+v (%v), want what the newer stream saved", ms, err)
	}
}

// TestRefusalAfterHalfClose publishes while Redis does not answer, then
// half-closes: the publish's error reaches the client before the stream
// ends, as it does without an engine.
func TestRefusalAfterHalfClose(t *testing.T) {
	cl := startCluster(t, 1, Config{})
	a := cl.nodes[0]
	x := a.member(t, "x", "room")
	cl.redis.Freeze()
	defer cl.redis.Thaw()
	x.send(&streamsvc.DataMessage{Type: typeData, SessionID: ptr("room"), ID: ptr("lost"), Data: []byte("x")})
	if err := x.stream.Close(); err != nil {
		t.Fatal(err)
	}
	e := x.expect(typeControl, actError)
	if str(e.ID) != "lost" || !strings.Contains(str(e.Reason), "engine") {
		t.Fatalf("got %s id %s", describe(e), str(e.ID))
	}
	if err := x.end(); err != nil {
		t.Fatalf("stream ended with %v", err)
	}
}
