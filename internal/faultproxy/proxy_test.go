package faultproxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

func TestNewAcceptsOnlyLoopbackTargets(t *testing.T) {
	for _, tc := range []struct {
		target string
		ok     bool
	}{
		{"127.0.0.1:6379", true},
		{"127.1.2.3:6379", true},
		{"[::1]:50051", true},
		{"10.0.0.1:6379", false},
		{"[2001:db8::1]:50051", false},
		{"0.0.0.0:6379", false},
		{"localhost:6379", false}, // a name could resolve off-host
		{":6379", false},
		{"127.0.0.1", false},
	} {
		t.Run(tc.target, func(t *testing.T) {
			p, err := New(tc.target)
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				if err := p.Close(); err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrNotLoopback) {
				t.Fatalf("New(%q) = %v; want ErrNotLoopback", tc.target, err)
			}
		})
	}
}

func TestEcho(t *testing.T) {
	b, _ := startEcho(t)
	p := newProxy(t, b.addr())

	c := dial(t, p.Addr())
	echoOnce(t, c, "hello")
	echoOnce(t, c, "and again")

	// A half-close travels through: the echo ends cleanly and so does the
	// client's stream.
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	expectEOF(t, c)
	if got := p.Stats(); got != (Stats{Accepted: 1}) {
		t.Fatalf("stats %+v", got)
	}
}

func TestCut(t *testing.T) {
	for _, tc := range []struct {
		name  string
		stall bool // cut while bytes are held
	}{
		{name: "forwarding"},
		{name: "stalled", stall: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, ended := startEcho(t)
			p := newProxy(t, b.addr())
			c := dial(t, p.Addr())
			echoOnce(t, c, "before")
			if tc.stall {
				p.Stall()
				write(t, c, "held")
			}

			p.Cut()

			expectReset(t, c)
			if err := receive(t, ended, "the backend's end"); !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("backend connection ended with %v; want ECONNRESET", err)
			}
			if got := p.Stats(); got != (Stats{Accepted: 1, Cut: 1}) {
				t.Fatalf("stats %+v", got)
			}

			p.Unstall()
			echoOnce(t, dial(t, p.Addr()), "after")
			if got := b.accepted.Load(); got != 2 {
				t.Fatalf("backend accepted %d connections; want 2", got)
			}
		})
	}
}

func TestStallHoldsBytesUntilUnstall(t *testing.T) {
	b, conns := startSink(t)
	p := newProxy(t, b.addr())
	c := dial(t, p.Addr())
	s := receive(t, conns, "the backend connection")
	write(t, c, "ready")
	expectRead(t, s, "ready")

	p.Stall()
	write(t, c, "one ")
	write(t, c, "two")
	write(t, s, "three")
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	// A connection made while stalled is forwarded to the target, but its
	// bytes are held too, and so is a half-close with no bytes before it.
	c2 := dial(t, p.Addr())
	s2 := receive(t, conns, "the second backend connection")
	write(t, s2, "new")
	if err := c2.CloseWrite(); err != nil {
		t.Fatal(err)
	}

	expectQuiet(t, s)
	expectQuiet(t, c)
	expectQuiet(t, s2)
	expectQuiet(t, c2)

	p.Unstall()
	expectRead(t, s, "one two")
	expectEOF(t, s)
	expectRead(t, c, "three")
	expectRead(t, c2, "new")
	expectEOF(t, s2)
}

func TestStallBlocksWritersAndLosesNothing(t *testing.T) {
	b, conns := startSink(t)
	p := newProxy(t, b.addr())
	c := dial(t, p.Addr())
	s := receive(t, conns, "the backend connection")

	// Several times what the loopback socket buffers hold (about 4 MiB here),
	// so a writer facing a stalled proxy must block; a proxy that kept
	// reading into memory would take it all. The odd period catches bytes
	// arriving out of order.
	pattern := make([]byte, 251)
	for i := range pattern {
		pattern[i] = byte(i)
	}
	data := bytes.Repeat(pattern, (16<<20)/len(pattern))
	p.Stall()
	if err := c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	n, err := c.Write(data)
	if !errors.Is(err, os.ErrDeadlineExceeded) || n == 0 || n == len(data) {
		t.Fatalf("wrote %d of %d bytes, %v; want a partial write cut short by the deadline", n, len(data), err)
	}
	expectQuiet(t, s)

	p.Unstall()
	if err := s.SetReadDeadline(time.Now().Add(waitTimeout)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, n)
	if _, err := io.ReadFull(s, got); err != nil {
		t.Fatalf("reading the %d held bytes: %v", n, err)
	}
	if !bytes.Equal(got, data[:n]) {
		t.Fatal("the held bytes arrived changed or out of order")
	}
}

func TestRefuse(t *testing.T) {
	b, _ := startEcho(t)
	p := newProxy(t, b.addr())
	live := dial(t, p.Addr())
	echoOnce(t, live, "before")

	p.Refuse(true)
	expectResetOnDial(t, p.Addr())
	echoOnce(t, live, "current connections are not affected")
	if got := b.accepted.Load(); got != 1 {
		t.Fatalf("backend accepted %d connections; want 1 (the refused one must not reach it)", got)
	}

	p.Refuse(false)
	echoOnce(t, dial(t, p.Addr()), "after")
	if got := p.Stats(); got != (Stats{Accepted: 3}) {
		t.Fatalf("stats %+v", got)
	}
}

func TestRetarget(t *testing.T) {
	old, _ := startEcho(t)
	p := newProxy(t, old.addr())
	live := dial(t, p.Addr())
	echoOnce(t, live, "to old")

	restarted, _ := startEcho(t)
	if err := p.Retarget(restarted.addr()); err != nil {
		t.Fatal(err)
	}
	echoOnce(t, dial(t, p.Addr()), "to restarted")
	echoOnce(t, live, "still to old")
	if o, r := old.accepted.Load(), restarted.accepted.Load(); o != 1 || r != 1 {
		t.Fatalf("old accepted %d, restarted %d; want 1 each", o, r)
	}

	if err := p.Retarget("192.0.2.1:6379"); !errors.Is(err, ErrNotLoopback) {
		t.Fatalf("Retarget off-host = %v; want ErrNotLoopback", err)
	}
	echoOnce(t, dial(t, p.Addr()), "target kept")
	if got := restarted.accepted.Load(); got != 2 {
		t.Fatalf("restarted accepted %d; want 2", got)
	}
}

func TestUnreachableTargetResetsClients(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	p := newProxy(t, dead)

	expectResetOnDial(t, p.Addr())
	if got := p.Stats(); got != (Stats{Accepted: 1}) {
		t.Fatalf("stats %+v", got)
	}
}

func TestCloseEndsEverything(t *testing.T) {
	b, _ := startEcho(t)
	p, err := New(b.addr())
	if err != nil {
		t.Fatal(err)
	}
	busy := dial(t, p.Addr())
	echoOnce(t, busy, "forwarding")
	half := dial(t, p.Addr())
	echoOnce(t, half, "half-closed")
	if err := half.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	p.Stall()
	held := dial(t, p.Addr())
	write(t, held, "held")

	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if n := proxyGoroutines(); n != 0 {
		t.Fatalf("%d proxy goroutines still running after Close", n)
	}
	for _, c := range []net.Conn{busy, half, held} {
		if err := c.SetReadDeadline(time.Now().Add(waitTimeout)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadAll(c); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("a client connection outlived Close")
		}
	}
	if c, err := net.DialTimeout("tcp", p.Addr(), waitTimeout); err == nil {
		_ = c.Close()
		t.Fatal("the proxy still accepts connections after Close")
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
