package memory

import (
	"sync"
	"time"

	"github.com/streamhub/streamhub/engine"
)

// session is one session's meta, history and subscription.
type session struct {
	mu sync.Mutex // guards every field below

	// dead is set when the sweeper dropped the session from the map: a
	// caller that locked it late looks it up again.
	dead       bool
	subscribed bool

	epoch        string // "" when the session has no meta
	seq          uint64
	lastAccepted time.Time // Accepted of the last entry: never goes back
	touched      time.Time // the last publish or the meta's creation
	kept         time.Time // Touch: the meta lives at least until then

	history ring
}

// refresh drops what expired and gives the session meta when it has none.
func (s *session) refresh(b engine.Bounds, now time.Time) {
	s.expire(b, now)
	if s.epoch == "" {
		s.reset(engine.NewEpoch())
		s.touched = now
	}
}

// expire drops history older than TTL, and the meta when the session has
// not been published to for MetaTTL and Touch no longer keeps it.
func (s *session) expire(b engine.Bounds, now time.Time) {
	if s.epoch != "" && b.MetaTTL > 0 && now.Sub(s.touched) > b.MetaTTL && now.After(s.kept) {
		s.reset("")
	}
	if b.TTL > 0 {
		s.history.dropOlder(now.Add(-b.TTL))
	}
}

// reset starts the session over in epoch ("" for no meta).
func (s *session) reset(epoch string) {
	s.epoch = epoch
	s.seq = 0
	s.lastAccepted = time.Time{}
	s.kept = time.Time{}
	s.history = ring{}
}

// ring is a session's history: a circular buffer that grows up to
// Bounds.Size, oldest first.
type ring struct {
	buf   []engine.Entry
	head  int // index of the oldest entry
	n     int // entries held
	bytes int // Data bytes held
}

func (r *ring) at(i int) *engine.Entry { return &r.buf[(r.head+i)%len(r.buf)] }

// push appends e and drops the oldest entries until the ring is within b,
// always keeping e.
func (r *ring) push(e engine.Entry, b engine.Bounds) {
	if r.n == len(r.buf) {
		if len(r.buf) < b.Size {
			r.grow(min(max(2*len(r.buf), 8), b.Size))
		} else {
			r.popFront()
		}
	}
	*r.at(r.n) = e
	r.n++
	r.bytes += len(e.Data)
	if b.TTL > 0 {
		r.dropOlder(e.Accepted.Add(-b.TTL))
	}
	for b.MaxBytes > 0 && r.bytes > b.MaxBytes && r.n > 1 {
		r.popFront()
	}
}

func (r *ring) grow(size int) {
	buf := make([]engine.Entry, size)
	for i := 0; i < r.n; i++ {
		buf[i] = *r.at(i)
	}
	r.buf, r.head = buf, 0
}

func (r *ring) popFront() {
	e := r.at(0)
	r.bytes -= len(e.Data)
	*e = engine.Entry{} // let the payload go
	r.head = (r.head + 1) % len(r.buf)
	r.n--
}

// dropOlder drops entries accepted before cutoff; Accepted never decreases
// along the ring, so they are a prefix.
func (r *ring) dropOlder(cutoff time.Time) {
	for r.n > 0 && r.at(0).Accepted.Before(cutoff) {
		r.popFront()
	}
}

// find returns the entry held that the client published with id, newest
// first; none for an empty id.
func (r *ring) find(clientID, id string) (engine.Entry, bool) {
	if id == "" {
		return engine.Entry{}, false
	}
	for i := r.n - 1; i >= 0; i-- {
		if e := r.at(i); e.ID == id && e.ClientID == clientID {
			return *e, true
		}
	}
	return engine.Entry{}, false
}

// after returns copies of at most limit entries with seq > after (limit < 0:
// all of them).
func (r *ring) after(after uint64, limit int) []engine.Entry {
	if r.n == 0 || limit == 0 {
		return nil
	}
	// Seqs in the ring are contiguous: find the first wanted by arithmetic.
	first := r.at(0).Seq
	skip := 0
	if after >= first {
		skip = int(min(after-first+1, uint64(r.n)))
	}
	count := r.n - skip
	if limit > 0 && count > limit {
		count = limit
	}
	if count == 0 {
		return nil
	}
	out := make([]engine.Entry, count)
	for i := range out {
		out[i] = *r.at(skip + i)
	}
	return out
}
