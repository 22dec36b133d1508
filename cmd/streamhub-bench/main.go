// Command streamhub-bench measures StreamHub against a bare grpc-go server
// that implements the same generated protobuf service, in the same run on
// the same machine, so that the ratio between them holds anywhere:
//
//  1. ping-pong on one stream;
//  2. many streams, each in its own session, sending as fast as a bounded
//     window of outstanding messages allows;
//  3. fan-out from one publisher to many subscribers of one session;
//  4. memory per idle connection at thousands of concurrent streams;
//  5. fan-out as in 3 on the Redis engine, against the memory engine: on
//     one instance, and with the members over two instances;
//  6. many publishers, each in a session of its own, on one instance on the
//     Redis engine: publishes accepted, and what they cost Redis.
//
// Both servers run as child processes on loopback ports, a fresh one per
// run: StreamHub from its binary (-server-bin), the baseline from this
// binary in its hidden -serve-baseline mode. Scenarios 5 and 6 compare
// StreamHub with itself instead: --engine redis, on a redis-server the
// bench starts for each run, against the memory engine; without
// redis-server they are skipped, saying how to install it. The load
// generator is this process. `make bench` builds everything and runs it
// with the defaults.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && (args[0] == "-serve-baseline" || args[0] == "--serve-baseline") {
		return serveBaselineMain(args[1:], stdout, stderr)
	}
	o, err := parseOptions(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "streamhub-bench:", err)
		return 2
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "streamhub-bench:", err)
		return 1
	}
	if o.serverBin == "" {
		if o.serverBin, err = findServerBin(self); err != nil {
			fmt.Fprintln(stderr, "streamhub-bench:", err)
			return 1
		}
	}
	limit, err := raiseFileLimit()
	if err != nil {
		fmt.Fprintln(stderr, "streamhub-bench:", err)
		return 1
	}
	if o.scenarios[4] && uint64(o.idleConns)+256 > limit {
		fmt.Fprintf(stderr, "streamhub-bench: -idle-conns %d needs more open files than the limit of %d\n", o.idleConns, limit)
		return 2
	}
	if o.profileDir != "" {
		if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
			fmt.Fprintln(stderr, "streamhub-bench:", err)
			return 1
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	l := childLauncher{serverBin: o.serverBin, serverArgs: o.serverArgs, self: self, baselineArgs: o.baselineArgs, redisBin: o.redisServer}
	if l.redisBin == "" {
		l.redisBin, _ = exec.LookPath("redis-server") // none: the Redis scenarios say so
	}
	b := &bench{o: o, l: l, progress: stderr}
	if o.scenarios[5] || o.scenarios[6] {
		b.noRedis = redisUnavailable(ctx, l.redisBin, o.serverBin)
	}
	rep := b.runAll(ctx)
	if o.json {
		err = rep.writeJSON(stdout)
	} else {
		err = rep.writeText(stdout)
	}
	if err != nil {
		fmt.Fprintln(stderr, "streamhub-bench:", err)
		return 1
	}
	if rep.failed() || ctx.Err() != nil {
		return 1
	}
	return 0
}

// options is everything the command line sets.
type options struct {
	scenarios      map[int]bool
	duration       time.Duration
	count          int
	warmup         time.Duration
	size           int
	sizes          []int
	streams        int
	streamConns    int
	window         int
	subscribers    int
	fanoutConns    int
	fanoutWindow   int
	idleConns      int
	idleHeartbeat  time.Duration
	idleHold       time.Duration
	idleBurst      int
	idleBurstSize  int
	serverBin      string
	serverArgs     []string
	baselineArgs   []string
	redisServer    string
	redisInstances int
	json           bool
	profileDir     string
}

