package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// installRedis says how to get what scenarios 5 and 6 need.
const installRedis = "install redis-server (Debian/Ubuntu: apt-get install -y redis-server) or pass -redis-server PATH"

// redisServer is a throwaway redis-server the bench started for one run:
// on a free loopback port, without persistence, in a directory of its own.
type redisServer struct {
	addr string
	pid  int
	stop func() error
}

// startRedis starts bin and waits until it answers PING. The port is found
// by listening on port 0 and closing: another process may take it in
// between, so a server that exits at start is tried again on another port.
func startRedis(bin string) (*redisServer, error) {
	var err error
	for range 3 {
		var rs *redisServer
		if rs, err = startRedisOnce(bin); err == nil {
			return rs, nil
		}
	}
	return nil, err
}

func startRedisOnce(bin string) (*redisServer, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "streamhub-bench-redis-")
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", strconv.Itoa(port),
		"--save", "", "--appendonly", "no", "--dir", dir, "--loglevel", "warning")
	// Its log, for the error when it does not start. One writer for both:
	// exec then writes to it from one goroutine at a time, and is done
	// with it when Wait returns.
	out := new(strings.Builder)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err = redisPing(addr); err == nil {
			break
		}
		select {
		case werr := <-exited:
			os.RemoveAll(dir)
			return nil, fmt.Errorf("redis-server exited at start (%v): %s", werr, strings.TrimSpace(out.String()))
		case <-time.After(10 * time.Millisecond): // polling for it to listen
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			os.RemoveAll(dir)
			return nil, fmt.Errorf("redis-server on %s did not answer within 10s: %v", addr, err)
		}
	}
	var once sync.Once
	var stopErr error
	stop := func() error {
		once.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case err := <-exited:
				if err != nil {
					stopErr = fmt.Errorf("redis-server: %w", err)
				}
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
				stopErr = errors.New("redis-server did not stop within 10s of SIGTERM; killed")
			}
			os.RemoveAll(dir)
		})
		return stopErr
	}
	return &redisServer{addr: addr, pid: cmd.Process.Pid, stop: stop}, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// redisCommand sends one command to the Redis at addr on a connection of
// its own and returns the reply: a simple string, an integer's digits or a
// bulk string's bytes.
func redisCommand(addr string, args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(c, b.String()); err != nil {
		return "", err
	}
	return readRedisReply(bufio.NewReader(c))
}

