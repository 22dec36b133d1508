package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Server kinds, as they appear in the results.
const (
	kindBaseline  = "baseline"
	kindStreamHub = "streamhub" // the memory engine: one process
	// kindRedis is StreamHub with --engine redis, on a redis-server the
	// bench starts for the run.
	kindRedis = "streamhub-redis"
	// kindRedis2 is two instances of kindRedis sharing one redis-server.
	kindRedis2 = "streamhub-redis-x2"
)

// instancesOf is how many StreamHub processes a kind of server runs, and
// whether they share a Redis.
func instancesOf(kind string) (n int, redis bool) {
	switch kind {
	case kindRedis:
		return 1, true
	case kindRedis2:
		return 2, true
	}
	return 1, false
}

// target is a server under test, listening on loopback.
type target struct {
	kind      string
	grpcAddr  string
	adminAddr string // serves /debug/pprof/
	pid       int    // the process whose VmRSS is the server's memory
	// peers are the other instances of a server that runs several, sharing
	// its sessions through Redis; the first instance is the one above.
	peers []instance
	redis *redisServer // the Redis the instances share; nil without one
	stop  func() error
}

// instance is one StreamHub process of a target.
type instance struct {
	grpcAddr string
	pid      int
}

// grpcAddrs is the gRPC address of every instance, the first one first.
func (t *target) grpcAddrs() []string {
	addrs := []string{t.grpcAddr}
	for _, p := range t.peers {
		addrs = append(addrs, p.grpcAddr)
	}
	return addrs
}

// cpu is the CPU time every instance of the server has used (not Redis's).
func (t *target) cpu() (time.Duration, error) {
	total, err := processCPU(t.pid)
	for _, p := range t.peers {
		if err != nil {
			break
		}
		var c time.Duration
		c, err = processCPU(p.pid)
		total += c
	}
	return total, err
}

// settings is what a scenario asks of the servers it starts.
type settings struct {
	maxConns  int           // streams the server must accept at once
	heartbeat time.Duration // server heartbeat interval; 0 leaves the default
}

// launcher starts the servers the scenarios measure.
type launcher interface {
	start(kind string, s settings) (*target, error)
	// describe says how a kind of server runs, for the report.
	describe(kind string) string
}

// childLauncher runs each server as a child process, as in production: a
// StreamHub binary, and this binary in its -serve-baseline mode.
type childLauncher struct {
	serverBin  string   // the streamhub binary
	serverArgs []string // extra flags for it
	self       string   // this binary
	// baselineArgs are extra flags of the -serve-baseline mode, to try
	// grpc-go server options on the baseline.
	baselineArgs []string
	redisBin     string // redis-server, for the Redis kinds
}

// redisPrefix is the --redis-prefix of the benchmarked instances.
const redisPrefix = "bench"

// streamHubArgs are the flags every benchmarked StreamHub gets. The
// inbound rate limit is off: with it, scenario 2 would measure the limit.
// The WebSocket transport is off: the bench speaks gRPC, and two instances
// must not both want its default port.
func (l childLauncher) streamHubArgs(s settings) []string {
	args := []string{
		"--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--http-addr", "",
		"--log-format", "json", "--metrics-log-interval", "0", "--drain-timeout", "2s",
		"--rate-limit", "0",
		"--max-connections", strconv.Itoa(max(s.maxConns, 5000)),
	}
	if s.heartbeat > 0 {
		args = append(args, "--heartbeat-interval", s.heartbeat.String())
	}
	return append(args, l.serverArgs...)
}

func (l childLauncher) describe(kind string) string {
	switch kind {
	case kindStreamHub:
		return fmt.Sprintf("child process %s %s (inbound rate limit off), a fresh one per run",
			l.serverBin, strings.Join(quoteArgs(l.streamHubArgs(settings{})), " "))
	case kindRedis, kindRedis2:
		n, _ := instancesOf(kind)
		return fmt.Sprintf("%d× the same with --engine redis --redis-addr ADDR --redis-prefix %s, sharing a fresh "+
			"`%s --save \"\" --appendonly no` on a free loopback port per run", n, redisPrefix, l.redisBin)
	}
	opts := "default options"
	if len(l.baselineArgs) > 0 {
		opts = "options " + strings.Join(l.baselineArgs, " ")
	}
	return "child process `streamhub-bench -serve-baseline`: bare grpc-go server, " + opts +
		", implementing streampb.StreamServiceServer directly (echo; plain broadcast loop for fan-out), a fresh one per run"
}

// quoteArgs shows empty arguments as "".
func quoteArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "" {
			a = `""`
		}
		out[i] = a
	}
	return out
}

