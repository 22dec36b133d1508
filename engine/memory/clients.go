package memory

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/streamhub/streamhub/engine"
)

// Clients is the in-memory store of clients' memberships, owners and
// instances' liveness. Engines given the same Clients (Options.Clients)
// behave as instances sharing one store, which is how several instances run
// in one process, as in tests; Notify calls the named instance's handler
// directly. Create it with NewClients.
type Clients struct {
	mu        sync.Mutex
	clients   map[string]*clientRecord
	alive     map[string]time.Time      // instance → heartbeat deadline
	instances map[string]engine.Handler // by instance name, for Notify
}

// clientRecord is one client's state; its fields are guarded by Clients.mu.
type clientRecord struct {
	fence   uint64
	owner   string
	opened  time.Time                    // when the stream that claimed last opened
	ms      map[string]engine.Membership // by session
	expires time.Time                    // zero: does not expire
}

// NewClients returns an empty store.
func NewClients() *Clients {
	return &Clients{
		clients:   make(map[string]*clientRecord),
		alive:     make(map[string]time.Time),
		instances: make(map[string]engine.Handler),
	}
}

var errTTL = errors.New("engine memory: ttl must be positive")

// register makes h the handler Notify calls for instance; it returns a
// function that undoes it.
func (c *Clients) register(instance string, h engine.Handler) func() {
	if instance == "" {
		return func() {}
	}
	c.mu.Lock()
	c.instances[instance] = h
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		if c.instances[instance] == h {
			delete(c.instances, instance)
		}
		c.mu.Unlock()
	}
}

// record returns the client's live record, nil when it has none; an
// expired one is dropped. c.mu is held.
func (c *Clients) record(clientID string, now time.Time) *clientRecord {
	r := c.clients[clientID]
	if r != nil && !r.expires.IsZero() && !now.Before(r.expires) {
		delete(c.clients, clientID)
		return nil
	}
	return r
}

// fenced returns the client's record (created when missing) when fence is
// its current fence, or ErrFenced. c.mu is held.
func (c *Clients) fenced(clientID string, fence uint64, now time.Time) (*clientRecord, error) {
	r := c.record(clientID, now)
	var cur uint64
	if r != nil {
		cur = r.fence
	}
	if cur != fence {
		return nil, engine.ErrFenced
	}
	if r == nil {
		r = &clientRecord{}
		c.clients[clientID] = r
	}
	return r, nil
}

// tidy removes r when it holds nothing worth keeping. c.mu is held.
func (c *Clients) tidy(clientID string, r *clientRecord) {
	if r.owner == "" && len(r.ms) == 0 {
		delete(c.clients, clientID)
	}
}

func (c *Clients) saveMemberships(clientID string, fence uint64, ms []engine.Membership) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, err := c.fenced(clientID, fence, time.Now())
	if err != nil {
		return err
	}
	r.ms = make(map[string]engine.Membership, len(ms))
	for _, m := range ms {
		r.ms[m.Session] = m
	}
	c.tidy(clientID, r)
	return nil
}

func (c *Clients) loadMemberships(clientID string) []engine.Membership {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.record(clientID, time.Now())
	if r == nil || len(r.ms) == 0 {
		return nil
	}
	out := make([]engine.Membership, 0, len(r.ms))
	for _, m := range r.ms {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b engine.Membership) int { return strings.Compare(a.Session, b.Session) })
	return out
}

