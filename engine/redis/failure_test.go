package redis_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/streamhub/streamhub/engine"
	"github.com/streamhub/streamhub/engine/enginetest"
	"github.com/streamhub/streamhub/internal/redistest"
)

// TestRedisStoppedThenRestartedEmpty: a dead Redis turns into ErrUnavailable
// within the configured timeout; a Redis back on the same port without its
// data gives the session a new epoch, publishing works again, and the lost
// Pub/Sub connection comes back with a resync.
func TestRedisStoppedThenRestartedEmpty(t *testing.T) {
	srv := redistest.Start(t)
	rec := enginetest.NewRecorder()
	e := open(t, srv, engine.Bounds{Size: 100}, rec)
	ctx := context.Background()
	if err := e.Subscribe(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	before, err := e.Publish(ctx, "s", engine.Publication{Data: []byte("a")})
	if err != nil {
		t.Fatal(err)
	}

	srv.Kill()
	start := time.Now()
	_, err = e.Publish(ctx, "s", engine.Publication{Data: []byte("b")})
	if !errors.Is(err, engine.ErrUnavailable) {
		t.Fatalf("Publish with Redis down: %v, want ErrUnavailable", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Publish with Redis down took %v; the timeout is 1s", took)
	}
	if _, _, err := e.History(ctx, "s", 0, -1); !errors.Is(err, engine.ErrUnavailable) {
		t.Fatalf("History with Redis down: %v, want ErrUnavailable", err)
	}
	if err := e.Subscribe(ctx, "other"); !errors.Is(err, engine.ErrUnavailable) {
		t.Fatalf("Subscribe with Redis down: %v, want ErrUnavailable", err)
	}

	srv.Restart()
	var after engine.Entry
	enginetest.Eventually(t, "publishing to work again", func() bool {
		after, err = e.Publish(ctx, "s", engine.Publication{Data: []byte("c")})
		return err == nil
	})
	if after.Epoch == before.Epoch || after.Seq != 1 {
		t.Fatalf("after Redis lost its data: seq %d epoch %q; want seq 1 in a new epoch (was %q)", after.Seq, after.Epoch, before.Epoch)
	}
	enginetest.Eventually(t, "HandleResync after the Pub/Sub connection came back", func() bool {
		return rec.Resyncs() > 0
	})
	// Live delivery works again for the session subscribed before the outage.
	enginetest.Eventually(t, "a publish to reach the handler again", func() bool {
		ent, err := e.Publish(ctx, "s", engine.Publication{Data: []byte("d")})
		if err != nil {
			return false
		}
		for _, got := range rec.Entries("s") {
			if got.Epoch == ent.Epoch {
				return true
			}
		}
		return false
	})
}

// TestRedisHung: a Redis that stops answering without closing its
// connections turns into ErrUnavailable within about the timeout, and
// publishing works again once it answers.
func TestRedisHung(t *testing.T) {
	srv := redistest.Start(t)
	e := open(t, srv, engine.Bounds{Size: 100}, nil)
	ctx := context.Background()
	before, err := e.Publish(ctx, "s", engine.Publication{Data: []byte("a")})
	if err != nil {
		t.Fatal(err)
	}
	srv.Freeze()
	start := time.Now()
	_, err = e.Publish(ctx, "s", engine.Publication{Data: []byte("b")})
	took := time.Since(start)
	srv.Thaw()
	if !errors.Is(err, engine.ErrUnavailable) {
		t.Fatalf("Publish to a hung Redis: %v, want ErrUnavailable", err)
	}
	if took > 5*time.Second {
		t.Fatalf("Publish to a hung Redis took %v; the timeout is 1s", took)
	}
	var after engine.Entry
	enginetest.Eventually(t, "publishing to work again", func() bool {
		after, err = e.Publish(ctx, "s", engine.Publication{Data: []byte("c")})
		return err == nil
	})
	// The script that timed out may or may not have run: seq goes on in the
	// same epoch either way, since Redis kept its data.
	if after.Epoch != before.Epoch || after.Seq < 2 || after.Seq > 3 {
		t.Fatalf("after a hang: seq %d epoch %q; want 2 or 3 in %q", after.Seq, after.Epoch, before.Epoch)
	}
}

// TestPubSubConnectionKilled: when Redis drops the Pub/Sub connection the
// engine reconnects, resubscribes, says HandleResync, and later publishes
// reach the handler again.
func TestPubSubConnectionKilled(t *testing.T) {
	srv := redistest.Start(t)
	rec := enginetest.NewRecorder()
	e := open(t, srv, engine.Bounds{Size: 100}, rec)
	ctx := context.Background()
	if err := e.Subscribe(ctx, "a", "b"); err != nil {
		t.Fatal(err)
	}
	admin, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{srv.Addr()}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	n, err := admin.Do(ctx, admin.B().ClientKill().TypePubsub().Build()).AsInt64()
	if err != nil || n < 1 {
		t.Fatalf("CLIENT KILL TYPE pubsub: killed %d, %v", n, err)
	}
	enginetest.Eventually(t, "HandleResync after the kill", func() bool { return rec.Resyncs() > 0 })
	for _, s := range []string{"a", "b"} {
		ent, err := e.Publish(ctx, s, engine.Publication{Data: []byte(s)})
		if err != nil {
			t.Fatal(err)
		}
		rec.WaitFor(t, s, 1)
		if got := rec.Entries(s)[0]; got.Seq != ent.Seq || got.Epoch != ent.Epoch {
			t.Fatalf("session %s: handler got %+v, published %+v", s, got, ent)
		}
	}
}

// TestPipelinedBurst: 10,000 publishes from many goroutines at once (rueidis
// pipelines them) get seqs 1..10,000, all in history and, on a quiet engine,
// all at the handler in order.
func TestPipelinedBurst(t *testing.T) {
	const goroutines, each = 50, 200
	const n = goroutines * each
	srv := redistest.Start(t)
	rec := enginetest.NewRecorder()
	e := open(t, srv, engine.Bounds{Size: n}, rec)
	ctx := context.Background()
	if err := e.Subscribe(ctx, "burst"); err != nil {
		t.Fatal(err)
	}
	seen := make([]bool, n+1)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				ent, err := e.Publish(ctx, "burst", engine.Publication{ClientID: fmt.Sprint(g), ID: fmt.Sprint(i)})
				if err != nil {
					t.Errorf("Publish: %v", err)
					return
				}
				mu.Lock()
				if ent.Seq < 1 || ent.Seq > n || seen[ent.Seq] {
					t.Errorf("seq %d out of range or assigned twice", ent.Seq)
				} else {
					seen[ent.Seq] = true
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	hist, pos, err := e.History(ctx, "burst", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	if pos.Seq != n || len(hist) != n {
		t.Fatalf("after the burst: position %d with %d entries, want %d and %d", pos.Seq, len(hist), n, n)
	}
	for i, h := range hist {
		if h.Seq != uint64(i+1) {
			t.Fatalf("history[%d] has seq %d", i, h.Seq)
		}
	}
	rec.WaitFor(t, "burst", n)
	for i, h := range rec.Entries("burst") {
		if h.Seq != uint64(i+1) {
			t.Fatalf("handler entry %d has seq %d: out of order", i, h.Seq)
		}
	}
}

// TestSlowHandlerGetsResync: when the handler cannot keep up and a worker's
// queue overflows, entries are dropped and HandleResync says so.
func TestSlowHandlerGetsResync(t *testing.T) {
	srv := redistest.Start(t)
	release := make(chan struct{})
	var resyncs sync.WaitGroup
	resyncs.Add(1)
	var once sync.Once
	h := engine.HandlerFuncs{
		Entry:  func(string, engine.Entry) { <-release },
		Resync: func() { once.Do(resyncs.Done) },
	}
	e := openWith(t, srv, engine.Bounds{Size: 10}, h, 1, 2)
	defer close(release)
	ctx := context.Background()
	if err := e.Subscribe(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if _, err := e.Publish(ctx, "s", engine.Publication{}); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan struct{})
	go func() { resyncs.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(enginetest.Wait):
		t.Fatalf("no HandleResync after the handler's queue overflowed")
	}
}
