package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseRedisInfo(t *testing.T) {
	info := "# Clients\r\nconnected_clients:4\r\nblocked_clients:0\r\n\r\n# Stats\r\ntotal_commands_processed:9000\r\n" +
		"total_reads_processed:1200\r\ntotal_writes_processed:1300\r\n\r\n# Commandstats\r\n" +
		"cmdstat_publish:calls=3000,usec=9000,usec_per_call=3.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_evalsha:calls=3100,usec=90000,usec_per_call=29.03,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_eval:calls=2,usec=300,usec_per_call=150.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_hset:calls=3000,usec=3000,usec_per_call=1.00,rejected_calls=0,failed_calls=0\r\n"
	s, err := parseRedisInfo(info, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := redisSample{cpu: 2 * time.Second, publishes: 3000, scripts: 3102, reads: 1200, clients: 4}
	if s != want {
		t.Fatalf("parsed %+v, want %+v", s, want)
	}
	// Before any publish there is no cmdstat_publish line: zero publishes.
	if s, err := parseRedisInfo("connected_clients:1\ntotal_reads_processed:3\n", 0); err != nil || s.publishes != 0 || s.reads != 3 {
		t.Fatalf("a Redis that ran nothing: %+v, %v", s, err)
	}
	for _, bad := range []string{
		"connected_clients:1\n",                        // no reads: too old a Redis
		"connected_clients:x\ntotal_reads_processed:3", // not a number
		"connected_clients:1\ntotal_reads_processed:3\ncmdstat_publish:usec=3",
	} {
		if _, err := parseRedisInfo(bad, 0); err == nil {
			t.Errorf("parseRedisInfo(%q) did not fail", bad)
		}
	}
}

func TestRedisWindow(t *testing.T) {
	a := redisSample{cpu: time.Second, publishes: 1000, scripts: 1100, reads: 500, clients: 6}
	b := redisSample{cpu: 1500 * time.Millisecond, publishes: 11000, scripts: 12100, reads: 1500, clients: 6}
	u := redisWindow(a, b, 2*time.Second, 4*time.Second)
	want := redisUse{Publishes: 10000, PublishesRate: 5000, Scripts: 11000, Reads: 1000, PublishesPerRead: 10,
		Connections: 5, CPUPercent: 25, CPUPerPublishUS: 50, ServerCPUPerPublishUS: 400}
	if *u != want {
		t.Fatalf("window %+v, want %+v", *u, want)
	}
	if u := redisWindow(a, a, time.Second, -1); u.CPUPerPublishUS != 0 || u.PublishesPerRead != 0 || u.ServerCPUPerPublishUS != 0 {
		t.Fatalf("a window without publishes or reads: %+v", *u)
	}
}

func TestCompareEngines(t *testing.T) {
	memory := result{Server: kindStreamHub, Rate: 1000, P99us: 100, CPUPerMsgUS: 2}
	t.Run("fan-out", func(t *testing.T) {
		c := &comparison{Number: 5, Unit: "deliveries/s", Results: []result{memory,
			{Server: kindRedis, Rate: 850, P99us: 150, CPUPerMsgUS: 3},
			{Server: kindRedis2, Rate: 500, P99us: 400, CPUPerMsgUS: 4}}}
		c.compare()
		if c.Reference != kindStreamHub || !near(c.RateRatio, 0.85) || !near(c.P99Ratio, 1.5) || !near(c.CPURatio, 1.5) {
			t.Fatalf("reference %q, ratios %.3f %.3f %.3f", c.Reference, c.RateRatio, c.P99Ratio, c.CPURatio)
		}
		if two := c.result(kindRedis2); !near(two.RateRatio, 0.5) || !near(two.P99Ratio, 4) {
			t.Fatalf("two instances: ratios %.3f %.3f", two.RateRatio, two.P99Ratio)
		}
		if c.result(kindStreamHub).RateRatio != 0 {
			t.Fatal("the reference has a ratio to itself")
		}
		if len(c.Checks) != 1 || !c.Checks[0].Met {
			t.Fatalf("checks %+v: want 0.85× met", c.Checks)
		}
		c.Results[1].Rate = 700
		c.compare()
		if len(c.Checks) != 1 || c.Checks[0].Met {
			t.Fatalf("checks %+v: want 0.7× missed", c.Checks)
		}
	})
	t.Run("publishers", func(t *testing.T) {
		for _, tc := range []struct {
			perRead float64
			met     bool
		}{{12.5, true}, {1, false}} {
			c := &comparison{Number: 6, Unit: "publishes/s", Results: []result{memory,
				{Server: kindRedis, Rate: 400, P99us: 500, Redis: &redisUse{PublishesPerRead: tc.perRead}}}}
			c.compare()
			if !near(c.RateRatio, 0.4) || len(c.Checks) != 1 || c.Checks[0].Met != tc.met {
				t.Fatalf("%.1f publishes/read: ratio %.2f, checks %+v", tc.perRead, c.RateRatio, c.Checks)
			}
		}
	})
	t.Run("failed memory run", func(t *testing.T) {
		c := &comparison{Number: 6, Results: []result{{Server: kindStreamHub, Error: "boom"},
			{Server: kindRedis, Rate: 400, P99us: 500, Redis: &redisUse{PublishesPerRead: 3}}}}
		c.compare()
		if c.RateRatio != 0 || len(c.Checks) != 1 || !c.Checks[0].Met {
			t.Fatalf("ratio %.2f, checks %+v: want no ratio, and pipelining still checked", c.RateRatio, c.Checks)
		}
	})
}

// TestRedisScenariosSkipWithoutRedis: without redis-server, or with a
// server that has no Redis engine, scenarios 5 and 6 are skipped with a
// note saying how to install it, and the run does not fail.
func TestRedisScenariosSkipWithoutRedis(t *testing.T) {
	ctx := context.Background()
	noEngine := filepath.Join(t.TempDir(), "streamhub")
	script := "#!/bin/sh\necho 'flag provided but not defined: -engine' >&2\nexit 2\n"
	if err := os.WriteFile(noEngine, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, redisBin, want string
	}{
		{"no redis-server", "", "apt-get install -y redis-server"},
		{"not a program", filepath.Join(t.TempDir(), "missing"), "apt-get install -y redis-server"},
		{"a server without --engine", noEngine, "has no Redis engine (exit status 2: flag provided but not defined: -engine)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			why := redisUnavailable(ctx, tc.redisBin, noEngine)
			if !strings.Contains(why, tc.want) {
				t.Fatalf("redisUnavailable: %q, want it to say %q", why, tc.want)
			}
			o := &options{scenarios: map[int]bool{5: true, 6: true}, count: 1}
			var progress bytes.Buffer
			b := &bench{o: o, l: childLauncher{}, progress: &progress, noRedis: why}
			rep := b.runAll(ctx)
			if len(rep.Comparisons) != 0 || rep.failed() {
				t.Fatalf("skipped scenarios ran: %+v", rep.Comparisons)
			}
			var text bytes.Buffer
			if err := rep.writeText(&text); err != nil {
				t.Fatal(err)
			}
			for _, out := range []string{text.String(), progress.String()} {
				if !strings.Contains(out, "skipped 5, 6 (Redis engine): ") || !strings.Contains(out, tc.want) {
					t.Errorf("no skip note in:\n%s", out)
				}
			}
		})
	}
}

