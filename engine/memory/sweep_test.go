package memory

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/streamhub/streamhub/engine"
)

func TestSweepDropsForgottenSessions(t *testing.T) {
	e, err := New(Options{Bounds: engine.Bounds{Size: 10, TTL: time.Minute, MetaTTL: 2 * time.Minute}, SweepInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	for _, name := range []string{"old", "kept"} {
		if _, err := e.Publish(ctx, name, engine.Publication{Data: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Subscribe(ctx, "kept"); err != nil {
		t.Fatal(err)
	}
	e.sweep(time.Now().Add(90 * time.Second)) // history aged out, meta not yet
	if n := len(e.sessions); n != 2 {
		t.Fatalf("%d sessions after their history aged out, want 2: meta outlives history", n)
	}
	if e.sessions["old"].history.n != 0 {
		t.Fatalf("the sweep left aged history in memory")
	}
	e.sweep(time.Now().Add(3 * time.Minute))
	if _, ok := e.sessions["old"]; ok || len(e.sessions) != 1 {
		t.Fatalf("sessions after meta expiry: %v, want only the subscribed one", e.sessions)
	}
	_, pos, err := e.History(ctx, "old", 0, -1)
	if err != nil || pos.Seq != 0 {
		t.Fatalf("a swept session reads as %+v, %v; want seq 0", pos, err)
	}
}

func TestHandlerIsCalledBeforePublishReturns(t *testing.T) {
	var got []uint64
	h := engine.HandlerFuncs{Entry: func(_ string, e engine.Entry) { got = append(got, e.Seq) }}
	e, err := New(Options{Bounds: engine.Bounds{Size: 10}, Handler: h})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	if err := e.Subscribe(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if _, err := e.Publish(ctx, "s", engine.Publication{}); err != nil {
			t.Fatal(err)
		}
		if len(got) != i || got[i-1] != uint64(i) {
			t.Fatalf("after publish %d the handler had %v", i, got)
		}
	}
}

func TestObserverAndBounds(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Fatalf("New accepted Bounds.Size 0")
	}
	var mu sync.Mutex
	seen := map[string]string{}
	obs := func(op string, err error, took time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		if took < 0 {
			t.Errorf("negative duration for %s", op)
		}
		seen[op] = engine.Result(err)
	}
	e, err := New(Options{Bounds: engine.Bounds{Size: 1}, Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, _ = e.Publish(ctx, "s", engine.Publication{})
	_, _, _ = e.History(ctx, "s", 0, 1)
	_ = e.Subscribe(ctx, "s")
	_ = e.Unsubscribe(ctx, "s")
	_ = e.Touch(ctx, time.Minute, "s")
	_ = e.Close()
	_ = e.Remove(ctx, "s")
	if !errors.Is(e.Remove(ctx, "s"), engine.ErrClosed) {
		t.Errorf("Remove after Close did not fail with ErrClosed")
	}
	want := map[string]string{engine.OpPublish: "ok", engine.OpHistory: "ok", engine.OpSubscribe: "ok", engine.OpUnsubscribe: "ok", engine.OpTouch: "ok", engine.OpRemove: "closed"}
	mu.Lock()
	defer mu.Unlock()
	for op, res := range want {
		if seen[op] != res {
			t.Errorf("observer saw %s → %q, want %q", op, seen[op], res)
		}
	}
}
