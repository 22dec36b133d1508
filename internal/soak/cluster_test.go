package soak

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/streamhub/streamhub/internal/faultproxy"
	"github.com/streamhub/streamhub/internal/redistest"
)

// Server settings short enough for faults to show within the run: a
// stalled client is probed and given up in seconds, a drain takes at most
// drainTimeout. History and membership lifetimes are long enough that no
// member ever falls out of history, so every gap is a bug.
const (
	drainTimeout = 2 * time.Second
	historySize  = 1_000_000
)

func serverArgs(redisAddr, prefix string) []string {
	return []string{
		"--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--http-addr", "",
		"--log-format", "json", "--metrics-log-interval", "0",
		"--engine", "redis", "--redis-addr", redisAddr, "--redis-prefix", prefix,
		"--history-size", strconv.Itoa(historySize), "--history-ttl", "2h", "--session-ttl", "2h",
		"--heartbeat-interval", "500ms", "--max-inactivity", "2s", "--probe-timeout", "1s",
		"--send-timeout", "2s", "--drain-timeout", drainTimeout.String(),
		"--rate-limit", "0", "--memory-budget", "128MiB",
	}
}

// cluster is Redis and the StreamHub instances sharing it. Redis is reached
// through a fault proxy; so is each instance, whose proxy keeps its address
// across restarts (as a load balancer's backend entry would). Everything
// but the instances' up flags and the pick is owned by the test goroutine.
type cluster struct {
	t          *testing.T
	bin        string
	logDir     string
	redis      *redistest.Server
	redisProxy *faultproxy.Proxy
	prefix     string
	instances  []*instance
	frozen     bool          // Redis is SIGSTOPped
	wake       chan struct{} // capacity 1: a process started serving or ended
	pick       *lockedRand   // the clients' choice of instance
	problems   *problems
	jr         *journal
}

// instanceState is where an instance is in its life; owned by the test
// goroutine.
type instanceState int

const (
	stateStarting instanceState = iota + 1 // its process runs, not serving yet
	stateUp                                // serving; clients are sent here
	stateDraining                          // SIGTERMed, not yet exited
	stateDown                              // no process; restarted at restartAt
)

// instance is one StreamHub instance: its stable proxy and its current
// process.
type instance struct {
	name  string
	proxy *faultproxy.Proxy
	up    atomic.Bool // clients' dialers may pick it
	// steady is never killed or drained (its connections are cut and
	// stalled like the others'): one process that lives through the whole
	// run, whose memory and goroutines show what faults leave behind.
	steady bool

	// Owned by the test goroutine.
	state        instanceState
	proc         *process
	incarnations int
	restartAt    time.Time
	downFor      time.Duration // how long a drained instance stays down after it exits
	deadline     time.Time     // for starting and draining
	startFails   int           // processes that exited before serving: Redis did not answer within the server's 5s
	failsInRow   int
	peakRSS      int64 // over every incarnation
	baseline     int   // goroutines of the current incarnation before any client
	longestLived time.Duration
	rssSeries    []int64 // the steady instance's resident memory, once a second
	rssSampled   time.Time
}

// process is one run of the server binary.
type process struct {
	cmd     *exec.Cmd
	logPath string
	started time.Time
	serving chan struct{} // closed once it logged "serving"
	exited  chan struct{} // closed once it exited and its output is read

	// Set before serving closes.
	grpcAddr, adminAddr string
	// Set before exited closes.
	err error
}

// buildServer returns the streamhub binary to run: -soak.server's, or one
// built from this module into dir.
func buildServer(t *testing.T, dir string) string {
	t.Helper()
	if *flagServer != "" {
		return *flagServer
	}
	bin := filepath.Join(dir, "streamhub")
	args := []string{"build", "-o", bin}
	if *flagRaceServer {
		args = append(args, "-race")
	}
	args = append(args, "github.com/streamhub/streamhub/cmd/streamhub")
	start := time.Now()
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("built the server (race detector: %v) in %s", *flagRaceServer, time.Since(start).Round(time.Millisecond))
	return bin
}

