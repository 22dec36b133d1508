// Package memory is StreamHub's in-process engine: one instance, sessions
// kept in this process's memory, entries handed to the Handler synchronously.
//
// Lock order: a session's mu may be held while taking Engine.mu (a Handler
// called under a session's lock may subscribe another session), never the
// other way round; no code holds two sessions' locks. Clients.mu is a leaf:
// nothing else is taken under it, and handlers are called outside it.
package memory

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/streamhub/streamhub/engine"
)

// Options configures an Engine. Zero values mean the documented defaults.
type Options struct {
	// Bounds limits each session's history; Size must be at least 1.
	Bounds engine.Bounds
	// Handler receives the entries of subscribed sessions; nil drops them.
	Handler engine.Handler
	// Observer is told about every operation; nil: nobody is.
	Observer engine.Observer
	// Instance names this engine's instance: Notify for it reaches
	// Handler (when it is an engine.ReplacedHandler). Empty: none does.
	Instance string
	// Clients is the store of memberships and owners; engines given the
	// same one share it as instances would. Nil: a store of its own.
	Clients *Clients
	// SweepInterval is how often expired history and sessions are dropped
	// from memory (they are also dropped lazily when touched). Default: the
	// smallest of TTL, MetaTTL and one minute.
	SweepInterval time.Duration
}

// Engine is the in-memory engine. Create it with New.
type Engine struct {
	bounds   engine.Bounds
	handler  engine.Handler
	observer engine.Observer
	clients  *Clients
	unreg    func() // undoes the registration for Notify

	mu       sync.RWMutex        // guards sessions
	sessions map[string]*session // by name

	closed    atomic.Bool
	closeOnce sync.Once
	stop      chan struct{} // closed by Close
	swept     chan struct{} // closed when the sweeper has ended
}

var _ engine.Engine = (*Engine)(nil)

// New returns a running engine; Close stops its sweeper.
func New(opts Options) (*Engine, error) {
	b := opts.Bounds.WithDefaults()
	if err := b.Validate(); err != nil {
		return nil, err
	}
	h := opts.Handler
	if h == nil {
		h = engine.HandlerFuncs{}
	}
	interval := opts.SweepInterval
	if interval <= 0 {
		interval = time.Minute
		for _, d := range []time.Duration{b.TTL, b.MetaTTL} {
			if d > 0 && d < interval {
				interval = d
			}
		}
	}
	c := opts.Clients
	if c == nil {
		c = NewClients()
	}
	e := &Engine{
		bounds:   b,
		handler:  h,
		observer: opts.Observer,
		clients:  c,
		unreg:    c.register(opts.Instance, h),
		sessions: make(map[string]*session),
		stop:     make(chan struct{}),
		swept:    make(chan struct{}),
	}
	go e.sweeper(interval)
	return e, nil
}

// Publish implements engine.Engine. The Handler is called before Publish
// returns, under the session's lock: it must not call back into the engine
// for the same session.
func (e *Engine) Publish(ctx context.Context, name string, p engine.Publication) (ent engine.Entry, err error) {
	defer e.observer.Done(engine.OpPublish, time.Now(), &err)
	if err := e.check(ctx); err != nil {
		return engine.Entry{}, err
	}
	s := e.lock(name)
	defer s.mu.Unlock()
	now := time.Now()
	s.refresh(e.bounds, now)
	if prev, ok := s.history.find(p.ClientID, p.ID); ok {
		return prev, nil // sent again: accepted once
	}
	s.seq++
	accepted := now.Truncate(time.Millisecond)
	if accepted.Before(s.lastAccepted) {
		accepted = s.lastAccepted
	}
	s.lastAccepted = accepted
	s.touched = now
	ent = engine.Entry{Seq: s.seq, Epoch: s.epoch, Accepted: accepted, Publication: p}
	s.history.push(ent, e.bounds)
	if s.subscribed {
		e.handler.HandleEntry(name, ent)
	}
	return ent, nil
}

// PublishMany implements engine.Engine.
func (e *Engine) PublishMany(ctx context.Context, ps []engine.Publishing) ([]engine.Entry, []error) {
	entries, errs := make([]engine.Entry, len(ps)), make([]error, len(ps))
	for i, p := range ps {
		entries[i], errs[i] = e.Publish(ctx, p.Session, p.Publication)
	}
	return entries, errs
}

