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

	// stopTail is the session's tail when a restart of its history
	// stopped the cursor (see session.restart); nil otherwise. Guarded by
	// sess.mu.
	stopTail *Entry

	// given is the last seq handed to the stream, and givenEpoch the epoch
	// of the chain it is on, for the engine's membership store, which
	// reads them without the sender.
	given      atomic.Uint64
	givenEpoch atomic.Pointer[string]

	// restarted is set when the session's history restarted while the
	// member was not attached: its restore recovers nothing. Written
	// under sess.mu.
	restarted atomic.Bool

	// paused is set while the client has paused the membership. Written by
	// the sender (or under client.mu while retained); read by the
	// membership store's saver.
	paused atomic.Bool

	// Owned by the attached connection's sender, or guarded by client.mu
	// while retained.
	at       *Entry // last entry handed to the stream while active
	pos      uint64 // last seq handed to the stream while not active
	lost     bool   // the retained position is of another epoch: a restore recovers nothing
	liveFrom uint64 // entries after this seq were published while active: live, not replayed
	liveCum  uint64 // the session's payload bytes at liveFrom
}

// activate points the cursor after seq and starts counting new entries as
// pending for c. complete says whether history held every entry after seq;
// last is the session's last seq. Called by c's sender.
func (m *member) activate(c *conn, seq uint64) (complete bool, last uint64, epoch *string) {
	s := m.sess
	s.mu.Lock()
	defer s.mu.Unlock()
	m.at, complete = s.hist.from(seq)
	tail := s.hist.tail
	m.liveFrom, m.liveCum = tail.Seq, tail.cum
	m.stopTail = nil
	m.active.Store(true)
	m.givenEpoch.Store(s.epoch)
	m.given.Store(m.at.Seq)
	return complete, tail.Seq, s.epoch
}

// deactivate stops the cursor where it is and takes back from c what was
// counted as pending for it. Called by c's sender.
func (m *member) deactivate(c *conn) {
	if m.at == nil {
		return
	}
	s := m.sess
	s.mu.Lock()
	tail := s.hist.tail
	if !m.active.Load() && m.stopTail != nil {
		tail = m.stopTail // counted up to where the restart stopped it
	}
	m.active.Store(false)
	m.stopTail = nil
	s.mu.Unlock()
	from, cum := max(m.at.Seq, m.liveFrom), max(m.at.cum, m.liveCum)
	if tail.Seq > from {
		c.sent(int64(tail.Seq-from), int64(tail.cum-cum))
	}
	m.pos, m.at = m.at.Seq, nil
}

// setPos sets the position of a member that is not active: seq in epoch.
func (m *member) setPos(seq uint64, epoch *string) {
	m.pos = seq
	m.givenEpoch.Store(epoch)
	m.given.Store(seq)
}

// peek says whether history still holds every entry after the member's
// position, and the session's last seq, without starting the cursor.
func (m *member) peek() (complete bool, last uint64, epoch *string) {
	s := m.sess
	s.mu.Lock()
	defer s.mu.Unlock()
	_, complete = s.hist.from(m.pos)
	return complete, s.hist.last(), s.epoch
}