// requireRedis is the redis-server on PATH; the test skips without one,
// or fails with STREAMHUB_REQUIRE_REDIS=1.
func requireRedis(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		msg := "redis-server not found on PATH: " + installRedis
		if os.Getenv("STREAMHUB_REQUIRE_REDIS") == "1" {
			t.Fatal(msg + "; STREAMHUB_REQUIRE_REDIS=1 requires it")
		}
		t.Skip(msg)
	}
	return bin
}

// buildServer builds cmd/streamhub into a temporary directory.
func buildServer(t *testing.T) string {
	t.Helper()
	goTool := "go"
	if root := os.Getenv("GOROOT"); root != "" { // set by go test: the toolchain running this test
		goTool = filepath.Join(root, "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "streamhub")
	if out, err := exec.Command(goTool, "build", "-o", bin, "github.com/streamhub/streamhub/cmd/streamhub").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func TestStartRedis(t *testing.T) {
	rs, err := startRedis(requireRedis(t))
	if err != nil {
		t.Fatal(err)
	}
	s, err := sampleRedis(rs)
	if err != nil || s.clients != 1 || s.publishes != 0 {
		t.Fatalf("a new Redis: %+v, %v; want one client (this one) and no publish", s, err)
	}
	if got, err := redisCommand(rs.addr, "PUBLISH", "ch", "x"); err != nil || got != "0" {
		t.Fatalf("PUBLISH answered %q, %v; want 0 (subscribers)", got, err)
	}
	if s, err = sampleRedis(rs); err != nil || s.publishes != 1 || s.reads < 2 {
		t.Fatalf("after a PUBLISH: %+v, %v", s, err)
	}
	if err := rs.stop(); err != nil {
		t.Fatal(err)
	}
	if err := redisPing(rs.addr); err == nil {
		t.Fatal("Redis still answers after stop")
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", rs.pid)); err == nil {
		t.Fatalf("redis-server %d is still there after stop", rs.pid)
	}
}

// TestRedisScenariosAgainstProcesses runs scenarios 5 and 6 briefly
// against real server processes and a real redis-server, as make bench
// does, and checks that every run measured something, that Redis's work
// was read, and that the targets were checked.
func TestRedisScenariosAgainstProcesses(t *testing.T) {
	redisBin := requireRedis(t)
	serverBin := buildServer(t)
	ctx := context.Background()
	if why := redisUnavailable(ctx, redisBin, serverBin); why != "" {
		t.Fatalf("the bench would skip the Redis scenarios: %s", why)
	}
	o := &options{
		scenarios: map[int]bool{5: true, 6: true},
		duration:  500 * time.Millisecond, warmup: 100 * time.Millisecond, count: 1,
		size: 64, streams: 4, streamConns: 2, window: 4,
		subscribers: 8, fanoutConns: 2, fanoutWindow: 8, redisInstances: 2,
	}
	var progress bytes.Buffer
	b := &bench{o: o, l: childLauncher{serverBin: serverBin, redisBin: redisBin}, progress: &progress}
	rep := b.runAll(ctx)
	t.Log("\n" + progress.String())

	if len(rep.Comparisons) != 2 || len(rep.Skipped) != 0 {
		t.Fatalf("%d comparisons, skipped %q; want 5 and 6", len(rep.Comparisons), rep.Skipped)
	}
	for i, want := range [][]string{{kindStreamHub, kindRedis, kindRedis2}, {kindStreamHub, kindRedis}} {
		c := rep.Comparisons[i]
		if c.Number != 5+i || c.Reference != kindStreamHub || len(c.Results) != len(want) {
			t.Fatalf("scenario %d %q: reference %q, %d results", c.Number, c.Scenario, c.Reference, len(c.Results))
		}
		for j, r := range c.Results {
			if r.Server != want[j] {
				t.Fatalf("scenario %d: result %d is %s, want %s", c.Number, j, r.Server, want[j])
			}
			if r.Error != "" {
				t.Fatalf("scenario %d, %s: %s", c.Number, r.Server, r.Error)
			}
			if r.Messages == 0 || r.Rate <= 0 || r.P50us <= 0 || r.P99us < r.P50us || r.CPUPerMsgUS <= 0 {
				t.Fatalf("scenario %d, %s: %+v", c.Number, r.Server, r)
			}
			if r.Server == kindStreamHub {
				if r.Redis != nil {
					t.Fatalf("scenario %d: the memory engine has Redis numbers", c.Number)
				}
				continue
			}
			u := r.Redis
			// Redis's CPU may round to 0 in so short a window: /proc counts
			// it in 10ms ticks.
			if u == nil || u.Publishes == 0 || u.Reads == 0 || u.Scripts < u.Publishes || u.CPUPerPublishUS < 0 ||
				u.ServerCPUPerPublishUS <= 0 || u.PublishesPerRead <= 0 || r.RateRatio <= 0 {
				t.Fatalf("scenario %d, %s: Redis %+v, rate ratio %.2f", c.Number, r.Server, u, r.RateRatio)
			}
			// Every instance keeps at least a command and a Pub/Sub
			// connection.
			if n, _ := instancesOf(r.Server); u.Connections < 2*n {
				t.Fatalf("scenario %d, %s: %d connections to Redis from %d instances", c.Number, r.Server, u.Connections, n)
			}
			if c.Number == 5 {
				// A publish is delivered to every member: Redis publishes
				// are deliveries divided by members, give or take the
				// messages in flight at the window's edges.
				perPublish := float64(r.Messages) / float64(u.Publishes)
				if perPublish < float64(o.subscribers)/2 || perPublish > float64(o.subscribers)*2 {
					t.Fatalf("%s: %d deliveries for %d publishes to %d subscribers", r.Server, r.Messages, u.Publishes, o.subscribers)
				}
			}
		}
		if len(c.Checks) != 1 {
			t.Fatalf("scenario %d was not checked against its target: %+v", c.Number, c.Checks)
		}
	}
	if rep.failed() {
		t.Fatal("the report says a run failed")
	}
	var text bytes.Buffer
	if err := rep.writeText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Redis engine: fan-out", "publishes/s", kindRedis2, "Redis CPU/publish", "publishes/read", "redis:"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("the report has no %q:\n%s", want, text.String())
		}
	}
	var js bytes.Buffer
	if err := rep.writeJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back.Comparisons) != 2 || back.Comparisons[1].Results[1].Redis == nil {
		t.Fatalf("JSON does not read back: %v\n%s", err, js.String())
	}
}
