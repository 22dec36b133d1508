package redis_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/streamhub/streamhub/engine"
	"github.com/streamhub/streamhub/engine/enginetest"
	"github.com/streamhub/streamhub/engine/redis"
	"github.com/streamhub/streamhub/internal/redistest"
)

// openInstance returns an engine for instance on srv under prefix, closed at
// cleanup.
func openInstance(t *testing.T, srv *redistest.Server, prefix, instance string, h engine.Handler) *redis.Engine {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e, err := redis.New(ctx, redis.Options{
		Addr:     srv.Addr(),
		Prefix:   prefix,
		Bounds:   engine.Bounds{Size: 10},
		Handler:  h,
		Instance: instance,
		Timeout:  time.Second,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

func TestClientsConformance(t *testing.T) {
	srv := redistest.Start(t)
	enginetest.RunClients(t, func(t *testing.T) enginetest.NewInstance {
		prefix := fmt.Sprintf("test%d", prefixes.Add(1))
		return func(t *testing.T, instance string, h engine.Handler) engine.Engine {
			return openInstance(t, srv, prefix, instance, h)
		}
	})
}

// TestClientKeysShareHashTag: every key of one client carries the hash tag
// {client:<id>}, so a client's scripts touch one slot.
func TestClientKeysShareHashTag(t *testing.T) {
	srv := redistest.Start(t)
	e := openInstance(t, srv, "tag", "i0", nil)
	ctx := context.Background()
	fence, _, err := e.Claim(ctx, "alice", "i0", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.SaveMemberships(ctx, "alice", fence, []engine.Membership{{Session: "s", Seq: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := e.RetainMemberships(ctx, "alice", fence, time.Minute); err != nil {
		t.Fatal(err)
	}
	admin, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{srv.Addr()}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	keys, err := admin.Do(ctx, admin.B().Keys().Pattern("tag:*").Build()).AsStrSlice()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 {
		t.Fatalf("keys %v, want the client's owner and memberships keys", keys)
	}
	for _, k := range keys {
		_, rest, _ := strings.Cut(k, "{")
		tag, _, _ := strings.Cut(rest, "}")
		if tag != "client:alice" {
			t.Fatalf("key %q has hash tag %q, want client:alice", k, tag)
		}
		ttl, err := admin.Do(ctx, admin.B().Pttl().Key(k).Build()).AsInt64()
		if err != nil || ttl <= 0 || ttl > time.Minute.Milliseconds() {
			t.Fatalf("key %q: PTTL %d, %v; want the retention's", k, ttl, err)
		}
	}
	if err := e.KeepMemberships(ctx, "alice", fence); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if ttl, err := admin.Do(ctx, admin.B().Pttl().Key(k).Build()).AsInt64(); err != nil || ttl != -1 {
			t.Fatalf("key %q after KeepMemberships: PTTL %d, %v; want no expiry", k, ttl, err)
		}
	}
}

// TestClientsRedisDown: with Redis gone, every call of the stores fails with
// ErrUnavailable.
func TestClientsRedisDown(t *testing.T) {
	srv := redistest.Start(t)
	e := openInstance(t, srv, "down", "i0", nil)
	ctx := context.Background()
	fence, _, err := e.Claim(ctx, "c", "i0", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	_, _, errClaim := e.Claim(ctx, "c", "i1", time.Time{})
	_, errRelease := e.Release(ctx, "c", "i0", fence)
	_, _, errOwner := e.Owner(ctx, "c")
	_, errLoad := e.LoadMemberships(ctx, "c")
	_, errAlive := e.Alive(ctx, "i0")
	for name, err := range map[string]error{
		"Claim":             errClaim,
		"Release":           errRelease,
		"Owner":             errOwner,
		"LoadMemberships":   errLoad,
		"SaveMemberships":   e.SaveMemberships(ctx, "c", fence, []engine.Membership{{Session: "s"}}),
		"RetainMemberships": e.RetainMemberships(ctx, "c", fence, time.Minute),
		"KeepMemberships":   e.KeepMemberships(ctx, "c", fence),
		"DropMemberships":   e.DropMemberships(ctx, "c", fence),
		"Heartbeat":         e.Heartbeat(ctx, "i0", time.Minute),
		"Alive":             errAlive,
		"Notify":            e.Notify(ctx, "i1", "c", fence),
	} {
		if !errors.Is(err, engine.ErrUnavailable) {
			t.Errorf("%s with Redis down: %v, want ErrUnavailable", name, err)
		}
	}
}