func parseOptions(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("streamhub-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: streamhub-bench [flags]\n\n"+
			"Measures StreamHub against a bare grpc-go server speaking the same protobuf, in the same run:\n"+
			"1 ping-pong on one stream, 2 many streams each in its own session, 3 fan-out to one session's\n"+
			"subscribers, 4 server memory per idle connection. Both servers run as child processes on loopback.\n"+
			"On the Redis engine, against the memory engine (needs redis-server; skipped without it):\n"+
			"5 scenario 3's fan-out, 6 scenario 2's streams as publishers, with Redis's CPU per publish.\n\n")
		fs.PrintDefaults()
	}
	scenarios := fs.String("scenarios", defaultScenarios, "comma-separated scenarios to run")
	fs.DurationVar(&o.duration, "duration", 3*time.Second, "measured time of each run (scenarios 1-3, 5, 6)")
	fs.IntVar(&o.count, "count", 1, "runs of each server in scenarios 1-3, 5 and 6, rotating which goes first; the run with the median rate is reported")
	fs.DurationVar(&o.warmup, "warmup", 500*time.Millisecond, "load before the measurement starts (scenarios 1-3, 5, 6)")
	fs.IntVar(&o.size, "size", 64, "data payload bytes, scenarios 1, 3, 5 and 6 (at least 16: send time and sequence number)")
	sizes := fs.String("sizes", "64,1024", "comma-separated payload sizes of scenario 2, one run each")
	fs.IntVar(&o.streams, "streams", 64, "scenarios 2 and 6: streams, each in a session of its own")
	fs.IntVar(&o.streamConns, "stream-conns", 64, "scenarios 2 and 6: client connections the streams are spread over")
	fs.IntVar(&o.window, "window", 32, "scenarios 2 and 6: messages each stream may have sent and not yet had back")
	fs.IntVar(&o.subscribers, "subscribers", 1000, "scenarios 3 and 5: subscribers of the session")
	fs.IntVar(&o.fanoutConns, "fanout-conns", 50, "scenarios 3 and 5: client connections the subscribers are spread over")
	fs.IntVar(&o.fanoutWindow, "fanout-window", 64, "scenarios 3 and 5: messages the publisher may be ahead of the slowest member")
	fs.StringVar(&o.redisServer, "redis-server", "", "scenarios 5 and 6: the redis-server program (default: redis-server on PATH)")
	fs.IntVar(&o.redisInstances, "redis-instances", 2, "scenario 5: also run the members over this many instances sharing the Redis (2), or only over one (1)")
	fs.IntVar(&o.idleConns, "idle-conns", 5000, "scenario 4: idle streams, each on a TCP connection of its own")
	fs.DurationVar(&o.idleHeartbeat, "idle-heartbeat", time.Second, "scenario 4: client heartbeat interval, and the servers' heartbeat interval")
	fs.DurationVar(&o.idleHold, "idle-hold", 3*time.Second, "scenario 4: how long the streams stay open before the memory is sampled")
	fs.IntVar(&o.idleBurst, "idle-burst", 0, "scenario 4: messages each stream sends and gets back before it goes idle, so its buffers have been used "+
		"(at most 256; StreamHub keeps them in session history: -server-args \"--history-size 1\" to leave it out)")
	fs.IntVar(&o.idleBurstSize, "idle-burst-size", 8<<10, "scenario 4: payload bytes of the burst messages")
	fs.StringVar(&o.serverBin, "server-bin", "", "the streamhub binary (default: ./bin/streamhub, else the one next to this binary)")
	serverArgs := fs.String("server-args", "", "extra flags for streamhub, space-separated")
	baselineArgs := fs.String("baseline-args", "", "grpc-go options for the baseline, to see what they would buy: "+
		"-write-buffer-size N, -read-buffer-size N")
	fs.BoolVar(&o.json, "json", false, "print the results as JSON instead of a table")
	fs.StringVar(&o.profileDir, "profile", "", "save each server's CPU and allocation profiles of scenarios 1-3, 5 and 6 (of the first instance), and heap profile of scenario 4, in this directory")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	o.serverArgs = strings.Fields(*serverArgs)
	o.baselineArgs = strings.Fields(*baselineArgs)
	var err error
	o.scenarios = make(map[int]bool)
	nums, err := parseInts(*scenarios)
	if err != nil {
		return nil, fmt.Errorf("-scenarios: %w", err)
	}
	for _, n := range nums {
		if n < 1 || n > 6 {
			return nil, fmt.Errorf("-scenarios: no scenario %d", n)
		}
		o.scenarios[n] = true
	}
	if o.sizes, err = parseInts(*sizes); err != nil {
		return nil, fmt.Errorf("-sizes: %w", err)
	}
	for _, v := range []struct {
		name string
		ok   bool
	}{
		{"duration", o.duration > 0},
		{"count", o.count > 0},
		{"warmup", o.warmup >= 0},
		{"size", o.size >= stampSize},
		{"sizes", !slices.ContainsFunc(o.sizes, func(s int) bool { return s < stampSize })},
		{"streams", o.streams > 0},
		{"stream-conns", o.streamConns > 0},
		{"window", o.window > 0},
		{"subscribers", o.subscribers > 0},
		{"fanout-conns", o.fanoutConns > 0},
		{"fanout-window", o.fanoutWindow > 0},
		{"redis-instances", o.redisInstances == 1 || o.redisInstances == 2},
		{"idle-conns", o.idleConns > 0},
		{"idle-heartbeat", o.idleHeartbeat > 0},
		{"idle-hold", o.idleHold > 0},
		{"idle-burst", o.idleBurst >= 0 && o.idleBurst <= 256},
		{"idle-burst-size", o.idleBurstSize >= stampSize && o.idleBurst*o.idleBurstSize <= 4<<20},
	} {
		if !v.ok {
			return nil, fmt.Errorf("-%s is out of range (sizes must be at least %d bytes, counts and durations positive)", v.name, stampSize)
		}
	}
	return o, nil
}