func (c *Clients) retainMemberships(clientID string, fence uint64, ttl time.Duration) error {
	if ttl <= 0 {
		return errTTL
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	r, err := c.fenced(clientID, fence, now)
	if err != nil {
		return err
	}
	r.expires = now.Add(ttl)
	return nil
}

func (c *Clients) keepMemberships(clientID string, fence uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, err := c.fenced(clientID, fence, time.Now())
	if err != nil {
		return err
	}
	r.expires = time.Time{}
	c.tidy(clientID, r)
	return nil
}

func (c *Clients) dropMemberships(clientID string, fence uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, err := c.fenced(clientID, fence, time.Now())
	if err != nil {
		return err
	}
	r.ms = nil
	c.tidy(clientID, r)
	return nil
}

func (c *Clients) claim(clientID, instance string, opened time.Time) (uint64, string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	r := c.record(clientID, now)
	if r == nil {
		r = &clientRecord{}
		c.clients[clientID] = r
	}
	if !opened.IsZero() && opened.Before(r.opened) {
		return 0, "", fmt.Errorf("engine memory: claim of a stream opened before the current one's: %w", engine.ErrFenced)
	}
	if !opened.IsZero() {
		r.opened = opened
	}
	prev := r.owner
	r.fence = engine.NextFence(r.fence, now)
	r.owner = instance
	r.expires = time.Time{} // an owned client's record does not expire
	return r.fence, prev, nil
}

func (c *Clients) release(clientID, instance string, fence uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.record(clientID, time.Now())
	if r == nil || r.fence != fence || r.owner != instance {
		return false
	}
	r.owner = ""
	c.tidy(clientID, r)
	return true
}

func (c *Clients) owner(clientID string) (string, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.record(clientID, time.Now())
	if r == nil {
		return "", 0
	}
	return r.owner, r.fence
}

func (c *Clients) heartbeat(instance string, ttl time.Duration) error {
	if ttl <= 0 {
		return errTTL
	}
	c.mu.Lock()
	c.alive[instance] = time.Now().Add(ttl)
	c.mu.Unlock()
	return nil
}

func (c *Clients) isAlive(instance string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	deadline, ok := c.alive[instance]
	if ok && !time.Now().Before(deadline) {
		delete(c.alive, instance)
		return false
	}
	return ok
}

// notify calls the instance's handler, outside the lock.
func (c *Clients) notify(instance, clientID string, fence uint64) {
	c.mu.Lock()
	h := c.instances[instance]
	c.mu.Unlock()
	if rh, ok := h.(engine.ReplacedHandler); ok {
		rh.HandleReplaced(clientID, fence)
	}
}

// sweep drops expired client records and heartbeats.
func (c *Clients) sweep(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id := range c.clients {
		c.record(id, now)
	}
	for inst, deadline := range c.alive {
		if !now.Before(deadline) {
			delete(c.alive, inst)
		}
	}
}

// SaveMemberships implements engine.Memberships.
func (e *Engine) SaveMemberships(ctx context.Context, clientID string, fence uint64, ms []engine.Membership) (err error) {
	defer e.observer.Done(engine.OpSaveMemberships, time.Now(), &err)
	if err := e.check(ctx); err != nil {
		return err
	}
	return e.clients.saveMemberships(clientID, fence, ms)
}

// LoadMemberships implements engine.Memberships.
func (e *Engine) LoadMemberships(ctx context.Context, clientID string) (ms []engine.Membership, err error) {
	defer e.observer.Done(engine.OpLoadMemberships, time.Now(), &err)
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	return e.clients.loadMemberships(clientID), nil
}

// RetainMemberships implements engine.Memberships.
func (e *Engine) RetainMemberships(ctx context.Context, clientID string, fence uint64, ttl time.Duration) (err error) {
	defer e.observer.Done(engine.OpRetainMemberships, time.Now(), &err)
	if err := e.check(ctx); err != nil {
		return err
	}
	return e.clients.retainMemberships(clientID, fence, ttl)
}

// KeepMemberships implements engine.Memberships.
func (e *Engine) KeepMemberships(ctx context.Context, clientID string, fence uint64) (err error) {
	defer e.observer.Done(engine.OpKeepMemberships, time.Now(), &err)
	if err := e.check(ctx); err != nil {
		return err
	}
	return e.clients.keepMemberships(clientID, fence)
}

// DropMemberships implements engine.Memberships.
func (e *Engine) DropMemberships(ctx context.Context, clientID string, fence uint64) (err error) {
	defer e.observer.Done(engine.OpDropMemberships, time.Now(), &err)
	if err := e.check(ctx); err != nil {
		return err
	}
	return e.clients.dropMemberships(clientID, fence)
}

// Claim implements engine.Clients.
func (e *Engine) Claim(ctx context.Context, clientID, instance string, opened time.Time) (fence uint64, previous string, err error) {
	defer e.observer.Done(engine.OpClaim, time.Now(), &err)
	if err := e.check(ctx); err != nil {
		return 0, "", err
	}
	return e.clients.claim(clientID, instance, opened)
}

// Release implements engine.Clients.
func (e *Engine) Release(ctx context.Context, clientID, instance string, fence uint64) (ok bool, err error) {
	defer e.observer.Done(engine.OpRelease, time.Now(), &err)
	if err := e.check(ctx); err != nil {
		return false, err
	}
	return e.clients.release(clientID, instance, fence), nil
}

// Owner implements engine.Clients.
func (e *Engine) Owner(ctx context.Context, clientID string) (instance string, fence uint64, err error) {
	defer e.observer.Done(engine.OpOwner, time.Now(), &err)
	if err := e.check(ctx); err != nil {
		return "", 0, err
	}
	instance, fence = e.clients.owner(clientID)
	return instance, fence, nil
}

// Heartbeat implements engine.Clients.
func (e *Engine) Heartbeat(ctx context.Context, instance string, ttl time.Duration) (err error) {
	defer e.observer.Done(engine.OpHeartbeat, time.Now(), &err)
	if err := e.check(ctx); err != nil {
		return err
	}
	return e.clients.heartbeat(instance, ttl)
}

// Alive implements engine.Clients.
func (e *Engine) Alive(ctx context.Context, instance string) (alive bool, err error) {
	defer e.observer.Done(engine.OpAlive, time.Now(), &err)
	if err := e.check(ctx); err != nil {
		return false, err
	}
	return e.clients.isAlive(instance), nil
}

// Notify implements engine.Clients: the instance's handler, when it is a
// ReplacedHandler of an engine on the same Clients, is called before Notify
// returns. It must not call back into Notify.
func (e *Engine) Notify(ctx context.Context, instance, clientID string, fence uint64) (err error) {
	defer e.observer.Done(engine.OpNotify, time.Now(), &err)
	if err := e.check(ctx); err != nil {
		return err
	}
	e.clients.notify(instance, clientID, fence)
	return nil
}
