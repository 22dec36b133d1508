package faultproxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const (
	// waitTimeout bounds every wait for something that should happen.
	waitTimeout = 10 * time.Second
	// quietWindow is how long a read must stay empty to count as "nothing
	// arrived". It is an assertion window, not a wait for anything.
	quietWindow = 50 * time.Millisecond
)

// backend is a loopback TCP server for a proxy to forward to. It hands each
// connection to a handler and, when stopped, closes its listener and
// connections and waits for its goroutines.
type backend struct {
	ln       net.Listener
	accepted atomic.Int64
	wg       sync.WaitGroup
	stopOnce sync.Once

	mu    sync.Mutex // guards conns
	conns []net.Conn
}

func startBackend(t *testing.T, handle func(net.Conn)) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{ln: ln}
	b.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.accepted.Add(1)
			b.mu.Lock()
			b.conns = append(b.conns, c)
			b.mu.Unlock()
			b.wg.Go(func() { handle(c) })
		}
	})
	t.Cleanup(b.stop)
	return b
}

func (b *backend) addr() string { return b.ln.Addr().String() }

// stop makes the backend disappear, as a crashed server would.
func (b *backend) stop() {
	b.stopOnce.Do(func() {
		_ = b.ln.Close()
		b.mu.Lock()
		for _, c := range b.conns {
			_ = c.Close()
		}
		b.mu.Unlock()
		b.wg.Wait()
	})
}

// startEcho starts a backend that echoes each connection and reports how each
// one ended (nil for a clean EOF) on the returned channel.
func startEcho(t *testing.T) (*backend, <-chan error) {
	t.Helper()
	ended := make(chan error, 64)
	b := startBackend(t, func(c net.Conn) {
		_, err := io.Copy(c, c)
		_ = c.Close() // pass the client's half-close back, as an echo should
		ended <- err
	})
	return b, ended
}

// startSink starts a backend that hands each server-side connection to the
// test, for tests that drive both ends by hand.
func startSink(t *testing.T) (*backend, <-chan net.Conn) {
	t.Helper()
	conns := make(chan net.Conn, 16)
	b := startBackend(t, func(c net.Conn) { conns <- c })
	return b, conns
}

func newProxy(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := New(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	return p
}

func dial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c.(*net.TCPConn)
}

func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitTimeout):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func write(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if err := c.SetWriteDeadline(time.Now().Add(waitTimeout)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatal(err)
	}
}

// expectRead reads exactly len(want) bytes from c and compares them.
func expectRead(t *testing.T, c net.Conn, want string) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(waitTimeout)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("reading %q: %v", want, err)
	}
	if string(got) != want {
		t.Fatalf("read %q, want %q", got, want)
	}
}

func echoOnce(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	write(t, c, msg)
	expectRead(t, c, msg)
}

// expectEOF asserts that c ends cleanly with nothing more to read.
func expectEOF(t *testing.T, c net.Conn) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(waitTimeout)); err != nil {
		t.Fatal(err)
	}
	if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
		t.Fatalf("read %q, %v; want a clean EOF", rest, err)
	}
}

// expectQuiet asserts that nothing can be read from c for quietWindow.
func expectQuiet(t *testing.T, c net.Conn) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(quietWindow)); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	if n, err := c.Read(b[:]); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read %q, %v while stalled; want nothing and a timeout", b[:n], err)
	}
}

// expectReset asserts that c's next read fails with ECONNRESET.
func expectReset(t *testing.T, c net.Conn) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(waitTimeout)); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	if n, err := c.Read(b[:]); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read %q, %v; want ECONNRESET", b[:n], err)
	}
}

// expectResetOnDial dials addr and asserts that the connection is reset,
// either during the dial (the reset can beat the dialer's check of the
// handshake) or on the first read.
func expectResetOnDial(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, waitTimeout)
	if errors.Is(err, syscall.ECONNRESET) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	expectReset(t, c)
}

// proxyGoroutines counts the goroutines running the package's own code,
// without the retries goleak allows, to check that Close waits for them.
func proxyGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for g := range bytes.SplitSeq(buf, []byte("\n\n")) {
		s := string(g)
		if strings.Contains(s, "faultproxy.(*Proxy).") || strings.Contains(s, "faultproxy.(*link).") {
			count++
		}
	}
	return count
}