func parseInts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("not a number: %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// loadFunc sets up a scenario's load against a server: it opens the streams
// and spawns the goroutines that drive them on r, which measures and ends
// them.
type loadFunc func(r *loadRun, t *target) error

// defaultScenarios is every scenario: 5 and 6 are skipped, with a note
// on how to install redis-server, where there is none.
const defaultScenarios = "1,2,3,4,5,6"

// bench runs the scenarios.
type bench struct {
	o        *options
	l        launcher
	progress io.Writer // a line per run as it ends
	// noRedis says why scenarios 5 and 6 cannot run; empty when they can.
	noRedis string
}

// kinds are the servers scenarios 1-4 run against, in this order.
var kinds = []string{kindBaseline, kindStreamHub}

// runAll runs the selected scenarios, one server at a time.
func (b *bench) runAll(ctx context.Context) *report {
	o := b.o
	rep := newReport(o, b.l)
	if o.scenarios[1] {
		rep.add(b.throughput(ctx, 1, fmt.Sprintf("ping-pong, 1 stream, %s", sizeName(o.size)),
			fmt.Sprintf("1-pingpong-%s", sizeName(o.size)), "msgs/s", kinds, settings{}, pingPongLoad(o.size)))
	}
	if o.scenarios[2] {
		for _, size := range o.sizes {
			rep.add(b.throughput(ctx, 2,
				fmt.Sprintf("%d streams/%d conns, window %d, %s", o.streams, o.streamConns, o.window, sizeName(size)),
				fmt.Sprintf("2-streams-%s", sizeName(size)), "msgs/s", kinds, settings{maxConns: o.streams},
				streamsLoad(o.streams, o.streamConns, o.window, size)))
		}
	}
	if o.scenarios[3] {
		rep.add(b.throughput(ctx, 3,
			fmt.Sprintf("fan-out 1→%d subs/%d conns, window %d, %s", o.subscribers, o.fanoutConns, o.fanoutWindow, sizeName(o.size)),
			fmt.Sprintf("3-fanout-%s", sizeName(o.size)), "deliveries/s", kinds, settings{maxConns: o.subscribers + 1},
			fanoutLoad(o.subscribers, o.fanoutConns, o.fanoutWindow, o.size)))
	}
	if o.scenarios[4] {
		rep.add(b.idle(ctx))
	}
	b.runRedis(ctx, rep)
	return rep
}

// runRedis runs scenarios 5 and 6, or notes why they were skipped.
func (b *bench) runRedis(ctx context.Context, rep *report) {
	o := b.o
	var selected []string
	for _, n := range []int{5, 6} {
		if o.scenarios[n] {
			selected = append(selected, strconv.Itoa(n))
		}
	}
	if len(selected) == 0 {
		return
	}
	if b.noRedis != "" {
		note := fmt.Sprintf("%s (Redis engine): %s", strings.Join(selected, ", "), b.noRedis)
		rep.Skipped = append(rep.Skipped, note)
		b.logf("skipped %s", note)
		return
	}
	rep.Setup = append(rep.Setup, "redis:     "+b.l.describe(kindRedis)+"; ratios of scenarios 5 and 6 are against the memory engine (streamhub)")
	if o.scenarios[5] {
		servers := []string{kindStreamHub, kindRedis}
		if o.redisInstances > 1 {
			servers = append(servers, kindRedis2)
		}
		rep.add(b.throughput(ctx, 5,
			fmt.Sprintf("Redis engine: fan-out 1→%d subs/%d conns, window %d, %s", o.subscribers, o.fanoutConns, o.fanoutWindow, sizeName(o.size)),
			fmt.Sprintf("5-redis-fanout-%s", sizeName(o.size)), "deliveries/s", servers, settings{maxConns: o.subscribers + 1},
			fanoutLoad(o.subscribers, o.fanoutConns, o.fanoutWindow, o.size)))
	}
	if o.scenarios[6] {
		rep.add(b.throughput(ctx, 6,
			fmt.Sprintf("Redis engine: %d publishers/%d conns, a session each, window %d, %s", o.streams, o.streamConns, o.window, sizeName(o.size)),
			fmt.Sprintf("6-redis-publishers-%s", sizeName(o.size)), "publishes/s", []string{kindStreamHub, kindRedis}, settings{maxConns: o.streams},
			streamsLoad(o.streams, o.streamConns, o.window, o.size)))
	}
}

// throughput runs one load against each of servers.
func (b *bench) throughput(ctx context.Context, number int, name, slug, unit string, servers []string, s settings, load loadFunc) *comparison {
	c := &comparison{Number: number, Scenario: name, Unit: unit}
	runs := make(map[string][]result)
	for i := range b.o.count {
		run := slug // names the run's profiles
		if b.o.count > 1 {
			run = fmt.Sprintf("%s-%d", slug, i+1)
		}
		// Rotate which server goes first, so that none always gets the
		// warmer machine.
		k := i % len(servers)
		order := append(slices.Clone(servers[k:]), servers[:k]...)
		for _, kind := range order {
			res := b.runLoad(ctx, kind, run, s, load)
			b.logf("%s %-9s %s", slug, kind, res.summary(unit))
			runs[kind] = append(runs[kind], res)
		}
	}
	for _, kind := range servers {
		c.Results = append(c.Results, median(runs[kind]))
	}
	c.compare()
	return c
}

// median is the run with the median rate, or the first failed one.
func median(runs []result) result {
	for _, r := range runs {
		if r.Error != "" {
			return r
		}
	}
	sorted := slices.SortedFunc(slices.Values(runs), func(a, b result) int { return cmp.Compare(a.Rate, b.Rate) })
	return sorted[(len(sorted)-1)/2]
}

func (b *bench) runLoad(ctx context.Context, kind, slug string, s settings, load loadFunc) result {
	res := result{Server: kind}
	if ctx.Err() != nil {
		res.Error = "interrupted"
		return res
	}
	t, err := b.l.start(kind, s)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	r := newLoadRun(ctx)
	var w window
	if err = load(r, t); err == nil {
		w, err = r.measure(b.o.warmup, b.o.duration, b.profiler(t, slug), meter(t))
	}
	h, ferr := r.finish()
	if err == nil {
		err = ferr
	}
	if serr := t.stop(); err == nil && serr != nil {
		err = fmt.Errorf("stopping the server: %w", serr)
	}
	if err == nil && ctx.Err() != nil {
		err = errors.New("interrupted")
	}
	if err != nil {
		res.Error = err.Error()
		return res
	}
	res.setLatency(h, w)
	return res
}

// meter reads a server's CPU time, every instance's, and its Redis's
// counters if it has one.
func meter(t *target) func() (reading, error) {
	return func() (reading, error) {
		cpu, err := t.cpu()
		if err != nil {
			return reading{}, err
		}
		rd := reading{cpu: cpu}
		if t.redis != nil {
			s, err := sampleRedis(t.redis)
			if err != nil {
				return reading{}, err
			}
			rd.redis = &s
		}
		return rd, nil
	}
}

// profiler is the probe that saves a server's CPU and allocation profiles
// over a measurement window, when -profile is set.
func (b *bench) profiler(t *target, slug string) probe {
	if b.o.profileDir == "" {
		return nil
	}
	secs := max(1, int(b.o.duration.Round(time.Second)/time.Second))
	return func(ctx context.Context) {
		done := make(chan error, 1)
		go func() {
			done <- saveProfile(ctx, t, fmt.Sprintf("allocs?seconds=%d", secs), b.o.profileDir, slug+"-"+t.kind+".allocs.pb.gz")
		}()
		if err := saveProfile(ctx, t, fmt.Sprintf("profile?seconds=%d", secs), b.o.profileDir, slug+"-"+t.kind+".cpu.pb.gz"); err != nil {
			b.logf("%s %s: CPU profile: %v", slug, t.kind, err)
		}
		if err := <-done; err != nil {
			b.logf("%s %s: allocation profile: %v", slug, t.kind, err)
		}
	}
}

// idle is scenario 4 against each server.
func (b *bench) idle(ctx context.Context) *comparison {
	o := b.o
	c := &comparison{Number: 4, Unit: "bytes/conn",
		Scenario: fmt.Sprintf("idle: %d streams, a TCP connection each; heartbeats every %s both ways; held %s",
			o.idleConns, o.idleHeartbeat, o.idleHold)}
	if o.idleBurst > 0 {
		c.Scenario += fmt.Sprintf("; each first echoed %d × %s", o.idleBurst, sizeName(o.idleBurstSize))
	}
	for _, kind := range kinds {
		res := result{Server: kind}
		mem, err := b.idleOne(ctx, kind)
		if err != nil {
			res.Error = err.Error()
		}
		res.Memory = mem
		b.logf("4-idle %-9s %s", kind, res.summary(c.Unit))
		c.Results = append(c.Results, res)
	}
	c.compare()
	return c
}

func (b *bench) idleOne(ctx context.Context, kind string) (*idleMemory, error) {
	if ctx.Err() != nil {
		return nil, errors.New("interrupted")
	}
	o := b.o
	t, err := b.l.start(kind, settings{maxConns: o.idleConns + 16, heartbeat: o.idleHeartbeat})
	if err != nil {
		return nil, err
	}
	var sampled func(context.Context)
	if o.profileDir != "" {
		sampled = func(ctx context.Context) {
			if err := saveProfile(ctx, t, "heap?gc=1", o.profileDir, "4-idle-"+kind+".heap.pb.gz"); err != nil {
				b.logf("4-idle %s: heap profile: %v", kind, err)
			}
		}
	}
	mem, err := idleLoad(ctx, t, idleParams{streams: o.idleConns, interval: o.idleHeartbeat, hold: o.idleHold,
		burst: o.idleBurst, burstSize: o.idleBurstSize, sampled: sampled})
	if serr := t.stop(); err == nil && serr != nil {
		err = fmt.Errorf("stopping the server: %w", serr)
	}
	if err == nil && ctx.Err() != nil {
		err = errors.New("interrupted")
	}
	return mem, err
}

func (b *bench) logf(format string, args ...any) {
	if b.progress != nil {
		fmt.Fprintf(b.progress, format+"\n", args...)
	}
}

// sizeName is a payload size as the report names it.
func sizeName(n int) string {
	if n >= 1<<10 && n%(1<<10) == 0 {
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

// environment describes where the numbers come from.
func environment() map[string]string {
	return map[string]string{
		"cpus":       strconv.Itoa(runtime.NumCPU()),
		"gomaxprocs": strconv.Itoa(runtime.GOMAXPROCS(0)),
		"go":         runtime.Version(),
		"os_arch":    runtime.GOOS + "/" + runtime.GOARCH,
		"grpc_go":    moduleVersion("google.golang.org/grpc"),
	}
}
