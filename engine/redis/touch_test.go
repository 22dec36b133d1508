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
	"github.com/streamhub/streamhub/internal/redistest"
)

func pttl(t *testing.T, c rueidis.Client, key string) time.Duration {
	t.Helper()
	ms, err := c.Do(context.Background(), c.B().Pttl().Key(key).Build()).AsInt64()
	if err != nil {
		t.Fatalf("PTTL %s: %v", key, err)
	}
	return time.Duration(ms) * time.Millisecond
}

// TestTouchStoresNothing: Touch of sessions without meta — never used, or
// removed — leaves Redis without a key for them.
func TestTouchStoresNothing(t *testing.T) {
	srv := redistest.Start(t)
	e := openPrefixed(t, srv, "nothing", engine.Bounds{Size: 10, MetaTTL: time.Minute}, nil)
	admin := adminClient(t, srv)
	ctx := context.Background()
	if _, err := e.Publish(ctx, "removed", engine.Publication{Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if err := e.Remove(ctx, "removed"); err != nil {
		t.Fatal(err)
	}
	sessions := []string{"removed", "ghost", "b:with:colons", "c{braces}"}
	for i := range 200 {
		sessions = append(sessions, fmt.Sprint("many", i))
	}
	if err := e.Touch(ctx, time.Hour, sessions...); err != nil {
		t.Fatal(err)
	}
	keys, err := admin.Do(ctx, admin.B().Keys().Pattern("nothing:*").Build()).AsStrSlice()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 0 {
		t.Fatalf("Touch of sessions without meta left keys %v", keys)
	}
}

// TestTouchExpiries: Touch extends the meta (never shortening it, and
// leaving a meta without expiry without one), and the history stream only
// when entries do not age out, for many sessions in one call.
func TestTouchExpiries(t *testing.T) {
	srv := redistest.Start(t)
	admin := adminClient(t, srv)
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		b      engine.Bounds
		meta   func(time.Duration) bool // the meta's PTTL after Touch(time.Hour)
		stream func(time.Duration) bool // the stream's
	}{
		{
			name:   "entries age out",
			b:      engine.Bounds{Size: 10, TTL: time.Minute, MetaTTL: 2 * time.Minute},
			meta:   func(d time.Duration) bool { return d > 2*time.Minute && d <= time.Hour },
			stream: func(d time.Duration) bool { return d > 0 && d <= time.Minute },
		},
		{
			name:   "entries never age out",
			b:      engine.Bounds{Size: 10, MetaTTL: 2 * time.Minute},
			meta:   func(d time.Duration) bool { return d > 2*time.Minute && d <= time.Hour },
			stream: func(d time.Duration) bool { return d > 2*time.Minute && d <= time.Hour },
		},
		{
			name:   "meta never expires",
			b:      engine.Bounds{Size: 10},
			meta:   func(d time.Duration) bool { return d == -time.Millisecond },
			stream: func(d time.Duration) bool { return d == -time.Millisecond },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prefix := fmt.Sprintf("expiries%d", prefixes.Add(1))
			e := openPrefixed(t, srv, prefix, tc.b, nil)
			var sessions []string
			for i := range 300 {
				s := fmt.Sprint("s", i)
				sessions = append(sessions, s)
				if _, err := e.Publish(ctx, s, engine.Publication{Data: []byte("x")}); err != nil {
					t.Fatal(err)
				}
			}
			if err := e.Touch(ctx, time.Hour, sessions...); err != nil {
				t.Fatal(err)
			}
			if err := e.Touch(ctx, time.Second, sessions...); err != nil { // shorter: changes nothing
				t.Fatal(err)
			}
			for _, s := range sessions {
				if d := pttl(t, admin, prefix+":meta:{"+s+"}"); !tc.meta(d) {
					t.Fatalf("session %s: meta PTTL %v after Touch for an hour", s, d)
				}
				if d := pttl(t, admin, prefix+":hist:{"+s+"}"); !tc.stream(d) {
					t.Fatalf("session %s: stream PTTL %v after Touch for an hour", s, d)
				}
			}
		})
	}
}

// TestTouchErrorsObserved: Touch is reported to the Observer as "touch",
// fails with ErrUnavailable while Redis is down and with ErrClosed after
// Close.
func TestTouchErrorsObserved(t *testing.T) {
	srv := redistest.Start(t)
	var mu sync.Mutex
	var seen []string
	obs := func(op string, err error, _ time.Duration) {
		if op == engine.OpTouch {
			mu.Lock()
			seen = append(seen, engine.Result(err))
			mu.Unlock()
		}
	}
	e := openPrefixed(t, srv, "observed", engine.Bounds{Size: 10, MetaTTL: time.Minute}, obs)
	ctx := context.Background()
	if err := e.Touch(ctx, time.Minute, "s"); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	if err := e.Touch(ctx, time.Minute, "s"); !errors.Is(err, engine.ErrUnavailable) {
		t.Fatalf("Touch with Redis down: %v, want ErrUnavailable", err)
	}
	_ = e.Close()
	if err := e.Touch(ctx, time.Minute, "s"); !errors.Is(err, engine.ErrClosed) {
		t.Fatalf("Touch after Close: %v, want ErrClosed", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"ok", "unavailable", "closed"}; fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Fatalf("the observer saw touch → %v, want %v", seen, want)
	}
}