// checkEngineFlag fails early, and clearly, with a server that has no
// Redis engine.
func checkEngineFlag(t *testing.T, bin string) {
	t.Helper()
	out, _ := exec.Command(bin, "--help").CombinedOutput()
	if !strings.Contains(string(out), "-redis-addr") {
		t.Fatalf("%s has no --engine redis / --redis-addr flags: the soak needs a server with the Redis engine (or -soak.server PATH)", bin)
	}
}

func newCluster(t *testing.T, n int, seed uint64, probs *problems) *cluster {
	t.Helper()
	logDir := *flagLogDir
	if logDir == "" {
		logDir = t.TempDir()
	} else if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	r := redistest.Start(t) // first: it skips the test without redis-server
	bin := buildServer(t, t.TempDir())
	checkEngineFlag(t, bin)
	rp := newProxy(t, r.Addr())
	c := &cluster{
		t: t, bin: bin, logDir: logDir, redis: r, redisProxy: rp,
		prefix:   fmt.Sprintf("soak%d", seed),
		wake:     make(chan struct{}, 1),
		pick:     newLockedRand(seed ^ 0x5eed),
		problems: probs,
		jr:       probs.jr,
	}
	for i := range n {
		in := &instance{name: fmt.Sprintf("i%d", i+1), steady: i == 0}
		// Refusing until the first process serves; the target is
		// replaced then.
		in.proxy = newProxy(t, r.Addr())
		in.proxy.Refuse(true)
		c.instances = append(c.instances, in)
		c.spawn(in)
	}
	t.Cleanup(c.stopAll)
	c.waitAllUp(60 * time.Second)
	return c
}

func newProxy(t *testing.T, target string) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.New(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("proxy Close: %v", err)
		}
	})
	return p
}

// spawn starts a new process for in.
func (c *cluster) spawn(in *instance) {
	c.t.Helper()
	in.incarnations++
	logPath := filepath.Join(c.logDir, fmt.Sprintf("%s.%d.log", in.name, in.incarnations))
	// O_APPEND: the process's stderr and the copy of its stdout share it.
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(c.bin, serverArgs(c.redisProxy.Addr(), c.prefix)...)
	cmd.Env = append(withoutEnv(os.Environ(), "GOMEMLIMIT=", "STREAMHUB_"), "GORACE=halt_on_error=0 exitcode=66")
	cmd.Stderr = f
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("starting %s: %v", c.bin, err)
	}
	p := &process{cmd: cmd, logPath: logPath, started: time.Now(), serving: make(chan struct{}), exited: make(chan struct{})}
	go p.watch(stdout, f, c.wake)
	c.jr.addf("%s: process %d started (pid %d)", in.name, in.incarnations, cmd.Process.Pid)
	in.proc, in.state, in.deadline = p, stateStarting, time.Now().Add(30*time.Second)
}

