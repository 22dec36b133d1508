package streaming

import (
	"sync"
	"sync/atomic"
	"time"

	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
)

// Entry is one accepted data message: what history keeps and what every
// member is sent. It is built once per publish and never modified after
// History.Append.
type Entry struct {
	// Msg is the delivery as members receive it; Msg.Seq points at Seq.
	Msg streamsvc.DataMessage
	// Accepted is when the server accepted the message.
	Accepted time.Time
	// Seq is the entry's sequence number in its session, set by Append.
	Seq uint64

	ts int64 // storage behind Msg.Timestamp, so that a publish costs one allocation
}

// memberState is what a member receives.
type memberState uint8

const (
	// stateLive members are sent each new entry through their connection's queue.
	stateLive memberState = iota
	// stateReplaying members are caught up by their connection's sender,
	// reading history, before they turn live.
	stateReplaying
	// statePaused members receive nothing; their position is kept.
	statePaused
	// stateLeft members are gone.
	stateLeft
)

// member is one client's membership of one session. It outlives its
// connection for the session TTL.
type member struct {
	client *client
	sess   *session

	// Guarded by sess.mu.
	conn  *conn       // the connection it is attached to; nil while retained
	state memberState //
	gen   uint64      // bumped whenever a replay in progress must stop

	// sent is the last seq handed to the client's stream. Only the sender of
	// the attached connection writes it; others read it under sess.mu once
	// that sender has stopped or before it starts a replay.
	sent atomic.Uint64
}

// session is a named conversation: its history and its members.
type session struct {
	name *string // shared by every entry and reply about this session

	mu      sync.Mutex // guards the fields below
	hist    History
	epoch   *string
	members map[string]*member // by client ID
	removed bool               // set when the registry dropped it; a new one takes the name
}