func (l childLauncher) start(kind string, s settings) (*target, error) {
	switch kind {
	case kindBaseline:
		args := []string{"-serve-baseline"}
		if s.heartbeat > 0 {
			args = append(args, "-heartbeat-interval", s.heartbeat.String())
		}
		p, err := startChild(kind, exec.Command(l.self, append(args, l.baselineArgs...)...))
		if err != nil {
			return nil, err
		}
		return &target{kind: kind, grpcAddr: p.line.GRPC, adminAddr: p.line.Admin, pid: p.pid, stop: p.stop}, nil
	case kindStreamHub:
		p, err := startChild(kind, exec.Command(l.serverBin, l.streamHubArgs(s)...))
		if err != nil {
			return nil, err
		}
		return &target{kind: kind, grpcAddr: p.line.GRPC, adminAddr: p.line.Admin, pid: p.pid, stop: p.stop}, nil
	case kindRedis, kindRedis2:
		return l.startRedisKind(kind, s)
	}
	return nil, fmt.Errorf("unknown server kind %q", kind)
}

// startRedisKind starts a redis-server, then the instances that share it.
// Stopping the target stops the instances, then Redis.
func (l childLauncher) startRedisKind(kind string, s settings) (*target, error) {
	if l.redisBin == "" {
		return nil, errors.New("no redis-server: " + installRedis)
	}
	rs, err := startRedis(l.redisBin)
	if err != nil {
		return nil, err
	}
	n, _ := instancesOf(kind)
	args := append(l.streamHubArgs(s), "--engine", "redis", "--redis-addr", rs.addr, "--redis-prefix", redisPrefix)
	var procs []*child
	stopAll := func() error {
		var errs []error
		for _, p := range procs {
			errs = append(errs, p.stop())
		}
		return errors.Join(append(errs, rs.stop())...)
	}
	for range n {
		p, err := startChild(kind, exec.Command(l.serverBin, args...))
		if err != nil {
			_ = stopAll()
			return nil, err
		}
		procs = append(procs, p)
	}
	t := &target{kind: kind, grpcAddr: procs[0].line.GRPC, adminAddr: procs[0].line.Admin, pid: procs[0].pid,
		redis: rs, stop: stopAll}
	for _, p := range procs[1:] {
		t.peers = append(t.peers, instance{grpcAddr: p.line.GRPC, pid: p.pid})
	}
	return t, nil
}

// child is a server process that reported serving.
type child struct {
	line servingLine
	pid  int
	stop func() error // SIGTERM, then SIGKILL after 15s; idempotent
}

// startChild starts cmd and waits for its serving line.
func startChild(kind string, cmd *exec.Cmd) (*child, error) {
	w := newServingWatcher()
	cmd.Stdout = w
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", kind, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var line servingLine
	select {
	case line = <-w.serving:
	case err := <-exited:
		return nil, fmt.Errorf("%s exited before serving: %v", kind, err)
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		return nil, fmt.Errorf("%s did not report serving within 10s", kind)
	}
	var once sync.Once
	var stopErr error
	stop := func() error {
		once.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case err := <-exited:
				stopErr = err
			case <-time.After(15 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
				stopErr = fmt.Errorf("%s did not stop within 15s of SIGTERM; killed", kind)
			}
		})
		return stopErr
	}
	return &child{line: line, pid: cmd.Process.Pid, stop: stop}, nil
}

// servingWatcher is a child's stdout: it finds the "serving" line with the
// addresses, then discards everything, so the child never blocks on a full
// pipe (StreamHub logs one line per stream end).
type servingWatcher struct {
	serving chan servingLine // receives the line once

	mu    sync.Mutex // guards buf and found
	buf   []byte
	found bool
}

func newServingWatcher() *servingWatcher {
	return &servingWatcher{serving: make(chan servingLine, 1)}
}

func (w *servingWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.found {
		return len(p), nil
	}
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		var l servingLine
		if json.Unmarshal(w.buf[:i], &l) == nil && l.Msg == "serving" && l.GRPC != "" && l.Admin != "" {
			w.found, w.buf = true, nil
			w.serving <- l
			return len(p), nil
		}
		w.buf = w.buf[i+1:]
	}
}

// findServerBin is the streamhub binary to benchmark when -server-bin is not
// given: ./bin/streamhub (after `go build -o bin/ ./cmd/...`), else the one
// next to this binary.
func findServerBin(self string) (string, error) {
	candidates := []string{filepath.Join("bin", "streamhub")}
	if self != "" {
		candidates = append(candidates, filepath.Join(filepath.Dir(self), "streamhub"))
	}
	for _, c := range candidates {
		if fi, err := os.Stat(c); err == nil && !fi.IsDir() {
			return filepath.Abs(c)
		}
	}
	return "", errors.New("no streamhub binary in ./bin or next to this one: run `go build -o bin/ ./cmd/...` or pass -server-bin")
}