// History implements engine.Engine.
func (e *Engine) History(ctx context.Context, name string, after uint64, limit int) (entries []engine.Entry, pos engine.Position, err error) {
	defer e.observer.Done(engine.OpHistory, time.Now(), &err)
	if err := e.check(ctx); err != nil {
		return nil, engine.Position{}, err
	}
	s := e.lock(name)
	defer s.mu.Unlock()
	s.refresh(e.bounds, time.Now())
	return s.history.after(after, limit), engine.Position{Seq: s.seq, Epoch: s.epoch}, nil
}

// Subscribe implements engine.Engine.
func (e *Engine) Subscribe(ctx context.Context, names ...string) (err error) {
	defer e.observer.Done(engine.OpSubscribe, time.Now(), &err)
	if err := e.check(ctx); err != nil {
		return err
	}
	for _, name := range names {
		s := e.lock(name)
		s.subscribed = true
		s.mu.Unlock()
	}
	return nil
}

// Unsubscribe implements engine.Engine.
func (e *Engine) Unsubscribe(ctx context.Context, names ...string) (err error) {
	defer e.observer.Done(engine.OpUnsubscribe, time.Now(), &err)
	if err := e.check(ctx); err != nil {
		return err
	}
	for _, name := range names {
		if s := e.lockExisting(name); s != nil {
			s.subscribed = false
			s.mu.Unlock()
		}
	}
	return nil
}

// Remove implements engine.Engine.
func (e *Engine) Remove(ctx context.Context, name string) (err error) {
	defer e.observer.Done(engine.OpRemove, time.Now(), &err)
	if err := e.check(ctx); err != nil {
		return err
	}
	if s := e.lockExisting(name); s != nil {
		s.reset("")
		s.mu.Unlock()
	}
	return nil
}

// Touch implements engine.Engine.
func (e *Engine) Touch(ctx context.Context, ttl time.Duration, names ...string) (err error) {
	defer e.observer.Done(engine.OpTouch, time.Now(), &err)
	if err := e.check(ctx); err != nil {
		return err
	}
	now := time.Now()
	until := now.Add(ttl)
	for _, name := range names {
		s := e.lockExisting(name)
		if s == nil {
			continue
		}
		// A meta past its life but not yet swept is gone: it must not
		// come back.
		s.expire(e.bounds, now)
		if s.epoch != "" && until.After(s.kept) {
			s.kept = until
		}
		s.mu.Unlock()
	}
	return nil
}

// Close implements engine.Engine: it stops the sweeper and waits for it.
func (e *Engine) Close() error {
	e.closeOnce.Do(func() {
		e.closed.Store(true)
		e.unreg()
		close(e.stop)
	})
	<-e.swept
	return nil
}

func (e *Engine) check(ctx context.Context) error {
	if e.closed.Load() {
		return engine.ErrClosed
	}
	return ctx.Err()
}

// lock returns the named session, created when missing, locked.
func (e *Engine) lock(name string) *session {
	for {
		e.mu.RLock()
		s := e.sessions[name]
		e.mu.RUnlock()
		if s == nil {
			e.mu.Lock()
			if s = e.sessions[name]; s == nil {
				s = &session{}
				e.sessions[name] = s
			}
			e.mu.Unlock()
		}
		s.mu.Lock()
		if !s.dead {
			return s
		}
		// The sweeper dropped it between the lookup and the lock.
		s.mu.Unlock()
	}
}

// lockExisting returns the named session locked, or nil when there is none.
func (e *Engine) lockExisting(name string) *session {
	e.mu.RLock()
	s := e.sessions[name]
	e.mu.RUnlock()
	if s == nil {
		return nil
	}
	s.mu.Lock()
	if s.dead {
		s.mu.Unlock()
		return nil
	}
	return s
}

// sweeper drops aged history and forgotten sessions every interval, so that
// memory follows the Bounds even for sessions nobody touches again.
func (e *Engine) sweeper(interval time.Duration) {
	defer close(e.swept)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
			e.sweep(time.Now())
		}
	}
}

func (e *Engine) sweep(now time.Time) {
	e.clients.sweep(now)
	e.mu.RLock()
	names := make([]string, 0, len(e.sessions))
	all := make([]*session, 0, len(e.sessions))
	for name, s := range e.sessions {
		names = append(names, name)
		all = append(all, s)
	}
	e.mu.RUnlock()
	var gone []int
	for i, s := range all {
		s.mu.Lock()
		s.expire(e.bounds, now)
		if s.epoch == "" && !s.subscribed {
			s.dead = true
			gone = append(gone, i)
		}
		s.mu.Unlock()
	}
	if len(gone) == 0 {
		return
	}
	e.mu.Lock()
	for _, i := range gone {
		if e.sessions[names[i]] == all[i] {
			delete(e.sessions, names[i])
		}
	}
	e.mu.Unlock()
}
