package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"time"

	"github.com/streamhub/streamhub/engine"
	"github.com/streamhub/streamhub/engine/redis"
	"github.com/streamhub/streamhub/streaming"
	"goa.design/clue/log"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

const (
	// engineConnectTimeout bounds the wait for Redis at startup: a server
	// that cannot reach it fails to start rather than serve sessions it
	// cannot share.
	engineConnectTimeout = 5 * time.Second
	// engineHealthInterval is how often the gRPC health service is brought
	// in step with the engine.
	engineHealthInterval = 250 * time.Millisecond
)

// engineHealth reports whether the service's engine answers: the
// streaming service does (nil while it answers, always nil without an
// engine).
type engineHealth interface{ EngineErr() error }

// newRedisEngine connects to the Redis of --redis-addr. Entries and
// replacement notices go to handler; every operation is reported to
// observer. It fails, naming Redis and its address without a password,
// when Redis does not answer within engineConnectTimeout.
func newRedisEngine(ctx context.Context, o *options, instance string, handler engine.Handler, observer engine.Observer) (engine.Engine, error) {
	ctx, cancel := context.WithTimeout(ctx, engineConnectTimeout)
	defer cancel()
	eng, err := redis.New(ctx, redis.Options{
		Addr:     o.redisAddr,
		Prefix:   o.redisPrefix,
		Bounds:   streaming.EngineBounds(o.stream),
		Handler:  handler,
		Instance: instance,
		Observer: observer,
	})
	if err != nil {
		return nil, fmt.Errorf("--engine redis: cannot connect to Redis at %s within %s: %w",
			redactRedisAddr(o.redisAddr), engineConnectTimeout, err)
	}
	return eng, nil
}

// instanceName names this process among the instances sharing a Redis: the
// host name (a pod's name in Kubernetes) and a random suffix, so that a
// restarted process is a new instance and two processes on one machine are
// two.
func instanceName() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "streamhub"
	}
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return host + "-" + hex.EncodeToString(b[:])
}

// watchEngine keeps the gRPC health service in step with the engine until
// ctx ends: NOT_SERVING while the engine does not answer, SERVING again once
// it does. /readyz asks the service at each request instead (readiness).
// The drain's own NOT_SERVING is final: the health service ignores changes
// after its Shutdown.
func (s *server) watchEngine(ctx context.Context) {
	tick := time.NewTicker(engineHealthInterval)
	defer tick.Stop()
	up := true
	for {
		err := s.engineHealth.EngineErr()
		switch {
		case err != nil && up:
			log.Error(ctx, err, log.KV{K: "msg", V: "engine unavailable: not ready until it answers"})
			s.setServing(healthpb.HealthCheckResponse_NOT_SERVING)
		case err == nil && !up:
			log.Print(ctx, log.KV{K: "msg", V: "engine available again: ready"})
			s.setServing(healthpb.HealthCheckResponse_SERVING)
		}
		up = err == nil
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// setServing sets the gRPC health status of the server and of the
// service.
func (s *server) setServing(st healthpb.HealthCheckResponse_ServingStatus) {
	s.health.SetServingStatus("", st)
	s.health.SetServingStatus(grpcServiceName, st)
}