// watch copies the process's JSON log to its file, notes where it serves,
// and waits for it to exit.
func (p *process) watch(stdout io.Reader, f *os.File, wake chan struct{}) {
	lines := bufio.NewScanner(stdout)
	lines.Buffer(make([]byte, 64<<10), 1<<20)
	serving := false
	for lines.Scan() {
		_, _ = f.Write(append(lines.Bytes(), '\n'))
		if serving {
			continue
		}
		var line struct {
			Msg   string `json:"msg"`
			GRPC  string `json:"grpc"`
			Admin string `json:"admin"`
		}
		if json.Unmarshal(lines.Bytes(), &line) == nil && line.Msg == "serving" {
			p.grpcAddr, p.adminAddr = line.GRPC, line.Admin
			serving = true
			close(p.serving)
			signal(wake)
		}
	}
	_, _ = io.Copy(io.Discard, stdout) // a line too long for the scanner
	p.err = p.cmd.Wait()
	_ = f.Close()
	close(p.exited)
	signal(wake)
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// step moves every instance along: a process that serves gets the
// clients, one that ended is restarted when due. It reports problems an
// instance had: a crash, a drain that failed or hung.
func (c *cluster) step(now time.Time) {
	for _, in := range c.instances {
		p := in.proc
		switch in.state {
		case stateStarting:
			switch {
			case isClosed(p.serving):
				in.failsInRow = 0
				in.baseline = goroutines(p.adminAddr)
				if err := in.proxy.Retarget(p.grpcAddr); err != nil {
					c.t.Fatal(err)
				}
				in.proxy.Refuse(false)
				in.up.Store(true)
				in.state = stateUp
				c.jr.addf("%s: serving on %s (behind %s), %d goroutines", in.name, p.grpcAddr, in.proxy.Addr(), in.baseline)
			case isClosed(p.exited):
				// Redis frozen or cut for longer than the server waits
				// for it at startup: it exits, and is started again.
				// It exits with status 1 (logged "cannot start"), and is
				// started again, as a supervisor would.
				in.startFails++
				in.failsInRow++
				c.jr.addf("%s: exited before serving: %v", in.name, p.err)
				in.state, in.proc, in.restartAt = stateDown, nil, now.Add(500*time.Millisecond)
				if in.failsInRow == 10 {
					c.problems.addf("%s failed to start 10 times in a row; the last: %v (%s)%s", in.name, p.err, p.logPath, logTail(p.logPath, 5))
				}
			case now.After(in.deadline):
				c.problems.addf("%s did not serve within 30s of its start (%s)", in.name, p.logPath)
				c.killProc(in)
			}
		case stateUp:
			if isClosed(p.exited) {
				c.problems.addf("%s exited on its own: %v (%s)%s", in.name, p.err, p.logPath, logTail(p.logPath, 20))
				in.up.Store(false)
				in.proxy.Refuse(true)
				in.state, in.proc, in.restartAt = stateDown, nil, now
			} else {
				r := rss(p.cmd.Process.Pid)
				in.peakRSS = max(in.peakRSS, r)
				if in.steady && now.Sub(in.rssSampled) >= time.Second {
					in.rssSeries = append(in.rssSeries, r)
					in.rssSampled = now
				}
			}
		case stateDraining:
			switch {
			case isClosed(p.exited):
				if p.err != nil {
					c.problems.addf("%s drained (SIGTERM) and exited with %v, want status 0 (%s)%s", in.name, p.err, p.logPath, logTail(p.logPath, 20))
				}
				in.proxy.Refuse(true)
				in.state, in.proc, in.restartAt = stateDown, nil, now.Add(in.downFor)
				c.jr.addf("%s: drained, exited: %v", in.name, p.err)
			case now.After(in.deadline):
				c.problems.addf("%s still running %s after SIGTERM with --drain-timeout %s (%s)", in.name, drainTimeout+10*time.Second, drainTimeout, p.logPath)
				c.killProc(in)
				in.restartAt = now.Add(in.downFor)
			}
		case stateDown:
			if !now.Before(in.restartAt) {
				c.spawn(in)
			}
		}
	}
}

// killProc ends in's process with SIGKILL and waits for it.
func (c *cluster) killProc(in *instance) {
	c.t.Helper()
	p := in.proc
	in.up.Store(false)
	in.proxy.Refuse(true)
	if p == nil {
		return
	}
	in.longestLived = max(in.longestLived, time.Since(p.started))
	_ = p.cmd.Process.Kill()
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		c.t.Fatalf("%s: no exit 30s after SIGKILL", in.name)
	}
	in.proc, in.state = nil, stateDown
}

// kill crashes an instance (SIGKILL: no goaway, no last save) and has it
// restarted after d.
func (c *cluster) kill(in *instance, d time.Duration) {
	c.killProc(in)
	in.restartAt = time.Now().Add(d)
}

// drain has an instance shut down gracefully (SIGTERM); it is restarted d
// after it exits. The clients' dialers stop picking it at once, as a load
// balancer does once readiness fails.
func (c *cluster) drain(in *instance, d time.Duration) {
	c.t.Helper()
	in.up.Store(false)
	if err := in.proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		c.t.Fatalf("SIGTERM %s: %v", in.name, err)
	}
	in.longestLived = max(in.longestLived, time.Since(in.proc.started))
	in.state, in.deadline, in.downFor = stateDraining, time.Now().Add(drainTimeout+10*time.Second), d
}

// freeze stops Redis (SIGSTOP); thaw lets it go on.
func (c *cluster) freeze() {
	if !c.frozen {
		c.redis.Freeze()
		c.frozen = true
	}
}

