package streaming

import (
	"crypto/rand"
	"encoding/hex"
	"sync/atomic"
	"time"

	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	"github.com/streamhub/streamhub/internal/wire"
)

// Entry is one accepted data message: what history keeps and what every
// member is sent. It is built once per publish and never modified once
// appended, except for next, which is set once, when the entry after it is
// appended.
//
// Entries form a chain in seq order. A member's cursor is a pointer to the
// last entry its stream was handed; its sender follows next without taking
// the session's lock, so a burst is never copied into per-member queues:
// history is the queue. An entry that history evicted stays reachable from
// a cursor still behind it, and is freed once no cursor is.
type Entry struct {
	// Msg is the delivery as members receive it; Msg.Seq points at Seq.
	Msg streamsvc.DataMessage
	// Accepted is when the server accepted the message.
	Accepted time.Time
	// Seq is the entry's sequence number in its session.
	Seq uint64

	cum  uint64                // payload bytes of the session up to and including this entry
	next atomic.Pointer[Entry] // the entry after this one, once appended
	ts   int64                 // storage behind Msg.Timestamp
	enc  wire.Encoded          // Msg in protobuf, made once for every member; Msg.Data points into it
}

// size is what the entry counts against byte bounds: its payload.
func (e *Entry) size() uint64 { return uint64(len(e.Msg.Data)) }

// anchorBefore returns a cursor position just before e: an entry that is
// never sent, whose next is e.
func anchorBefore(e *Entry) *Entry {
	a := &Entry{Seq: e.Seq - 1, cum: e.cum - e.size()}
	a.next.Store(e)
	return a
}

// history keeps the last size entries of a session, no more than maxBytes
// of payload (the newest entry is kept whatever its size), in a ring that
// grows on demand, so an idle session costs little. It also keeps the
// newest entry ever appended, the tail, which the chain continues from.
// Guarded by the owning session's lock.
type history struct {
	size     int
	maxBytes int
	budget   *budget      // counts the payload held; nil counts nothing
	tail     *Entry       // newest entry appended, or the root for none
	ring     []*Entry     // len(ring) <= size
	head     int          // index of the oldest entry held
	n        int          // entries held
	held     atomic.Int64 // payload bytes held, the tail's included; read without the lock by the budget's eviction
	tailOnly bool         // the tail is no longer in the ring but still counted
}

func newHistory(size, maxBytes int, b *budget) *history {
	return &history{size: max(size, 1), maxBytes: maxBytes, budget: b, tail: &Entry{}}
}

// last is the seq of the newest entry ever appended (0 for none).
func (h *history) last() uint64 { return h.tail.Seq }

// append gives e the next seq, stores it and links it after the tail,
// evicting the oldest entries beyond the bounds.
func (h *history) append(e *Entry) {
	if h.n == len(h.ring) {
		if len(h.ring) < h.size {
			h.grow()
		} else {
			h.dropOldest()
		}
	}
	e.Seq = h.tail.Seq + 1
	e.cum = h.tail.cum + e.size()
	h.ring[(h.head+h.n)%len(h.ring)] = e
	h.n++
	h.held.Add(int64(e.size()))
	h.budget.add(int64(e.size()))
	for h.held.Load() > int64(h.maxBytes) && h.n > 1 {
		h.dropOldest()
	}
	h.tail.next.Store(e) // after e is complete: senders read it without the lock
	if h.tailOnly {
		h.release(h.tail)
		h.tailOnly = false
	}
	h.tail = e
}

// release stops counting e's payload.
func (h *history) release(e *Entry) {
	size := int64(e.size())
	h.held.Add(-size)
	h.budget.add(-size)
}

func (h *history) dropOldest() {
	if h.ring[h.head] == h.tail {
		// The newest entry stays held as the tail, which the chain
		// continues from (and caught-up cursors point at): it stays
		// counted until the next append replaces it, or the session goes.
		h.tailOnly = true
	} else {
		h.release(h.ring[h.head])
	}
	h.ring[h.head] = nil
	h.head = (h.head + 1) % len(h.ring)
	h.n--
}

func (h *history) grow() {
	ring := make([]*Entry, min(max(2*len(h.ring), 16), h.size))
	for i := range h.n {
		ring[i] = h.ring[(h.head+i)%len(h.ring)]
	}
	h.ring, h.head = ring, 0
}

// oldest is the oldest entry held, or nil.
func (h *history) oldest() *Entry {
	if h.n == 0 {
		return nil
	}
	return h.ring[h.head]
}

// from returns the cursor position from which a member is sent what came
// after seq: an entry whose chain continues with seq+1, or with the oldest
// entry held when seq+1 is gone. complete is false exactly when history no
// longer holds every entry after seq.
func (h *history) from(seq uint64) (at *Entry, complete bool) {
	if seq >= h.tail.Seq {
		return h.tail, true
	}
	o := h.oldest()
	switch {
	case o == nil:
		return h.tail, false
	case seq+1 <= o.Seq:
		return anchorBefore(o), seq+1 == o.Seq
	default:
		return h.ring[(h.head+int(seq-o.Seq))%len(h.ring)], true
	}
}

// expire drops the entries accepted before cutoff and returns how many
// remain.
func (h *history) expire(cutoff time.Time) int {
	for h.n > 0 && h.ring[h.head].Accepted.Before(cutoff) {
		h.dropOldest()
	}
	if h.n == 0 && len(h.ring) > 16 {
		h.ring, h.head = nil, 0 // give an idle session's memory back
	}
	return h.n
}

// evictable is what the budget's eviction can take: every entry held but
// the newest, which continues the chain.
func (h *history) evictable() int64 {
	if h.n <= 1 {
		return 0
	}
	return h.held.Load() - int64(h.tail.size())
}

// clear drops every entry, for good: the session is gone.
func (h *history) clear() {
	for h.n > 0 {
		h.dropOldest()
	}
	if h.tailOnly {
		h.release(h.tail)
		h.tailOnly = false
	}
	h.ring, h.head = nil, 0
}

// restart abandons the chain for a new one that continues after seq: the
// session's order was broken (another epoch, or entries the store no longer
// has), and cursors on the old chain stop at its end. Every entry held is
// dropped.
func (h *history) restart(seq uint64) {
	h.clear()
	h.tail = &Entry{Seq: seq}
}

// newEpoch returns a random identifier for a session incarnation.
func newEpoch() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}
