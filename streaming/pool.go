package streaming

import (
	"sync"
	"time"
)

// client is everything the server knows about one client ID: its live
// stream, the connection its memberships are attached to, and the
// memberships themselves, which outlive the connection for the session TTL.
type client struct {
	id string

	// live is the stream holding this client's slot in the pool. Guarded by
	// pool.mu.
	live *conn

	mu         sync.Mutex         // guards the fields below; taken before any session's lock
	conn       *conn              // the connection the memberships are attached to
	members    map[string]*member // by session name
	detachedAt time.Time          // when conn last became nil
}

// pool holds the clients by ID and enforces the connection limit: the
// capacity check and the registration are one step under one lock.
type pool struct {
	max int

	mu       sync.Mutex // guards the fields below and every client's live
	clients  map[string]*client
	live     int
	draining bool
}

func newPool(max int) *pool {
	return &pool{max: max, clients: make(map[string]*client)}
}

// register makes c the live stream of its client ID. It returns the stream
// c replaces, if any, which the caller must end.
func (p *pool) register(c *conn) (old *conn, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.draining {
		return nil, errDraining
	}
	cl := p.clients[c.id]
	if cl == nil {
		cl = &client{id: c.id, members: make(map[string]*member)}
	}
	if cl.live == nil {
		if p.live >= p.max {
			return nil, errMaxConnections
		}
		p.live++
	}
	p.clients[c.id] = cl
	old, cl.live = cl.live, c
	c.client = cl
	return old, nil
}

// unregister frees c's slot unless a newer stream already holds it.
func (p *pool) unregister(c *conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.client.live == c {
		c.client.live = nil
		p.live--
	}
}

// count is the number of live streams.
func (p *pool) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.live
}

// conns returns the live streams.
func (p *pool) conns(buf []*conn) []*conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, cl := range p.clients {
		if cl.live != nil {
			buf = append(buf, cl.live)
		}
	}
	return buf
}

// drain refuses new streams from now on and returns the live ones.
func (p *pool) drain() []*conn {
	p.mu.Lock()
	p.draining = true
	p.mu.Unlock()
	return p.conns(nil)
}

// expire forgets the clients whose connection ended before cutoff, with
// their retained memberships.
func (p *pool) expire(cutoff time.Time) {
	var expired []*client
	p.mu.Lock()
	for id, cl := range p.clients {
		if cl.live != nil {
			continue
		}
		cl.mu.Lock()
		if cl.conn == nil && cl.detachedAt.Before(cutoff) {
			delete(p.clients, id)
			expired = append(expired, cl)
		}
		cl.mu.Unlock()
	}
	p.mu.Unlock()
	for _, cl := range expired {
		cl.mu.Lock()
		for _, m := range cl.members {
			m.sess.mu.Lock()
			m.leave()
			m.sess.mu.Unlock()
		}
		clear(cl.members)
		cl.mu.Unlock()
	}
}
