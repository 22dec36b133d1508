package streaming

import "sync/atomic"

// member is one client's membership of one session: a cursor into the
// session's history. It outlives its connection for the session TTL.
//
// While attached, the cursor belongs to the connection's sender, which
// applies joins, pauses, resumes and leaves in the order the client sent
// them, so nothing can overtake a position: a join fixes it, and whatever
// follows continues from it. While retained, the client's lock guards it.
type member struct {
	client *client
	sess   *session

	// conn is the connection the member is attached to; nil while
	// retained. Guarded by sess.mu.
	conn *conn

	// active is set while the sender delivers the member's entries: the
	// publisher counts a new entry as pending for the connection exactly
	// then. Written by the sender under sess.mu.
	active atomic.Bool

	// Owned by the attached connection's sender, or guarded by client.mu
	// while retained.
	at       *Entry // last entry handed to the stream while active
	pos      uint64 // last seq handed to the stream while not active
	paused   bool
	liveFrom uint64 // entries after this seq were published while active: live, not replayed
	liveCum  uint64 // the session's payload bytes at liveFrom
}

// activate points the cursor after seq and starts counting new entries as
// pending for c. complete says whether history held every entry after seq;
// last is the session's last seq. Called by c's sender.
func (m *member) activate(c *conn, seq uint64) (complete bool, last uint64) {
	s := m.sess
	s.mu.Lock()
	defer s.mu.Unlock()
	m.at, complete = s.hist.from(seq)
	tail := s.hist.tail
	m.liveFrom, m.liveCum = tail.Seq, tail.cum
	m.active.Store(true)
	return complete, tail.Seq
}

// deactivate stops the cursor where it is and takes back from c what was
// counted as pending for it. Called by c's sender.
func (m *member) deactivate(c *conn) {
	if m.at == nil {
		return
	}
	s := m.sess
	s.mu.Lock()
	m.active.Store(false)
	tail := s.hist.tail
	s.mu.Unlock()
	from, cum := max(m.at.Seq, m.liveFrom), max(m.at.cum, m.liveCum)
	if tail.Seq > from {
		c.sent(int64(tail.Seq-from), int64(tail.cum-cum))
	}
	m.pos, m.at = m.at.Seq, nil
}

// peek says whether history still holds every entry after the member's
// position, and the session's last seq, without starting the cursor.
func (m *member) peek() (complete bool, last uint64) {
	s := m.sess
	s.mu.Lock()
	defer s.mu.Unlock()
	_, complete = s.hist.from(m.pos)
	return complete, s.hist.last()
}
