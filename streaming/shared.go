package streaming

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/streamhub/streamhub/engine"
	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	"goa.design/clue/log"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// With a shared engine (WithEngine), several instances serve the same
// sessions. The engine assigns each session's seq, keeps its history and
// feeds every instance that has members in it; a session here is then a
// local view: the engine's entries applied in seq order, gaps filled from
// its history before anything is passed on, a restart (another epoch, or
// entries the engine no longer has) told to every member as a joined with
// recovered false. Memberships and positions live in the engine with the
// client, so that the client's next stream, on any instance, restores
// them; the engine's client ownership decides which stream of a client is
// the live one.
const (
	// engineTimeout bounds each engine call made for a stream.
	engineTimeout = 3 * time.Second
	// keepInterval is how often the instance says it is alive and saves
	// the positions that moved.
	keepInterval = time.Second
	// aliveTTL is how long the instance counts as alive after saying so:
	// a stream replacing one of its clients elsewhere does not wait for
	// it longer.
	aliveTTL = 3 * time.Second
	// syncInterval is how often sessions that heard nothing are compared
	// with the engine: its live feed is at most once.
	syncInterval = 2 * time.Second
	// keepMeta is how long each Touch keeps the epoch of a session with
	// members here: until well after the next one.
	keepMeta = 3 * syncInterval
	// resaveInterval is how often memberships are saved even when they did
	// not change, so that an instance that missed being told its client
	// was claimed elsewhere finds out.
	resaveInterval = 10 * time.Second
)

// WithEngine has the service share its sessions, memberships and clients
// with other instances through eng. instance names this process in the
// engine's client ownership; it must be unique among the instances. The
// engine's Handler must forward to the service (engine.Relay), and the
// caller closes the engine after Shutdown.
func WithEngine(eng engine.Engine, instance string) Option {
	return func(s *Service) { s.shared = newShared(eng, instance) }
}

// EngineBounds is what an engine shared by services of cfg must keep of
// each session: cfg's history bounds, and the session's epoch for
// HistoryTTL after its last publish — a session nobody is a member of is
// gone then, as it is without an engine. The services keep the epochs of
// sessions with members alive, live or retained (engine.Engine.Touch).
func EngineBounds(cfg Config) engine.Bounds {
	cfg = cfg.withDefaults()
	return engine.Bounds{Size: cfg.HistorySize, MaxBytes: cfg.HistoryMaxBytes, TTL: cfg.HistoryTTL, MetaTTL: cfg.HistoryTTL}
}

// shared is the engine and the work of keeping the local views in step
// with it.
type shared struct {
	eng      engine.Engine
	instance string
	failure  atomic.Pointer[error] // the engine's last failure to answer; nil while it does

	mu     sync.Mutex          // guards the fields below
	behind map[string]struct{} // sessions to compare with the engine
	gone   map[string]struct{} // sessions no longer here: unsubscribe
	wake   chan struct{}       // capacity 1: the syncer has work
	kick   chan struct{}       // capacity 1: memberships changed, save them
}

func newShared(eng engine.Engine, instance string) *shared {
	return &shared{
		eng: eng, instance: instance,
		behind: make(map[string]struct{}), gone: make(map[string]struct{}),
		wake: make(chan struct{}, 1), kick: make(chan struct{}, 1),
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// resync has the syncer compare the session with the engine.
func (sh *shared) resync(name string) {
	sh.mu.Lock()
	sh.behind[name] = struct{}{}
	sh.mu.Unlock()
	signal(sh.wake)
}

// forget has the syncer unsubscribe the session, gone from here.
func (sh *shared) forget(name string) {
	sh.mu.Lock()
	sh.gone[name] = struct{}{}
	delete(sh.behind, name)
	sh.mu.Unlock()
	signal(sh.wake)
}

func (sh *shared) take() (behind, gone []string) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for n := range sh.behind {
		behind = append(behind, n)
	}
	for n := range sh.gone {
		gone = append(gone, n)
	}
	clear(sh.behind)
	clear(sh.gone)
	return behind, gone
}

// isClosed reports whether ch is closed; false for nil.
func isClosed(ch chan struct{}) bool {
	if ch == nil {
		return false
	}
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// call returns a context for one engine call.
func call() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), engineTimeout)
}

