package memory

import (
	"context"
	"testing"
	"time"

	"github.com/streamhub/streamhub/engine"
)

// TestTouchStoresNothingNew: Touch of a session the engine does not know,
// or knows only as a subscription, gives it neither an entry in memory nor
// meta.
func TestTouchStoresNothingNew(t *testing.T) {
	e, err := New(Options{Bounds: engine.Bounds{Size: 10, MetaTTL: time.Minute}, SweepInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	if err := e.Subscribe(ctx, "subscribed"); err != nil {
		t.Fatal(err)
	}
	if err := e.Touch(ctx, time.Hour, "ghost", "subscribed"); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.sessions["ghost"]; ok || len(e.sessions) != 1 {
		t.Fatalf("sessions after touching an unknown one: %v, want only the subscribed one", e.sessions)
	}
	if s := e.sessions["subscribed"]; s.epoch != "" || !s.kept.IsZero() {
		t.Fatalf("a subscribed session without meta got epoch %q kept until %v from Touch", s.epoch, s.kept)
	}
}

// TestTouchDoesNotReviveExpiredMeta: a meta past its MetaTTL that the sweeper
// has not dropped yet is gone for Touch too.
func TestTouchDoesNotReviveExpiredMeta(t *testing.T) {
	const metaTTL = time.Minute
	e, err := New(Options{Bounds: engine.Bounds{Size: 10, MetaTTL: metaTTL}, SweepInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	first, err := e.Publish(ctx, "s", engine.Publication{Data: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	s := e.sessions["s"]
	s.mu.Lock()
	s.touched = time.Now().Add(-2 * metaTTL) // published long ago
	s.mu.Unlock()
	if err := e.Touch(ctx, time.Hour, "s"); err != nil {
		t.Fatal(err)
	}
	_, pos, err := e.History(ctx, "s", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	if pos.Epoch == first.Epoch || pos.Seq != 0 {
		t.Fatalf("a meta touched after it expired reads as %+v; want seq 0 in a new epoch, not %q", pos, first.Epoch)
	}
}

// TestSweepKeepsTouchedSessions: the sweeper drops a session's meta MetaTTL
// after its last publish unless a Touch keeps it longer, and then once that
// has passed.
func TestSweepKeepsTouchedSessions(t *testing.T) {
	const metaTTL = 2 * time.Minute
	e, err := New(Options{Bounds: engine.Bounds{Size: 10, TTL: time.Minute, MetaTTL: metaTTL}, SweepInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	var epoch string
	for _, name := range []string{"touched", "untouched"} {
		ent, err := e.Publish(ctx, name, engine.Publication{Data: []byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		if name == "touched" {
			epoch = ent.Epoch
		}
	}
	if err := e.Touch(ctx, 10*time.Minute, "touched"); err != nil {
		t.Fatal(err)
	}
	e.sweep(time.Now().Add(5 * time.Minute))
	if _, ok := e.sessions["untouched"]; ok {
		t.Fatalf("the sweep kept a session past its MetaTTL that nobody touched")
	}
	if s := e.sessions["touched"]; s == nil || s.epoch != epoch || s.seq != 1 {
		t.Fatalf("the sweep dropped the meta of a session touched for longer than MetaTTL")
	}
	e.sweep(time.Now().Add(11 * time.Minute))
	if _, ok := e.sessions["touched"]; ok {
		t.Fatalf("the sweep kept a session past what Touch gave it")
	}
}
