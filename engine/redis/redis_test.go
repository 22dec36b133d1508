package redis_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

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

func TestConformance(t *testing.T) {
	srv := redistest.Start(t)
	enginetest.Run(t, func(t *testing.T, b engine.Bounds, h engine.Handler) engine.Engine {
		return open(t, srv, b, h)
	})
}
