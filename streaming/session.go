package streaming

import (
	"container/heap"
	"container/list"
	"sync"
	"time"

	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
)

// session is a named conversation: its history and its members.
type session struct {
	name *string // shared by every entry and reply about this session

	// With a shared engine, closed once the session's position and
	// history were read from it; loadErr says why not. Nil otherwise.
	loaded  chan struct{}
	loadErr error

	mu       sync.Mutex // guards the fields below
	hist     *history
	members  map[*member]struct{} // attached and retained; a leaving member stays until its sender lets go
	attached int                  // members with a connection
	removed  bool                 // set when the registry dropped it; a new one takes the name
	epoch    *string              // shared by every entry and reply of the epoch
	heard    time.Time            // with a shared engine: when an entry was last applied

	// Guarded by the registry's lock.
	idle   *list.Element // in sessions.idle while attached == 0
	expiry int           // index in sessions.exp; -1 when not scheduled
	due    time.Time     // when the oldest entry expires
}

// publish appends a message to history and tells every active member's
// connection. seq is assigned here, under the session's lock, and nowhere
// else, so every member sees one order. It refuses the message, and changes
// nothing, when it does not fit the memory budget even after eviction.
// With a shared engine, the engine assigns seq instead (see
// Service.publishShared).
func (s *session) publish(r *sessions, from *conn, msg *streamsvc.DataMessage) error {
	e, enc := s.newEntry(from.clientID, msg.ID, s.epoch, msg.Data)
	size := int64(e.size())
	s.mu.Lock()
	if err := s.fit(r, size); err != nil {
		s.mu.Unlock()
		return err
	}
	defer s.mu.Unlock()
	// Stamped under the lock, so that accept times never go back as seq
	// goes up.
	e.Accepted = time.Now()
	e.ts = e.Accepted.UnixMilli()
	e.enc.Set(appendSeqTime(enc, s.hist.last()+1, e.ts)) // the seq append gives it, before senders can see it
	s.add(r, e)
	return nil
}

// newEntry builds an entry of this session but for its seq and accept
// time, and returns it with its encoding so far.
func (s *session) newEntry(clientID, id, epoch *string, data []byte) (*Entry, []byte) {
	enc, payload := encodeDelivery(s.name, clientID, id, epoch, data)
	e := &Entry{}
	e.Msg = streamsvc.DataMessage{
		Type:      typeData,
		SessionID: s.name,
		Data:      payload,
		Timestamp: &e.ts,
		Seq:       &e.Seq, // set by append
		ClientID:  clientID,
		ID:        id,
		Epoch:     epoch,
	}
	return e, enc
}

// fit makes sure an entry of size bytes fits the memory budget: the entry
// is held once by history and once more for each active member until sent.
// The members are counted only when the budget is tight. Called with s.mu
// held, which it may let go of and take again while it makes room.
func (s *session) fit(r *sessions, size int64) error {
	if size == 0 || r.budget.fits(size*int64(1+len(s.members))) {
		return nil
	}
	if need := size * int64(1+s.active()); !r.budget.fits(need) {
		s.mu.Unlock() // eviction takes the largest sessions' locks, this one's perhaps
		room := r.budget.makeRoom(r, need)
		s.mu.Lock()
		if !room && !r.budget.fits(size*int64(1+s.active())) {
			return errMemoryBudget
		}
	}
	return nil
}

// add appends e, whose seq follows the session's last, and counts it as
// pending for every active member. Called with s.mu held.
func (s *session) add(r *sessions, e *Entry) {
	s.hist.append(e)
	if s.hist.n == 1 {
		r.schedule(s, e.Accepted)
	}
	size := int64(e.size())
	pending := int64(0)
	for m := range s.members {
		if m.active.Load() {
			m.conn.queued(1, size)
			pending += size
		}
	}
	r.budget.add(pending)
}

// last is the session's last seq.
func (s *session) last() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hist.last()
}

// active is the number of members being delivered. Called with s.mu held.
func (s *session) active() int {
	n := 0
	for m := range s.members {
		if m.active.Load() {
			n++
		}
	}
	return n
}

// attach counts m as attached to a connection. Called with s.mu held.
func (s *session) attach(r *sessions, m *member, c *conn) {
	if m.conn == nil {
		s.attached++
		if s.attached == 1 {
			r.busy(s)
		}
	}
	m.conn = c
}

// detach counts m as retained. Called with s.mu held.
func (s *session) detach(r *sessions, m *member) {
	if m.conn != nil {
		m.conn = nil
		s.attached--
		if s.attached == 0 {
			r.idled(s)
		}
	}
}

// drop removes m, and the session with it when nothing is left to keep.
// Called with s.mu held.
func (s *session) drop(r *sessions, m *member) {
	if _, ok := s.members[m]; !ok {
		return
	}
	s.detach(r, m)
	delete(s.members, m)
	if len(s.members) == 0 && (s.hist.n == 0 || r.shared != nil) {
		r.remove(s) // with a shared engine, history stays in the engine
	}
}

// sessions is the registry of sessions by name. Sessions with no attached
// member are kept in idle order, so the oldest can make room for a live
// client, and sessions with history in order of expiry, so housekeeping
// costs what expires, not what exists.
//
// Lock order: a session's lock may be held when taking the registry's,
// never the other way round.
type sessions struct {
	size, maxBytes int // history bounds of each session
	max            int // sessions that may exist at once
	budget         *budget
	shared         *shared // nil: sessions are this process's own

	mu   sync.RWMutex // guards the fields below and each session's idle, expiry and due; read-locked by lookups
	m    map[string]*session
	idle list.List // *session with no attached member, longest idle first
	exp  expiryHeap
}

