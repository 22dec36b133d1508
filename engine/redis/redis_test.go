package redis_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/goleak"

	"github.com/streamhub/streamhub/engine"
	"github.com/streamhub/streamhub/engine/enginetest"
	"github.com/streamhub/streamhub/engine/redis"
	"github.com/streamhub/streamhub/internal/redistest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var prefixes atomic.Int64

// open returns an engine on srv with a prefix of its own, closed at cleanup.
func open(t *testing.T, srv *redistest.Server, b engine.Bounds, h engine.Handler) *redis.Engine {
	t.Helper()
	return openWith(t, srv, b, h, 0, 0)
}

// openWith is open with a number of workers and a queue size (0: defaults).
func openWith(t *testing.T, srv *redistest.Server, b engine.Bounds, h engine.Handler, workers, queue int) *redis.Engine {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e, err := redis.New(ctx, redis.Options{
		Addr:      srv.Addr(),
		Prefix:    fmt.Sprintf("test%d", prefixes.Add(1)),
		Bounds:    b,
		Handler:   h,
		Timeout:   time.Second,
		Workers:   workers,
		QueueSize: queue,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

// openPrefixed returns an engine on srv under prefix, reporting to obs,
// closed at cleanup.
func openPrefixed(t *testing.T, srv *redistest.Server, prefix string, b engine.Bounds, obs engine.Observer) *redis.Engine {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e, err := redis.New(ctx, redis.Options{Addr: srv.Addr(), Prefix: prefix, Bounds: b, Observer: obs, Timeout: time.Second})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

// adminClient returns a plain client of srv, closed at cleanup, for tests to
// look at keys.
func adminClient(t *testing.T, srv *redistest.Server) rueidis.Client {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{srv.Addr()}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestConformance(t *testing.T) {
	srv := redistest.Start(t)
	enginetest.Run(t, func(t *testing.T, b engine.Bounds, h engine.Handler) engine.Engine {
		return open(t, srv, b, h)
	})
}

// TestPublishAfterStreamExpired: when a session's stream expired under its
// live meta (its entries had all aged out), the next publishes count bytes
// from zero: the bytes of the expired entries do not linger in the meta and
// crowd newer entries out of history.
func TestPublishAfterStreamExpired(t *testing.T) {
	srv := redistest.Start(t)
	e := openPrefixed(t, srv, "expired", engine.Bounds{Size: 100, MaxBytes: 10, TTL: 100 * time.Millisecond, MetaTTL: time.Minute}, nil)
	admin := adminClient(t, srv)
	ctx := context.Background()
	publish := func() engine.Entry {
		t.Helper()
		ent, err := e.Publish(ctx, "s", engine.Publication{Data: []byte("abcd")})
		if err != nil {
			t.Fatal(err)
		}
		return ent
	}
	first := publish()
	publish()
	// No History here: a read would trim the stream and put the count right.
	enginetest.Eventually(t, "the stream to expire", func() bool {
		n, err := admin.Do(ctx, admin.B().Exists().Key("expired:hist:{s}").Build()).AsInt64()
		return err == nil && n == 0
	})
	publish()
	last := publish()
	if last.Epoch != first.Epoch || last.Seq != 4 {
		t.Fatalf("publish after the stream expired: seq %d epoch %q, want 4 in %q", last.Seq, last.Epoch, first.Epoch)
	}
	hist, _, err := e.History(ctx, "s", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 2 || hist[0].Seq != 3 {
		t.Fatalf("history holds %d entries after the stream expired; want seqs 3 and 4 (8 bytes of at most 10)", len(hist))
	}
}

// TestPublishManyWithoutTheScript publishes a batch to a Redis that does
// not have the publish script (new, restarted, or flushed): every item runs,
// once, in order.
func TestPublishManyWithoutTheScript(t *testing.T) {
	srv := redistest.Start(t)
	e := open(t, srv, engine.Bounds{Size: 100}, nil)
	admin := adminClient(t, srv)
	ctx := context.Background()
	for round := range 2 {
		if err := admin.Do(ctx, admin.B().ScriptFlush().Build()).Error(); err != nil {
			t.Fatal(err)
		}
		ps := make([]engine.Publishing, 5)
		for i := range ps {
			ps[i] = engine.Publishing{Session: "s", Publication: engine.Publication{ID: fmt.Sprint(round, "-", i)}}
		}
		entries, errs := e.PublishMany(ctx, ps)
		for i, ent := range entries {
			if errs[i] != nil || ent.Seq != uint64(round*5+i+1) {
				t.Fatalf("round %d item %d: %+v, %v", round, i, ent, errs[i])
			}
		}
	}
	hist, _, err := e.History(ctx, "s", 0, -1)
	if err != nil || len(hist) != 10 {
		t.Fatalf("history has %d entries (%v), want 10", len(hist), err)
	}
}