// EngineErr is nil while the shared engine answers, and says why not when
// it does not; always nil without one.
func (s *Service) EngineErr() error {
	if s.shared == nil {
		return nil
	}
	if err := s.shared.failure.Load(); err != nil {
		return *err
	}
	return nil
}

// HandleEntry applies an entry of a session from the engine: the next one
// is passed on to the members, an older one is dropped, and one beyond the
// next, or of another epoch, has the syncer read what came between.
func (s *Service) HandleEntry(name string, e engine.Entry) {
	s.offer(name, e, true)
}

// offer applies e when it is the session's next entry. One beyond the
// next, or of another epoch, has the syncer read what came between when
// gap says the entry came from the live feed, which delivers in order; the
// engine's answer to a publish may overtake the feed, which is only behind
// then, and reading history for a view that is only behind could find that
// history no longer holds what the feed still brings.
func (s *Service) offer(name string, e engine.Entry, gap bool) {
	ss := s.sessions.get(name)
	if ss == nil || !isClosed(ss.loaded) {
		return // the load reads history after subscribing, then resyncs
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.removed {
		return
	}
	switch last := ss.hist.last(); {
	case e.Epoch == *ss.epoch && e.Seq == last+1:
		ss.apply(s.sessions, e)
	case e.Epoch == *ss.epoch && e.Seq <= last:
	case gap:
		s.shared.resync(name)
	}
}

// HandleResync compares every session with the engine: its live feed was
// lost for a while.
func (s *Service) HandleResync() {
	for _, ss := range s.sessions.snapshot() {
		s.shared.resync(*ss.name)
	}
}

// HandleReplaced ends the client's stream here when another stream, on
// another instance, claimed the client after it.
func (s *Service) HandleReplaced(clientID string, fence uint64) {
	c := s.pool.live(clientID)
	if c == nil {
		return
	}
	for n := c.notified.Load(); n < fence && !c.notified.CompareAndSwap(n, fence); n = c.notified.Load() {
	}
	if f := c.fence.Load(); f != 0 && f < fence {
		c.close(reasonReplaced, nil)
	}
}

// apply appends an entry from the engine, the session's next. Called with
// s.mu held.
func (s *session) apply(r *sessions, e engine.Entry) {
	var id *string
	if e.ID != "" {
		id = &e.ID
	}
	ent, enc := s.newEntry(&e.ClientID, id, s.epoch, e.Data)
	ent.Accepted = e.Accepted
	ent.ts = e.Accepted.UnixMilli()
	ent.enc.Set(appendSeqTime(enc, e.Seq, ent.ts))
	s.add(r, ent)
	s.heard = time.Now()
}

// catchUp brings the local view to the engine's position pos, given the
// entries after the view's last seq that the engine holds (all of them
// when pos is of another epoch). A view that cannot continue — another
// epoch, or entries the engine no longer holds — restarts. Called with
// s.mu held.
func (s *session) catchUp(r *sessions, pos engine.Position, entries []engine.Entry) {
	if pos.Epoch != *s.epoch {
		from := pos.Seq
		if len(entries) > 0 {
			from = entries[0].Seq - 1
		}
		s.restart(pos.Epoch, from)
	}
	for _, e := range entries {
		last := s.hist.last()
		switch {
		case e.Epoch != *s.epoch || e.Seq <= last:
			continue
		case e.Seq > last+1:
			s.restart(*s.epoch, e.Seq-1)
		}
		s.apply(r, e)
	}
	if pos.Epoch == *s.epoch && pos.Seq > s.hist.last() {
		s.restart(*s.epoch, pos.Seq) // what came between is gone from the engine too
	}
	s.heard = time.Now()
}

// restart starts the local view again after seq in epoch. Cursors on the
// old chain stop at its end; every attached member is told, through its
// sender, to continue from the start of the new one (see opRejoin).
// Called with s.mu held.
func (s *session) restart(epoch string, seq uint64) {
	end := s.hist.tail
	s.hist.restart(seq)
	if s.epoch == nil || epoch != *s.epoch {
		s.epoch = &epoch
	}
	for m := range s.members {
		if m.active.Load() {
			m.active.Store(false) // what follows is not pending for it until it rejoins
			m.stopTail = end
		}
		if m.conn != nil {
			m.conn.q.pushRestore(outItem{op: opRejoin, m: m, seq: seq, epoch: s.epoch})
		} else {
			m.restarted.Store(true) // not attached yet: its restore recovers nothing
		}
	}
}

// loadSession makes the session called name exist here: subscribed to the
// engine and loaded with its position and history. It returns
// errTooManySessions when the session limit refuses a new one.
func (s *Service) loadSession(name string) error {
	r := s.sessions
	r.mu.Lock()
	ss := r.m[name]
	if ss != nil {
		r.mu.Unlock()
		<-ss.loaded
		return ss.loadErr
	}
	if r.max > 0 && len(r.m) >= r.max {
		r.mu.Unlock()
		return errTooManySessions
	}
	ss = r.newSession(name)
	ss.loaded = make(chan struct{})
	ss.epoch = new(string) // none yet: the engine's position restarts it
	r.mu.Unlock()

	ctx, cancel := call()
	defer cancel()
	var entries []engine.Entry
	var pos engine.Position
	err := s.shared.eng.Subscribe(ctx, name)
	if err == nil {
		entries, pos, err = s.shared.eng.History(ctx, name, 0, -1)
	}
	ss.mu.Lock()
	if err != nil {
		ss.loadErr = engineError(err)
		r.remove(ss)
	} else {
		ss.catchUp(r, pos, entries)
	}
	ss.mu.Unlock()
	close(ss.loaded)
	if err == nil {
		s.shared.resync(name) // what was published while it loaded
	}
	return ss.loadErr
}

// errTooManySessions is loadSession's refusal at the session limit.
var errTooManySessions = errors.New("too many sessions")

// engineError is what a client is told when the engine did not serve it.
func engineError(err error) error {
	return fmt.Errorf("engine: %w", err)
}

// publication is a data message on its way to the shared engine.
type publication struct {
	sess *session
	msg  *streamsvc.DataMessage
}

// publishShared queues msg for the engine. A stream's publications go to
// the engine in the client's order, pipelined: while one round is on its
// way, the next gathers. A client with --queue-size of them on their way
// is not read from until the engine has taken some.
func (c *conn) publishShared(ss *session, msg *streamsvc.DataMessage) {
	for {
		c.pubMu.Lock()
		if len(c.pubs) < c.svc.cfg.QueueSize {
			c.pubs = append(c.pubs, publication{ss, msg})
			start := !c.publishing
			c.publishing = true
			c.pubMu.Unlock()
			if start {
				c.running.Add(1) // a part of the stream until it ends
				c.svc.wg.Add(1)
				go c.publishLoop()
			}
			return
		}
		c.pubMu.Unlock()
		select {
		case <-c.pubRoom:
		case <-c.closing:
			return
		}
	}
}

// publishLoop hands the stream's publications to the engine, a round at a
// time, until none is left.
func (c *conn) publishLoop() {
	defer c.svc.wg.Done()
	defer c.exit()
	defer c.recoverPanic()
	var round []publication
	for {
		c.pubMu.Lock()
		round = append(round[:0], c.pubs...)
		clear(c.pubs)
		c.pubs = c.pubs[:0]
		if len(round) == 0 {
			c.publishing = false
			c.pubMu.Unlock()
			signal(c.pubIdle)
			return
		}
		c.pubMu.Unlock()
		signal(c.pubRoom)
		c.svc.publishRound(c, round)
		clear(round)
	}
}

// refuseLate refuses a publication the engine did not take. The stream
// may be closing meanwhile: a flush then still sends the refusal (the
// final flush waits for the publisher first).
func (c *conn) refuseLate(msg *streamsvc.DataMessage, reason string) {
	if it := refusal(msg, reason); !c.q.push(it, c.closing) {
		c.q.pushRestore(it)
	}
}

// waitPublished waits until the publications on their way to the engine
// are done with, or the stream is killed: a flush then includes their
// deliveries.
func (c *conn) waitPublished() {
	for {
		c.pubMu.Lock()
		busy := c.publishing
		c.pubMu.Unlock()
		if !busy {
			return
		}
		select {
		case <-c.pubIdle:
		case <-c.killed:
			return
		}
	}
}

// publishRound has the engine accept a round of c's publications; each
// reaches the members, here and on every instance, when the engine feeds
// it back, or is refused with the reason.
func (s *Service) publishRound(c *conn, round []publication) {
	ps := make([]engine.Publishing, 0, len(round))
	sent := make([]*publication, 0, len(round))
	for i := range round {
		p := &round[i]
		p.sess.mu.Lock()
		err := p.sess.fit(s.sessions, int64(len(p.msg.Data)))
		p.sess.mu.Unlock()
		if err != nil {
			c.refuseLate(p.msg, err.Error())
			continue
		}
		pub := engine.Publishing{Session: *p.sess.name, Publication: engine.Publication{ClientID: c.id, Data: p.msg.Data}}
		if p.msg.ID != nil {
			pub.ID = *p.msg.ID
		}
		ps = append(ps, pub)
		sent = append(sent, p)
	}
	if len(ps) == 0 {
		return
	}
	ctx, cancel := call()
	entries, errs := s.shared.eng.PublishMany(ctx, ps)
	cancel()
	for i, p := range sent {
		if errs[i] != nil {
			c.refuseLate(p.msg, engineError(errs[i]).Error())
			continue
		}
		s.offer(ps[i].Session, entries[i], false) // at once, unless the live feed was quicker
	}
}

// claim makes this instance the owner of c's client under a new fence,
// and tells the instance that owned it, if it is alive, to end its stream.
// Streams of one client claim in the order they registered here, so that
// an older stream never fences a newer one; a stream already replaced here
// claims nothing.
func (s *Service) claim(c *conn) error {
	cl := c.client
	cl.claimMu.Lock()
	defer cl.claimMu.Unlock()
	if s.pool.live(c.id) != c {
		return nil
	}
	ctx, cancel := call()
	defer cancel()
	eng := s.shared.eng
	fence, prev, err := eng.Claim(ctx, c.id, s.shared.instance, c.opened)
	switch {
	case errors.Is(err, engine.ErrFenced):
		return reasons[reasonReplaced].err // a stream of the client opened after this one claimed it
	case err != nil:
		return status.Error(codes.Unavailable, engineError(err).Error())
	}
	c.fence.Store(fence)
	if c.notified.Load() > fence {
		c.close(reasonReplaced, nil) // claimed elsewhere while this claim was on its way
		return nil
	}
	// A set retained by the client's last stream is live again.
	if err := eng.KeepMemberships(ctx, c.id, fence); err != nil && !errors.Is(err, engine.ErrFenced) {
		log.Error(s.logCtx, err, log.KV{K: "msg", V: "keep memberships"}, log.KV{K: "client", V: c.id})
	}
	if prev != "" && prev != s.shared.instance {
		// A dead instance is not waited for: its stream is gone with it.
		if alive, err := eng.Alive(ctx, prev); err == nil && alive {
			if err := eng.Notify(ctx, prev, c.id, fence); err != nil {
				log.Error(s.logCtx, err, log.KV{K: "msg", V: "notify the previous owner"}, log.KV{K: "client", V: c.id})
			}
		}
	}
	return nil
}

// restore gives c the memberships its client has in the engine, at their
// saved positions; attach then restores them as it does retained ones.
// When the engine cannot give them all, c ends UNAVAILABLE and the client
// comes back: a stream without them would save an empty set over them.
func (s *Service) restore(c *conn) {
	ctx, cancel := call()
	defer cancel()
	ms, err := s.shared.eng.LoadMemberships(ctx, c.id)
	for i := 0; err == nil && i < len(ms); i++ {
		err = s.loadSession(ms[i].Session)
	}
	if err != nil {
		log.Error(s.logCtx, err, log.KV{K: "msg", V: "restore memberships"}, log.KV{K: "client", V: c.id})
		c.close(reasonEngine, err)
		return
	}
	cl := c.client
	for _, mb := range ms {
		cl.mu.Lock()
		if cl.members[mb.Session] == nil {
			if ss := s.sessions.lock(mb.Session); ss != nil {
				m := &member{client: cl, sess: ss}
				m.paused.Store(mb.Paused)
				if last := ss.hist.last(); mb.Epoch != *ss.epoch {
					m.setPos(last, ss.epoch)
					m.lost = true
				} else {
					m.setPos(min(mb.Seq, last), ss.epoch)
				}
				ss.members[m] = struct{}{}
				cl.members[mb.Session] = m
				ss.mu.Unlock()
			}
		}
		cl.mu.Unlock()
	}
}

// membershipsChanged has the saver save the stream's memberships now.
func (c *conn) membershipsChanged() {
	c.dirty.Store(true)
	signal(c.svc.shared.kick)
}

// memberships is what the engine keeps of the client's memberships now.
func (cl *client) memberships(buf []engine.Membership) []engine.Membership {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	for name, m := range cl.members {
		m.sess.mu.Lock()
		epoch := *m.sess.epoch
		m.sess.mu.Unlock()
		if e := m.givenEpoch.Load(); e != nil {
			epoch = *e // the position is of the chain the member is on
		}
		buf = append(buf, engine.Membership{Session: name, Seq: m.given.Load(), Epoch: epoch, Paused: m.paused.Load()})
	}
	return buf
}

// leaveShared is the end of c's stream with a shared engine: its client's
// memberships, at the positions c was handed, are saved for the client's
// next stream, wherever it opens, and kept for the session TTL. A client
// already claimed by a newer stream is left alone: the fence refuses c's
// writes, and a newer stream here has taken the memberships over.
func (s *Service) leaveShared(c *conn) {
	cl := c.client
	c.saveMu.Lock()
	c.lastSaved = true
	c.saveMu.Unlock()
	if fence := c.fence.Load(); fence != 0 && s.pool.live(c.id) == c {
		ms := cl.memberships(nil)
		ctx, cancel := call()
		eng := s.shared.eng
		err := eng.SaveMemberships(ctx, c.id, fence, ms)
		if err == nil && len(ms) > 0 {
			err = eng.RetainMemberships(ctx, c.id, fence, s.cfg.SessionTTL)
			names := make([]string, len(ms))
			for i, m := range ms {
				names[i] = m.Session
			}
			s.touch(s.cfg.SessionTTL, names) // the epochs outlive the memberships
		}
		if err == nil {
			_, err = eng.Release(ctx, c.id, s.shared.instance, fence)
		}
		cancel()
		if err != nil && !errors.Is(err, engine.ErrFenced) {
			log.Error(s.logCtx, err, log.KV{K: "msg", V: "save memberships"}, log.KV{K: "client", V: c.id})
		}
	}
	if s.pool.unregisterShared(c) {
		cl.forget(s.sessions)
	}
}

// syncLoop keeps the local views in step with the engine: it reads what a
// session missed, checks sessions that heard nothing for a while, and
// unsubscribes sessions gone from here.
func (s *Service) syncLoop() {
	defer s.wg.Done()
	sh := s.shared
	tick := time.NewTicker(syncInterval)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-sh.wake:
		case now := <-tick.C:
			var names []string
			for _, ss := range s.sessions.snapshot() {
				if !isClosed(ss.loaded) {
					continue
				}
				names = append(names, *ss.name)
				ss.mu.Lock()
				quiet := now.Sub(ss.heard) >= syncInterval
				if len(ss.members) == 0 && !ss.removed {
					s.sessions.remove(ss) // loaded for a join that did not happen
					quiet = false
				}
				ss.mu.Unlock()
				if quiet {
					sh.resync(*ss.name)
				}
			}
			s.touch(keepMeta, names)
		}
		behind, gone := sh.take()
		if len(gone) > 0 {
			s.unsubscribe(gone)
		}
		for _, name := range behind {
			select {
			case <-s.stop:
				return
			default:
			}
			if err := s.syncSession(name); err != nil {
				sh.mu.Lock()
				sh.behind[name] = struct{}{} // at the next tick
				sh.mu.Unlock()
			}
		}
	}
}