// publish appends a message to history and queues it for every live
// member. seq is assigned here, under the session's lock, and nowhere else,
// so every member sees one order.
func (s *session) publish(from *conn, msg *streamsvc.DataMessage) *Entry {
	e := &Entry{}
	e.Msg = streamsvc.DataMessage{
		Type:      typeData,
		SessionID: s.name,
		Data:      msg.Data,
		Timestamp: &e.ts,
		Seq:       &e.Seq, // set by Append
		ClientID:  from.clientID,
		ID:        msg.ID,
		Epoch:     s.epoch,
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Stamped under the lock, so that accept times never go back as seq
	// goes up.
	e.Accepted = time.Now()
	e.ts = e.Accepted.UnixMilli()
	s.hist.Append(e)
	s.deliverLocked(e)
	return e
}

// deliverLocked queues e for every live member. It is separate from
// publish so that a distributed History can deliver the entries other
// instances appended. Called with s.mu held.
func (s *session) deliverLocked(e *Entry) {
	for _, m := range s.members {
		if m.state == stateLive && m.conn != nil {
			m.conn.push(outItem{entry: e, m: m})
		}
	}
}

// sessions is the registry of sessions by name.
type sessions struct {
	newHistory HistoryFactory
	max        int // sessions that may exist at once

	mu sync.RWMutex // guards m
	m  map[string]*session
}

func newSessions(f HistoryFactory, max int) *sessions {
	return &sessions{newHistory: f, max: max, m: make(map[string]*session)}
}

// lock returns the session called name, created if needed, with its lock
// held, or nil when it does not exist and no more may be created. A
// session removed concurrently is never returned.
func (r *sessions) lock(name string) *session {
	for {
		r.mu.RLock()
		s := r.m[name]
		r.mu.RUnlock()
		if s == nil {
			if s = r.getOrCreate(name); s == nil {
				return nil
			}
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
	defer r.mu.Unlock() // deferred: the history factory is foreign code
	s := r.m[name]
	if s == nil {
		if r.max > 0 && len(r.m) >= r.max {
			return nil
		}
		s = r.create(name)
		r.m[name] = s
	}
	return s
}

func (r *sessions) create(name string) *session {
	h := r.newHistory(name)
	epoch := h.Epoch()
	return &session{name: &name, hist: h, epoch: &epoch, members: make(map[string]*member)}
}

// count is the number of sessions that exist.
func (r *sessions) count() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.m)
}

// sweep expires old history and removes the sessions left with no members
// and no history.
func (r *sessions) sweep(cutoff time.Time) {
	r.mu.RLock()
	all := make([]*session, 0, len(r.m))
	for _, s := range r.m {
		all = append(all, s)
	}
	r.mu.RUnlock()
	for _, s := range all {
		r.sweepOne(s, cutoff)
	}
}

func (r *sessions) sweepOne(s *session, cutoff time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock() // deferred: History is foreign code
	if s.hist.Expire(cutoff) > 0 || len(s.members) > 0 {
		return
	}
	s.removed = true
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m[*s.name] == s {
		delete(r.m, *s.name)
	}
}

// leave ends the membership. Called with s.mu held.
func (m *member) leave() {
	if m.sess.members[m.client.id] == m { // a newer client object may hold the ID's place
		delete(m.sess.members, m.client.id)
	}
	m.state = stateLeft
	m.conn = nil
	m.gen++
}

// replayStart asks a connection's sender to answer a join or resume and
// then replay history, when the item's turn comes: the reply and the replay
// are computed then, so they follow everything queued before them.
type replayStart struct {
	gen      uint64  // the member's gen when asked; a newer gen cancels the replay
	action   *string // actJoined or actResumed
	from     uint64  // replay what came after this seq
	fromSent bool    // replay after the member's last sent seq instead of from
	epoch    *string // the epoch the client asked for, if any
}

// replay is a member being caught up from history by its connection's sender.
type replay struct {
	m      *member
	gen    uint64
	cursor uint64 // last seq sent
	gap    bool   // the client was told recovered: false; the first read may skip
}

// startReplay builds the reply to a join or resume and, if there is
// anything to replay, the replay. Called by c's sender.
func (s *session) startReplay(c *conn, m *member, st *replayStart) (*streamsvc.DataMessage, *replay) {
	s.mu.Lock()
	defer s.mu.Unlock()
	from := st.from
	if st.fromSent {
		from = m.sent.Load()
	}
	last := s.hist.Last()
	sameEpoch := st.epoch == nil || *st.epoch == *s.epoch
	if !sameEpoch {
		from = last // a stale epoch's seq means nothing here: replay nothing
	}
	_, complete := s.hist.Read(from, nil)
	recovered := complete && sameEpoch
	reply := control(st.action, s.name)
	reply.Seq, reply.Epoch, reply.Recovered = &last, s.epoch, &recovered

	if m.gen != st.gen || m.conn != c || m.state != stateReplaying {
		return reply, nil // superseded by a later join, pause, leave or reconnect
	}
	m.sent.Store(min(from, last)) // a seq beyond last must not hide what comes next
	if from >= last {
		m.state = stateLive
		return reply, nil
	}
	return reply, &replay{m: m, gen: st.gen, cursor: from, gap: !complete}
}

// replayStatus says how a replay read went.
type replayStatus uint8

const (
	replayMore replayStatus = iota // entries were read; read again
	replayOver                     // caught up (now live) or superseded
	replayLost                     // history dropped entries not yet sent
)

// readReplay reads the next entries of r into buf. When nothing is left the
// member turns live under the same lock, so the entries published after
// that reach it through the queue: no gap, no duplicate.
func (s *session) readReplay(c *conn, r *replay, buf []*Entry) (int, replayStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := r.m
	if m.gen != r.gen || m.conn != c || m.state != stateReplaying {
		return 0, replayOver
	}
	n, complete := s.hist.Read(r.cursor, buf)
	if !complete && !r.gap {
		return 0, replayLost
	}
	r.gap = false
	if n == 0 {
		m.state = stateLive
		return 0, replayOver
	}
	return n, replayMore
}
