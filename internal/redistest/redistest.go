// Package redistest starts a throwaway redis-server for a test: on a free
// loopback port, without persistence, in the test's temporary directory, and
// stopped when the test ends.
package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/streamhub/streamhub/engine"
	"github.com/streamhub/streamhub/engine/redis"
)

// Server is a redis-server a test started.
type Server struct {
	t    testing.TB
	port int
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
}

// Start starts a redis-server, or skips the test when none is installed
// (fails instead when STREAMHUB_REQUIRE_REDIS=1).
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		msg := "redis-server not found on PATH: install redis-server (Debian: apt-get install -y redis-server)"
		if os.Getenv("STREAMHUB_REQUIRE_REDIS") == "1" {
			t.Fatal(msg + "; STREAMHUB_REQUIRE_REDIS=1 requires it")
		}
		t.Skip(msg)
	}
	s := &Server{t: t, port: freePort(t)}
	s.start()
	t.Cleanup(s.Stop)
	return s
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Kill stops the server at once (SIGKILL), as a crash would, and waits for
// the process to end. Its data is gone: nothing is persisted.
func (s *Server) Kill() {
	s.t.Helper()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill() // SIGKILL ends a frozen process too
	<-s.done
	s.cmd = nil
}

// Freeze stops the server's process without ending it (SIGSTOP): it keeps
// its connections but answers nothing, as a hung Redis would.
func (s *Server) Freeze() {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		s.t.Fatalf("freezing redis-server: %v", err)
	}
}

// Thaw lets a frozen server run again (SIGCONT).
func (s *Server) Thaw() {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		s.t.Fatalf("thawing redis-server: %v", err)
	}
}

// Restart starts a new, empty server on the same port.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	s.start()
}

// Stop stops the server; tests need not call it.
func (s *Server) Stop() { s.Kill() }

func (s *Server) start() {
	s.t.Helper()
	cmd := exec.Command("redis-server",
		"--bind", "127.0.0.1", "--port", strconv.Itoa(s.port),
		"--save", "", "--appendonly", "no", "--dir", s.t.TempDir())
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("starting redis-server: %v", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	s.cmd, s.done = cmd, done
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
		if err == nil {
			// A listening port is not enough: wait for an answer to PING.
			_ = c.SetDeadline(time.Now().Add(time.Second))
			_, _ = c.Write([]byte("PING\r\n"))
			buf := make([]byte, 7)
			n, _ := c.Read(buf)
			c.Close()
			if string(buf[:n]) == "+PONG\r\n" {
				return
			}
		}
		select {
		case <-done:
			s.t.Fatalf("redis-server on port %d exited at start", s.port)
		default:
		}
		if time.Now().After(deadline) {
			s.Kill()
			s.t.Fatalf("redis-server on port %d did not answer: %v", s.port, err)
		}
		time.Sleep(10 * time.Millisecond) // polling for the server to listen
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// String describes the server for test logs.
func (s *Server) String() string { return fmt.Sprintf("redis-server on %s", s.Addr()) }

// Engine connects a Redis engine to s as instance, with history bounds b.
// Its handler is the returned relay, to be set once what handles the
// engine's entries exists. It is closed when the test ends, if not before.
func (s *Server) Engine(b engine.Bounds, instance string) (*redis.Engine, *engine.Relay) {
	s.t.Helper()
	relay := new(engine.Relay)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	eng, err := redis.New(ctx, redis.Options{Addr: s.Addr(), Bounds: b, Handler: relay, Instance: instance})
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { _ = eng.Close() })
	return eng, relay
}