// touch keeps the sessions' epochs in the engine for at least ttl.
func (s *Service) touch(ttl time.Duration, names []string) {
	if len(names) == 0 {
		return
	}
	ctx, cancel := call()
	defer cancel()
	if err := s.shared.eng.Touch(ctx, ttl, names...); err != nil {
		log.Error(s.logCtx, err, log.KV{K: "msg", V: "keep sessions"}, log.KV{K: "sessions", V: len(names)})
	}
}

// unsubscribe stops the engine's feed of sessions gone from here. A
// session loaded again meanwhile may have subscribed before this
// unsubscribes: it subscribes again, and reads what it missed.
func (s *Service) unsubscribe(names []string) {
	ctx, cancel := call()
	defer cancel()
	if err := s.shared.eng.Unsubscribe(ctx, names...); err != nil {
		return // the feed of a session nobody here wants is dropped
	}
	for _, name := range names {
		if s.sessions.get(name) == nil {
			continue
		}
		if err := s.shared.eng.Subscribe(ctx, name); err != nil {
			s.shared.forget(name) // the next round tries again
			continue
		}
		s.shared.resync(name)
	}
}

// syncSession reads from the engine what the session's local view lacks.
func (s *Service) syncSession(name string) error {
	ss := s.sessions.get(name)
	if ss == nil || ss.loaded == nil {
		return nil
	}
	<-ss.loaded
	ss.mu.Lock()
	after, epoch := ss.hist.last(), *ss.epoch
	ss.mu.Unlock()
	ctx, cancel := call()
	defer cancel()
	entries, pos, err := s.shared.eng.History(ctx, name, after, -1)
	if err == nil && pos.Epoch != epoch {
		entries, pos, err = s.shared.eng.History(ctx, name, 0, -1)
	}
	if err != nil {
		return err
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if !ss.removed {
		ss.catchUp(s.sessions, pos, entries)
	}
	return nil
}

// aliveLoop tells the engine this instance is alive, every keepInterval,
// whatever else waits for the engine.
func (s *Service) aliveLoop() {
	defer s.wg.Done()
	tick := time.NewTicker(keepInterval)
	defer tick.Stop()
	for {
		s.heartbeat()
		select {
		case <-s.stop:
			return
		case <-tick.C:
		}
	}
}

// keepLoop saves the memberships of the live streams whose positions
// moved: at least every keepInterval, at once for a stream whose client
// changed its memberships.
func (s *Service) keepLoop() {
	defer s.wg.Done()
	sh := s.shared
	tick := time.NewTicker(keepInterval)
	defer tick.Stop()
	seed := maphash.MakeSeed()
	saved := make(map[*conn]uint64) // digest of what was last saved, by stream
	var conns []*conn
	var jobs []saveJob
	lastFull := time.Now()
	for {
		all, full := false, false
		select {
		case <-s.stop:
			return
		case <-sh.kick:
		case now := <-tick.C:
			all = true
			if now.Sub(lastFull) >= resaveInterval {
				full, lastFull = true, now
			}
		}
		conns = s.pool.snapshot(conns[:0])
		jobs = jobs[:0]
		for _, c := range conns {
			dirty := c.dirty.Swap(false)
			fence := c.fence.Load()
			if !(all || dirty) || !c.serving.Load() || fence == 0 || c.isClosing() {
				continue
			}
			ms := c.client.memberships(nil)
			if sum := digest(seed, ms); full || saved[c] != sum {
				jobs = append(jobs, saveJob{c: c, fence: fence, ms: ms, sum: sum})
			}
		}
		s.saveAll(jobs)
		if all {
			live := make(map[*conn]uint64, len(conns))
			for _, c := range conns {
				if sum, ok := saved[c]; ok {
					live[c] = sum
				}
			}
			saved = live
		}
		for _, j := range jobs {
			if j.ok {
				saved[j.c] = j.sum
			}
		}
		clear(conns)
		clear(jobs)
	}
}

// saveJob is one stream's memberships to save.
type saveJob struct {
	c     *conn
	fence uint64
	ms    []engine.Membership
	sum   uint64
	ok    bool // saved
}

// saveParallel is how many saves are on their way at once: the engine
// pipelines them.
const saveParallel = 32

// saveAll saves the jobs' memberships, several at once.
func (s *Service) saveAll(jobs []saveJob) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, saveParallel)
	for i := range jobs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			j := &jobs[i]
			j.c.saveMu.Lock()
			defer j.c.saveMu.Unlock()
			if !j.c.lastSaved { // else what it has is older than what the end saved
				j.ok = s.save(j.c, j.fence, j.ms) == nil
			}
		}()
	}
	wg.Wait()
}

