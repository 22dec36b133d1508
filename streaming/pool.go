package streaming

import (
	"container/list"
	"sync"
	"time"

	"google.golang.org/grpc/status"
)

// client is everything the server knows about one client ID: its live
// stream, the connection its memberships are attached to, and the
// memberships themselves, which outlive the connection for the session TTL.
type client struct {
	id string

	// Guarded by pool.mu.
	live       *conn         // the stream holding this client's slot
	retained   *list.Element // in pool.retained while no stream is live and memberships remain
	detachedAt time.Time     // when the last stream ended

	claimMu sync.Mutex // with a shared engine, orders its streams' claims as they registered

	mu      sync.Mutex         // guards the fields below
	conn    *conn              // the connection the memberships are attached to
	members map[string]*member // by session name
}

// pool holds the clients by ID and enforces the connection limit: the
// capacity check and the registration are one step under one lock. Clients
// with memberships but no stream are retained, oldest first, up to a bound.
type pool struct {
	maxLive     int
	maxRetained int

	mu       sync.Mutex // guards the fields below and every client's live, retained and detachedAt
	clients  map[string]*client
	conns    []*conn // the live streams; conn.slot is the index
	retained list.List
	draining bool
}

func newPool(maxLive, maxRetained int) *pool {
	return &pool{maxLive: maxLive, maxRetained: maxRetained, clients: make(map[string]*client)}
}

// register makes c the live stream of its client ID. It returns the stream
// c replaces, if any, which the caller must end.
//
// A stream the client cancelled before it got here is refused: a newer
// stream of the same client may have registered meanwhile (gRPC runs each
// stream's handler in its own goroutine, in no particular order), and the
// client's live stream must not be replaced by one it abandoned. On one
// connection gRPC reads the cancellation before the newer stream's
// headers, so checking under the lock settles it.
func (p *pool) register(c *conn) (old *conn, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.draining {
		return nil, errDraining
	}
	if err := c.ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	cl := p.clients[c.id]
	if cl == nil || cl.live == nil {
		if len(p.conns) >= p.maxLive {
			return nil, errMaxConnections
		}
	}
	if cl == nil {
		cl = &client{id: c.id, members: make(map[string]*member)}
		p.clients[c.id] = cl
	}
	if cl.retained != nil {
		p.retained.Remove(cl.retained)
		cl.retained = nil
	}
	old, cl.live = cl.live, c
	if old != nil {
		p.unslot(old)
	}
	c.client = cl
	c.slot = len(p.conns)
	p.conns = append(p.conns, c)
	return old, nil
}

func (p *pool) unslot(c *conn) {
	last := p.conns[len(p.conns)-1]
	p.conns[c.slot], last.slot = last, c.slot
	p.conns[len(p.conns)-1] = nil
	p.conns = p.conns[:len(p.conns)-1]
	c.slot = -1
}

// unregister frees c's slot unless a newer stream already holds it. A
// client left with memberships is retained; one without is forgotten. It
// returns the retained client evicted to stay within the bound, if any,
// whose memberships the caller must drop.
func (p *pool) unregister(c *conn, now time.Time) (evicted *client) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cl := c.client
	if cl.live != c {
		return nil
	}
	cl.live = nil
	p.unslot(c)
	cl.mu.Lock()
	keep := len(cl.members) > 0
	cl.mu.Unlock()
	if !keep {
		delete(p.clients, cl.id)
		return nil
	}
	cl.detachedAt = now
	cl.retained = p.retained.PushBack(cl)
	if p.retained.Len() > p.maxRetained {
		return p.popRetained()
	}
	return nil
}

// unregisterShared frees c's slot unless a newer stream already holds it,
// and forgets its client, whose memberships the shared engine keeps. It
// reports whether it did; the caller then drops the memberships here.
func (p *pool) unregisterShared(c *conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	cl := c.client
	if cl.live != c {
		return false
	}
	cl.live = nil
	p.unslot(c)
	delete(p.clients, cl.id)
	return true
}

// live returns the live stream of the client, or nil.
func (p *pool) live(clientID string) *conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cl := p.clients[clientID]; cl != nil {
		return cl.live
	}
	return nil
}

// popRetained forgets the client retained for the longest. Called with
// p.mu held.
func (p *pool) popRetained() *client {
	front := p.retained.Front()
	if front == nil {
		return nil
	}
	cl := front.Value.(*client)
	p.retained.Remove(front)
	cl.retained = nil
	delete(p.clients, cl.id)
	return cl
}

// expire forgets the clients retained since before cutoff and returns
// them; the caller drops their memberships.
func (p *pool) expire(cutoff time.Time) []*client {
	p.mu.Lock()
	defer p.mu.Unlock()
	var expired []*client
	for front := p.retained.Front(); front != nil; front = p.retained.Front() {
		if !front.Value.(*client).detachedAt.Before(cutoff) {
			break
		}
		expired = append(expired, p.popRetained())
	}
	return expired
}

// dropRetained lets go of m, a retained membership whose session was
// evicted, and of its client when that was its last membership.
func (p *pool) dropRetained(m *member) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cl := m.client
	cl.mu.Lock()
	defer cl.mu.Unlock()
	name := *m.sess.name
	if cl.members[name] != m {
		return // restored, left or replaced meanwhile
	}
	delete(cl.members, name)
	if len(cl.members) == 0 && cl.retained != nil {
		p.retained.Remove(cl.retained)
		cl.retained = nil
		if p.clients[cl.id] == cl {
			delete(p.clients, cl.id)
		}
	}
}

// count is the number of live streams.
func (p *pool) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// retainedCount is the number of retained clients.
func (p *pool) retainedCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.retained.Len()
}

// snapshot appends the live streams to buf.
func (p *pool) snapshot(buf []*conn) []*conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append(buf, p.conns...)
}

// drain refuses new streams from now on and returns the live ones.
func (p *pool) drain() []*conn {
	p.mu.Lock()
	p.draining = true
	p.mu.Unlock()
	return p.snapshot(nil)
}

// forget drops every membership of a client the pool no longer holds.
func (cl *client) forget(r *sessions) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	for _, m := range cl.members {
		m.sess.mu.Lock()
		m.sess.drop(r, m)
		m.sess.mu.Unlock()
	}
	clear(cl.members)
}
