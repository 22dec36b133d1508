package interceptors

import (
	"context"
	"errors"
	"testing"

	"golang.org/x/time/rate"
)

func TestThrottle(t *testing.T) {
	if th := NewThrottle(0, 1, func() { t.Error("a disabled throttle waited") }); th != nil {
		t.Fatal("a limit of 0 gave a throttle")
	}
	var none *Throttle
	for range 10 {
		if err := none.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}

	waits := 0
	th := NewThrottle(rate.Every(1e12), 2, func() { waits++ })
	for range 2 {
		if err := th.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if waits != 0 {
		t.Fatalf("%d waits within the burst", waits)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the next token is far away: the wait ends with the context
	if err := th.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if waits != 1 {
		t.Fatalf("%d waits, want 1", waits)
	}
}
