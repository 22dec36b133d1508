package streaming

import "time"

// History is the bounded record of one session's accepted messages. It is
// where sequence numbers come from, and the only place a member's replay
// reads from. Its methods are called with the owning session's lock held,
// so an implementation needs no locking of its own.
//
// The in-memory implementation keeps one process's sessions; a distributed
// implementation keeps the same contract in a shared engine.
type History interface {
	// Epoch identifies this incarnation of the session's history.
	Epoch() string
	// Last is the seq of the newest message ever appended (0 for none).
	Last() uint64
	// Append gives e the next seq and stores it, evicting the oldest
	// entries when full.
	Append(e *Entry)
	// Read fills buf with the messages after seq, oldest first, and returns
	// how many it wrote. complete is false when history no longer holds
	// seq+1 (it was evicted or expired).
	Read(after uint64, buf []*Entry) (n int, complete bool)
	// Expire drops the messages accepted before cutoff and reports how many
	// remain.
	Expire(cutoff time.Time) (remaining int)
}

// HistoryFactory makes the history of a new session incarnation.
type HistoryFactory func(session string) History