// readRedisReply reads a simple string, integer, error or bulk string reply
// (RESP2), all that the bench asks for.
func readRedisReply(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", errors.New("redis: empty reply")
	}
	switch line[0] {
	case '+':
		return line[1:], nil
	case ':':
		return line[1:], nil
	case '-':
		return "", fmt.Errorf("redis: %s", line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", fmt.Errorf("redis: unexpected reply %q", line)
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return "", fmt.Errorf("redis: unexpected reply %q", line)
}

func redisPing(addr string) error {
	got, err := redisCommand(addr, "PING")
	if err == nil && got != "PONG" {
		err = fmt.Errorf("PING answered %q", got)
	}
	return err
}

// redisSample is the counters of a Redis at one moment.
type redisSample struct {
	cpu       time.Duration // the process's user and system CPU time
	publishes uint64        // PUBLISH calls: the publish script's, one per accepted message
	scripts   uint64        // EVALSHA and EVAL calls: publishes and every other engine script
	reads     uint64        // read events on client connections (total_reads_processed)
	clients   int           // client connections, the one reading this included
}

// sampleRedis reads the CPU time of the redis-server process and its INFO.
func sampleRedis(rs *redisServer) (redisSample, error) {
	var s redisSample
	var err error
	if s.cpu, err = processCPU(rs.pid); err != nil {
		return s, err
	}
	info, err := redisCommand(rs.addr, "INFO", "stats", "clients", "commandstats")
	if err != nil {
		return s, fmt.Errorf("redis INFO: %w", err)
	}
	return parseRedisInfo(info, s.cpu)
}

// parseRedisInfo reads the counters redisSample needs from an INFO reply.
func parseRedisInfo(info string, cpu time.Duration) (redisSample, error) {
	s := redisSample{cpu: cpu}
	var haveReads, haveClients bool
	for line := range strings.Lines(info) {
		key, value, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		switch key {
		case "total_reads_processed":
			n, err := strconv.ParseUint(value, 10, 64)
			if err != nil {
				return s, fmt.Errorf("redis INFO: %s", strings.TrimSpace(line))
			}
			s.reads, haveReads = n, true
		case "connected_clients":
			n, err := strconv.Atoi(value)
			if err != nil {
				return s, fmt.Errorf("redis INFO: %s", strings.TrimSpace(line))
			}
			s.clients, haveClients = n, true
		case "cmdstat_publish", "cmdstat_evalsha", "cmdstat_eval":
			// cmdstat_publish:calls=5,usec=12,usec_per_call=2.40,...
			calls, ok := strings.CutPrefix(strings.Split(value, ",")[0], "calls=")
			n, err := strconv.ParseUint(calls, 10, 64)
			if !ok || err != nil {
				return s, fmt.Errorf("redis INFO: %s", strings.TrimSpace(line))
			}
			if key == "cmdstat_publish" {
				s.publishes = n
			} else {
				s.scripts += n
			}
		}
	}
	if !haveReads || !haveClients {
		return s, errors.New("redis INFO has no total_reads_processed or connected_clients (Redis 6.0 or later reports them)")
	}
	return s, nil
}

// redisUse is what Redis did during a measurement window.
type redisUse struct {
	// Publishes is the PUBLISH calls Redis ran: one per message the engine
	// accepted, from its publish script.
	Publishes     uint64  `json:"publishes"`
	PublishesRate float64 `json:"publishes_per_s"`
	// Scripts is the EVALSHA and EVAL calls: publishes, and the engine's
	// other scripts (memberships, positions, history reads).
	Scripts uint64 `json:"scripts"`
	// Reads is the read events Redis processed on client connections.
	Reads uint64 `json:"reads"`
	// PublishesPerRead above 1 means publishes arrive pipelined: several
	// commands in one read, not one round trip at a time.
	PublishesPerRead float64 `json:"publishes_per_read"`
	// Connections is the engine's connections to Redis at the window's end,
	// over every instance (the bench's own is not counted).
	Connections int `json:"connections"`
	// CPUPercent is Redis's CPU time over the window, in % of one core.
	CPUPercent float64 `json:"cpu_percent"`
	// CPUPerPublishUS is Redis's CPU time per publish, in µs.
	CPUPerPublishUS float64 `json:"cpu_per_publish_us"`
	// ServerCPUPerPublishUS is the StreamHub instances' CPU time per
	// publish, in µs: what a publish costs the servers, with its
	// deliveries.
	ServerCPUPerPublishUS float64 `json:"server_cpu_per_publish_us"`
}

// redisWindow is what Redis did between two samples over elapsed, with
// serverCPU the StreamHub instances' CPU time in the same window.
func redisWindow(a, b redisSample, elapsed, serverCPU time.Duration) *redisUse {
	u := &redisUse{
		Publishes:   b.publishes - a.publishes,
		Scripts:     b.scripts - a.scripts,
		Reads:       b.reads - a.reads,
		Connections: max(b.clients-1, 0),
	}
	cpu := b.cpu - a.cpu
	if elapsed > 0 {
		u.PublishesRate = float64(u.Publishes) / elapsed.Seconds()
		u.CPUPercent = 100 * float64(cpu) / float64(elapsed)
	}
	if u.Reads > 0 {
		u.PublishesPerRead = float64(u.Publishes) / float64(u.Reads)
	}
	if u.Publishes > 0 {
		u.CPUPerPublishUS = float64(cpu) / float64(time.Microsecond) / float64(u.Publishes)
		if serverCPU >= 0 {
			u.ServerCPUPerPublishUS = float64(serverCPU) / float64(time.Microsecond) / float64(u.Publishes)
		}
	}
	return u
}

// redisUnavailable says why scenarios 5 and 6 cannot run with redisBin and
// serverBin, or "" when they can: both programs must exist, and the server
// must know --engine.
func redisUnavailable(ctx context.Context, redisBin, serverBin string) string {
	if redisBin == "" {
		return "redis-server not found on PATH: " + installRedis
	}
	if fi, err := os.Stat(redisBin); err != nil || fi.IsDir() {
		return fmt.Sprintf("%s is not a program: %s", redisBin, installRedis)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// --version exits at once, after the flags were parsed: a server that
	// does not know --engine exits 2 instead.
	if out, err := exec.CommandContext(ctx, serverBin, "--engine", "memory", "--version").CombinedOutput(); err != nil {
		first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return fmt.Sprintf("%s has no Redis engine (%s: %s)", serverBin, err, first)
	}
	return ""
}