func newSessions(cfg Config, b *budget) *sessions {
	return &sessions{size: cfg.HistorySize, maxBytes: cfg.HistoryMaxBytes, max: cfg.MaxSessions, budget: b, m: make(map[string]*session)}
}

// lock returns the session called name, created if needed, with its lock
// held, or nil when it does not exist and no more may be created. A
// session removed concurrently is never returned.
//
// With a shared engine, sessions are created by Service.loadSession: nil
// then also means not loaded (yet), which the caller waits for holding no
// lock.
func (r *sessions) lock(name string) *session {
	for {
		var s *session
		if r.shared != nil {
			if s = r.get(name); s == nil || !isClosed(s.loaded) {
				return nil
			}
		} else if s = r.getOrCreate(name); s == nil {
			return nil
		}
		s.mu.Lock()
		if !s.removed {
			return s
		}
		s.mu.Unlock()
	}
}

func (r *sessions) getOrCreate(name string) *session {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.m[name]
	if s == nil {
		if r.max > 0 && len(r.m) >= r.max {
			return nil
		}
		s = r.newSession(name)
		s.epoch = ptr(newEpoch())
	}
	return s
}

// newSession adds a session called name. Called with r.mu held.
func (r *sessions) newSession(name string) *session {
	s := &session{name: &name, hist: newHistory(r.size, r.maxBytes, r.budget),
		members: make(map[*member]struct{}), expiry: -1}
	s.idle = r.idle.PushBack(s)
	r.m[name] = s
	return s
}

// get returns the session called name, or nil.
func (r *sessions) get(name string) *session {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.m[name]
}

// snapshot returns the sessions that exist.
func (r *sessions) snapshot() []*session {
	r.mu.RLock()
	defer r.mu.RUnlock()
	all := make([]*session, 0, len(r.m))
	for _, s := range r.m {
		all = append(all, s)
	}
	return all
}

// count is the number of sessions that exist.
func (r *sessions) count() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.m)
}

// busy takes s off the idle list. Called with s.mu held.
func (r *sessions) busy(s *session) {
	r.mu.Lock()
	if s.idle != nil {
		r.idle.Remove(s.idle)
		s.idle = nil
	}
	r.mu.Unlock()
}

// idled puts s at the end of the idle list. Called with s.mu held.
func (r *sessions) idled(s *session) {
	r.mu.Lock()
	if s.idle == nil && !s.removed {
		s.idle = r.idle.PushBack(s)
	}
	r.mu.Unlock()
}

// remove drops s from the registry. Called with s.mu held.
func (r *sessions) remove(s *session) {
	s.removed = true
	s.hist.clear() // what retained members still point at holds nothing
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m[*s.name] == s {
		delete(r.m, *s.name)
	}
	if s.idle != nil {
		r.idle.Remove(s.idle)
		s.idle = nil
	}
	if s.expiry >= 0 {
		heap.Remove(&r.exp, s.expiry)
	}
	if r.shared != nil {
		r.shared.forget(*s.name)
	}
}

// evictIdle removes the session that has had no attached member for the
// longest, with its history, and returns its retained members, which the
// caller lets go of. ok is false when no session is idle.
func (r *sessions) evictIdle() (retained []*member, ok bool) {
	for {
		r.mu.Lock()
		front := r.idle.Front()
		if front == nil {
			r.mu.Unlock()
			return nil, false
		}
		s := front.Value.(*session)
		r.idle.Remove(front)
		s.idle = nil
		r.mu.Unlock()

		s.mu.Lock()
		evicted := !s.removed && s.attached == 0
		if evicted {
			for m := range s.members {
				retained = append(retained, m)
			}
			clear(s.members)
			r.remove(s)
		}
		s.mu.Unlock()
		if evicted {
			return retained, true
		}
	}
}

// schedule makes the housekeeper look at s when its oldest entry, accepted
// at oldest, expires. Called with s.mu held.
func (r *sessions) schedule(s *session, oldest time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s.removed {
		return
	}
	s.due = oldest
	if s.expiry >= 0 {
		heap.Fix(&r.exp, s.expiry)
		return
	}
	heap.Push(&r.exp, s)
}

// expire drops the history older than ttl from the sessions where some
// expired, and removes the sessions left with no members and no history.
func (r *sessions) expire(now time.Time, ttl time.Duration) {
	cutoff := now.Add(-ttl)
	var due []*session
	r.mu.Lock()
	for len(r.exp) > 0 && r.exp[0].due.Before(cutoff) {
		due = append(due, heap.Pop(&r.exp).(*session))
	}
	r.mu.Unlock()
	for _, s := range due {
		s.mu.Lock()
		switch {
		case s.removed:
		case s.hist.expire(cutoff) > 0:
			r.schedule(s, s.hist.oldest().Accepted)
		case len(s.members) == 0:
			r.remove(s)
		}
		s.mu.Unlock()
	}
}

// expiryHeap orders sessions by when their oldest entry was accepted.
type expiryHeap []*session

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].expiry, h[j].expiry = i, j
}
func (h *expiryHeap) Push(x any) {
	s := x.(*session)
	s.expiry = len(*h)
	*h = append(*h, s)
}
func (h *expiryHeap) Pop() any {
	old := *h
	s := old[len(old)-1]
	old[len(old)-1] = nil
	s.expiry = -1
	*h = old[:len(old)-1]
	return s
}