func (c *cluster) thaw() {
	if c.frozen {
		c.redis.Thaw()
		c.frozen = false
	}
}

// waitAllUp steps the cluster until every instance serves.
func (c *cluster) waitAllUp(limit time.Duration) {
	c.t.Helper()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	for {
		now := time.Now()
		for _, in := range c.instances {
			if in.state == stateDown && in.restartAt.After(now) {
				in.restartAt = now // no more waiting: the run is over
			}
		}
		c.step(now)
		if c.upCount() == len(c.instances) {
			return
		}
		select {
		case <-c.wake:
		case <-poll.C:
		case <-deadline.C:
			c.t.Fatalf("instances not all serving after %s: %s", limit, c.describe())
		}
	}
}

func (c *cluster) upCount() int {
	n := 0
	for _, in := range c.instances {
		if in.state == stateUp {
			n++
		}
	}
	return n
}

func (c *cluster) describe() string {
	var b strings.Builder
	for _, in := range c.instances {
		fmt.Fprintf(&b, "%s state %d", in.name, in.state)
		if in.proc != nil {
			fmt.Fprintf(&b, " (%s)", in.proc.logPath)
		}
		b.WriteString("; ")
	}
	return b.String()
}

// dialTarget is the address of an instance for a client's new connection:
// one that is up, chosen at random, as a load balancer would; any if none
// is (the connection is then refused, and the client backs off).
func (c *cluster) dialTarget() *instance {
	var up []*instance
	for _, in := range c.instances {
		if in.up.Load() {
			up = append(up, in)
		}
	}
	if len(up) == 0 {
		return c.instances[c.pick.intN(len(c.instances))]
	}
	return up[c.pick.intN(len(up))]
}

// stopAll drains every instance still running and waits for it; run at
// the test's end whatever happened.
func (c *cluster) stopAll() {
	c.thaw()
	for _, in := range c.instances {
		if in.proc != nil && !isClosed(in.proc.exited) {
			in.up.Store(false)
			_ = in.proc.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, in := range c.instances {
		if in.proc == nil {
			continue
		}
		select {
		case <-in.proc.exited:
		case <-time.After(drainTimeout + 20*time.Second):
			_ = in.proc.cmd.Process.Kill()
			<-in.proc.exited
		}
	}
}

// shutdown drains every instance at the end of the run: each must exit
// with status 0 within its drain timeout.
func (c *cluster) shutdown() {
	c.t.Helper()
	for _, in := range c.instances {
		if in.proc != nil {
			in.longestLived = max(in.longestLived, time.Since(in.proc.started))
			in.peakRSS = max(in.peakRSS, rss(in.proc.cmd.Process.Pid))
			in.up.Store(false)
			if err := in.proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				c.problems.addf("SIGTERM %s at the end: %v", in.name, err)
			}
		}
	}
	for _, in := range c.instances {
		if in.proc == nil {
			continue
		}
		select {
		case <-in.proc.exited:
			if in.proc.err != nil {
				c.problems.addf("%s exited with %v after SIGTERM at the end, want status 0 (%s)%s", in.name, in.proc.err, in.proc.logPath, logTail(in.proc.logPath, 20))
			}
		case <-time.After(drainTimeout + 10*time.Second):
			c.problems.addf("%s still running %s after SIGTERM at the end (%s)", in.name, drainTimeout+10*time.Second, in.proc.logPath)
			_ = in.proc.cmd.Process.Kill()
			<-in.proc.exited
		}
	}
}

// scanLogs reports every data race, panic and fatal error the servers
// logged.
func (c *cluster) scanLogs() (races int) {
	c.t.Helper()
	paths, _ := filepath.Glob(filepath.Join(c.logDir, "i*.log"))
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			c.t.Error(err)
			continue
		}
		text := string(data)
		if n := strings.Count(text, "WARNING: DATA RACE"); n > 0 {
			races += n
			i := strings.Index(text, "WARNING: DATA RACE")
			c.problems.addf("%d data race(s) in %s; the first:\n%s", n, path, excerpt(text[i:], 60))
		}
		for _, marker := range []string{"\npanic: ", "\nfatal error: "} {
			if i := strings.Index("\n"+text, marker); i >= 0 {
				c.problems.addf("%s in %s:\n%s", strings.TrimSpace(marker), path, excerpt(text[max(i-1, 0):], 60))
			}
		}
	}
	return races
}