// save saves the memberships of c's client. A fenced write means another
// stream claimed the client (and the notice was lost): c ends, replaced.
// Unless the engine has no record of the client at all (no fence): it lost
// its data, and c claims the client again.
func (s *Service) save(c *conn, fence uint64, ms []engine.Membership) error {
	ctx, cancel := call()
	defer cancel()
	eng := s.shared.eng
	err := eng.SaveMemberships(ctx, c.id, fence, ms)
	if !errors.Is(err, engine.ErrFenced) {
		return err
	}
	_, current, oerr := eng.Owner(ctx, c.id)
	if oerr != nil {
		return oerr
	}
	if current != 0 { // a newer stream claimed it, and may have ended since
		c.close(reasonReplaced, nil)
		return err
	}
	if err := s.claim(c); err != nil {
		return err
	}
	return eng.SaveMemberships(ctx, c.id, c.fence.Load(), ms)
}

// heartbeat says this instance is alive, and notes whether the engine
// answers; when it answers again after failing, every session is compared
// with it.
func (s *Service) heartbeat() {
	ctx, cancel := call()
	err := s.shared.eng.Heartbeat(ctx, s.shared.instance, aliveTTL)
	cancel()
	if err != nil {
		err = engineError(err)
		if s.shared.failure.Swap(&err) == nil {
			log.Error(s.logCtx, err, log.KV{K: "msg", V: "engine unavailable"})
		}
		return
	}
	if s.shared.failure.Swap(nil) != nil {
		log.Info(s.logCtx, log.KV{K: "msg", V: "engine available again"})
		s.HandleResync()
	}
}

// digest sums up a set of memberships, in any order.
func digest(seed maphash.Seed, ms []engine.Membership) uint64 {
	var sum uint64
	for _, m := range ms {
		var h maphash.Hash
		h.SetSeed(seed)
		h.WriteString(m.Session)
		h.WriteString(m.Epoch)
		fmt.Fprint(&h, m.Seq, m.Paused)
		sum += h.Sum64()
	}
	return sum + uint64(len(ms))
}
