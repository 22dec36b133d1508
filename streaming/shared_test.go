package streaming

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/streamhub/streamhub/engine"
	"github.com/streamhub/streamhub/engine/memory"
	"github.com/streamhub/streamhub/engine/redis"
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
	cfg = cfg.withDefaults()
	instance := fmt.Sprintf("instance-%d", instanceSeq.Add(1))
	relay := new(engine.Relay)
	bounds := engine.Bounds{Size: cfg.HistorySize, MaxBytes: cfg.HistoryMaxBytes, TTL: cfg.HistoryTTL}
	var eng engine.Engine
	var err error
	switch kind {
	case "memory":
		eng, err = memory.New(memory.Options{Bounds: bounds, Handler: relay, Instance: instance})
	case "redis":
		if rd == nil {
			rd = redistest.Start(t)
		}
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		eng, err = redis.New(ctx, redis.Options{Addr: rd.Addr(), Prefix: "test", Bounds: bounds, Handler: relay, Instance: instance})
	default:
		t.Fatalf("unknown engine %q", kind)
	}
	if err != nil {
		t.Fatal(err)
	}
	// Cleanups run last first: the service shuts down before this closes
	// the engine.
	t.Cleanup(func() { _ = eng.Close() })
	return func(s *Service) {
		WithEngine(eng, instance)(s)
		relay.Set(s)
	}
}

// cluster is several instances sharing one Redis.
type cluster struct {
	redis     *redistest.Server
	instances []*testServer
}

// startCluster starts n instances of cfg on one Redis.
func startCluster(t *testing.T, n int, cfg Config) *cluster {
	t.Helper()
	cl := &cluster{redis: redistest.Start(t)}
	for range n {
		cl.instances = append(cl.instances, cl.start(t, cfg))
	}
	return cl
}

// start starts one more instance.
func (cl *cluster) start(t *testing.T, cfg Config) *testServer {
	t.Helper()
	return startServerWith(t, cfg, []Option{engineOption(t, "redis", cfg, cl.redis)})
}

func (ts *testServer) isShared() bool { return ts.svc.shared != nil }

func notShared(t *testing.T, why string) {
	t.Helper()
	if testEngine != "" {
		t.Skip("not with a shared engine: " + why)
	}
}

var _ = strings.Contains