// goroutines is the number of goroutines of the server with this admin
// address, from its pprof endpoint; -1 when it does not answer.
func goroutines(admin string) int {
	hc := http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get("http://" + admin + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	first, err := bufio.NewReader(resp.Body).ReadString('\n')
	_, _ = io.Copy(io.Discard, resp.Body)
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(first, "goroutine profile: total")))
	if err != nil {
		return -1
	}
	return n
}

// rss is the resident memory of process pid in bytes, 0 if unknown.
func rss(pid int) int64 {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(status)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

// logTail is the last n lines of a log, for a failure message.
func logTail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return "\n\t" + strings.Join(lines[max(len(lines)-n, 0):], "\n\t")
}

func excerpt(s string, lines int) string {
	parts := strings.SplitN(s, "\n", lines+1)
	return strings.Join(parts[:min(len(parts), lines)], "\n")
}

// withoutEnv returns env without the variables whose "NAME=" starts with
// one of the prefixes: the servers get their settings from flags only.
func withoutEnv(env []string, prefixes ...string) []string {
	var out []string
	for _, kv := range env {
		keep := true
		for _, p := range prefixes {
			if strings.HasPrefix(kv, p) {
				keep = false
			}
		}
		if keep {
			out = append(out, kv)
		}
	}
	return out
}

// checkGoroutines polls each serving instance until its goroutines are back
// near the count it had before any client, and reports those that are not.
func (c *cluster) checkGoroutines(slack int, limit time.Duration) map[string][2]int {
	counts := map[string][2]int{}
	deadline := time.Now().Add(limit)
	for _, in := range c.instances {
		if in.state != stateUp {
			continue
		}
		n := goroutines(in.proc.adminAddr)
		for (n < 0 || n > in.baseline+slack) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond) // polling the server's count
			n = goroutines(in.proc.adminAddr)
		}
		counts[in.name] = [2]int{in.baseline, n}
		// What they are, for a reader of the logs.
		_ = os.WriteFile(filepath.Join(c.logDir, in.name+".goroutines.txt"), []byte(strings.TrimPrefix(goroutineDump(in.proc.adminAddr), "\n")), 0o644)
		if n < 0 || n > in.baseline+slack {
			c.problems.addf("%s has %d goroutines %s after every client left, %d before any came (slack %d)%s",
				in.name, n, limit, in.baseline, slack, goroutineDump(in.proc.adminAddr))
		}
	}
	return counts
}

// goroutineDump is the server's goroutines, grouped, for a failure message.
func goroutineDump(admin string) string {
	hc := http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get("http://" + admin + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return "\n" + string(data)
}

// journal is the run's timeline — faults, instances coming and going,
// clients losing and regaining their streams — written to journal.log in
// the log directory, to read a problem's circumstances from.
type journal struct {
	mu    sync.Mutex // guards lines
	start time.Time
	lines []string
}

func (j *journal) addf(format string, args ...any) {
	line := fmt.Sprintf("%s %9.3fs "+format, append([]any{time.Now().Format("15:04:05.000"), time.Since(j.start).Seconds()}, args...)...)
	j.mu.Lock()
	defer j.mu.Unlock()
	j.lines = append(j.lines, line)
}

func (j *journal) write(path string) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return os.WriteFile(path, []byte(strings.Join(j.lines, "\n")+"\n"), 0o644)
}

// problems collects what the run found wrong, from any goroutine.
// Each is also written to the journal.
type problems struct {
	jr   *journal
	mu   sync.Mutex // guards list
	list []string
}

func (p *problems) addf(format string, args ...any) {
	p.jr.addf("PROBLEM "+format, args...)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.list = append(p.list, fmt.Sprintf(time.Now().Format("15:04:05.000 ")+format, args...))
}

func (p *problems) all() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.list...)
}

// ctxTimeout is a context for one bounded wait.
func ctxTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
