// Package faultproxy is a loopback TCP proxy for fault-injection tests: put
// between a client and a server (gRPC client and StreamHub, StreamHub and
// Redis), it resets, stalls, refuses or redirects connections on command.
package faultproxy

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
)

// ErrNotLoopback is returned for a target that is not a loopback IP address:
// fault loops must never reach anything outside the test's own host.
var ErrNotLoopback = errors.New("faultproxy: target is not a loopback IP address")

// Proxy forwards every connection accepted on its loopback address to its
// target. Its methods are safe for concurrent use.
type Proxy struct {
	ln     *net.TCPListener
	cancel context.CancelFunc // abandons dials in progress, for Close
	wg     sync.WaitGroup     // every goroutine the proxy starts; Close waits for it

	// mu guards the fields below. It is the only lock in the package and is
	// never held across I/O.
	mu     sync.Mutex
	target string
	refuse bool
	resume chan struct{}      // non-nil while stalled; closed by Unstall
	links  map[*link]struct{} // connections being forwarded
	closed bool

	closeOnce sync.Once
	closeErr  error
	acceptErr error // why the accept loop stopped, if not Close; read after wg.Wait

	accepted, cut atomic.Int64
}

// Stats counts what a proxy has done since New, for test reports.
type Stats struct {
	Accepted int64 // connections accepted, including those refused or not forwarded
	Cut      int64 // connections reset by Cut
}

// New starts a proxy on 127.0.0.1 with an ephemeral port that forwards to
// target, which must be a loopback IP address and port ("127.0.0.1:6379",
// "[::1]:50051"). Host names are refused, since a name could resolve off-host.
func New(target string) (*Proxy, error) {
	if err := checkLoopback(target); err != nil {
		return nil, err
	}
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{ln: ln, cancel: cancel, target: target, links: map[*link]struct{}{}}
	p.wg.Go(func() { p.acceptLoop(ctx) })
	return p, nil
}

// Addr is the address clients dial to reach the target through the proxy.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Stats returns the proxy's counters.
func (p *Proxy) Stats() Stats {
	return Stats{Accepted: p.accepted.Load(), Cut: p.cut.Load()}
}

// Cut aborts every connection being forwarded with a TCP RST to both the
// client and the target, as a crashed host or a dropped route would. New
// connections are accepted and forwarded as before.
//
// A connection counts once the proxy has dialed the target for it, which a
// client cannot tell from its own dial: to cut a fresh connection for sure,
// see a byte go through it first.
func (p *Proxy) Cut() {
	p.mu.Lock()
	links := slices.Collect(maps.Keys(p.links))
	p.mu.Unlock()
	for _, l := range links {
		if l.teardown(true) {
			p.cut.Add(1)
		}
	}
}

// Stall stops forwarding both ways on every connection, current and new, as a
// frozen network path would. Bytes, half-closes and resets are held in order,
// not dropped: one read's worth per direction in the proxy, the rest in the
// kernel, until the TCP windows fill and the peers' writes block.
func (p *Proxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resume == nil {
		p.resume = make(chan struct{})
	}
}

// Unstall resumes forwarding after Stall, starting with what was held.
func (p *Proxy) Unstall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resume != nil {
		close(p.resume)
		p.resume = nil
	}
}

// Refuse sets whether new connections are reset as soon as they are accepted,
// as by a host whose server has died. Current connections carry on.
func (p *Proxy) Refuse(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refuse = on
}

// Retarget points new connections at target (a loopback IP address, as for
// New), for a backend restarted on another port; current ones stay put.
func (p *Proxy) Retarget(target string) error {
	if err := checkLoopback(target); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = target
	return nil
}

// Close stops accepting, closes every connection and returns once every
// goroutine the proxy started has ended. It may be called more than once.
func (p *Proxy) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		links := slices.Collect(maps.Keys(p.links))
		p.mu.Unlock()
		p.cancel()
		err := p.ln.Close()
		for _, l := range links {
			l.teardown(false)
		}
		p.wg.Wait()
		p.closeErr = errors.Join(err, p.acceptErr)
	})
	return p.closeErr
}

func (p *Proxy) acceptLoop(ctx context.Context) {
	for {
		c, err := p.ln.AcceptTCP()
		if err != nil {
			// An unexpected failure is for Close to report: retrying would only spin.
			if !errors.Is(err, net.ErrClosed) {
				p.acceptErr = fmt.Errorf("faultproxy: accept: %w", err)
			}
			return
		}
		p.accepted.Add(1)
		p.wg.Go(func() { p.serve(ctx, c) })
	}
}

// serve dials the target for an accepted connection and forwards between the
// two until both directions end or the link is torn down.
func (p *Proxy) serve(ctx context.Context, client *net.TCPConn) {
	p.mu.Lock()
	target, refuse := p.target, p.refuse
	p.mu.Unlock()
	if refuse {
		closeConn(client, true)
		return
	}
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", target)
	if err != nil {
		// The client sees what it would see from a dead backend: a reset.
		closeConn(client, true)
		return
	}
	l := &link{client: client, server: conn.(*net.TCPConn), done: make(chan struct{})}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		l.teardown(false)
		return
	}
	p.links[l] = struct{}{}
	p.mu.Unlock()
	var pumps sync.WaitGroup
	pumps.Go(func() { p.pump(l, l.server, l.client) })
	p.pump(l, l.client, l.server)
	pumps.Wait()
	l.teardown(false)
	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
}

// flowing blocks while the proxy is stalled. It reports false if done closes
// first, so a torn-down link does not wait for Unstall.
func (p *Proxy) flowing(done <-chan struct{}) bool {
	for {
		p.mu.Lock()
		resume := p.resume
		p.mu.Unlock()
		if resume == nil {
			return true
		}
		// Look again after waking: a Stall may have followed the Unstall.
		select {
		case <-resume:
		case <-done:
			return false
		}
	}
}

func checkLoopback(target string) error {
	if ap, err := netip.ParseAddrPort(target); err != nil || !ap.Addr().IsLoopback() {
		return fmt.Errorf("%w: %q", ErrNotLoopback, target)
	}
	return nil
}
