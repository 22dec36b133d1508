// Package soak is StreamHub's fault-injection suite: three server processes
// on the Redis engine, clients of the client package publishing and
// subscribing through loopback fault proxies, and a seeded schedule of
// faults — connections cut and stalled, instances killed (SIGKILL) and
// drained (SIGTERM) and restarted, Redis stalled (SIGSTOP/SIGCONT) and its
// connections cut. At the end it checks what the service promises across
// all of that: every publication the client reported done reached every
// member once, in seq order, with no gap; no goroutine outlived the test,
// in the test process or in the servers; the servers' memory stayed bounded.
//
// The suite is all in the package's tests. A short run (about 100 faults)
// is part of go test ./...; make soak runs the long one and prints its
// figures. Flags (after -args, or on the go test command line):
//
//	-soak.faults N        faults to inject (default 100)
//	-soak.seed S          the schedule's seed (default: from the clock; printed)
//	-soak.pace D          time between faults (default 250ms)
//	-soak.server PATH     a streamhub binary to run instead of building one
//	-soak.race-server B   build the server with -race (default: as the test binary is)
//	-soak.logdir DIR      keep the servers' logs and the run's journal there
//	-soak.kinds K,K       inject only these kinds of fault (names as in the figures)
//
// It needs redis-server on PATH and skips without it, unless
// STREAMHUB_REQUIRE_REDIS=1.
package soak
