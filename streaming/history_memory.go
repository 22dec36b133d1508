package streaming

import (
	"crypto/rand"
	"encoding/hex"
	"time"
)

// memoryHistory keeps the last size messages of a session, and no more
// than maxBytes of payload, in a ring that grows on demand, so an idle
// session costs little.
type memoryHistory struct {
	epoch    string
	size     int
	maxBytes int
	bytes    int      // payload bytes held
	last     uint64   // seq of the newest message ever appended
	ring     []*Entry // len(ring) <= size
	head     int      // index of the oldest entry held
	n        int      // entries held
}

var _ History = (*memoryHistory)(nil)

// NewMemoryHistory returns a HistoryFactory of in-process histories that
// keep at most size messages and maxBytes of payload each; the newest
// message is kept whatever its size.
func NewMemoryHistory(size, maxBytes int) HistoryFactory {
	return func(string) History {
		return &memoryHistory{epoch: newEpoch(), size: max(size, 1), maxBytes: maxBytes}
	}
}

func (h *memoryHistory) Epoch() string { return h.epoch }
func (h *memoryHistory) Last() uint64  { return h.last }

func (h *memoryHistory) Append(e *Entry) {
	if h.n == len(h.ring) {
		if len(h.ring) < h.size {
			h.grow()
		} else {
			h.dropOldest()
		}
	}
	h.last++
	e.Seq = h.last
	h.ring[(h.head+h.n)%len(h.ring)] = e
	h.n++
	h.bytes += len(e.Msg.Data)
	for h.bytes > h.maxBytes && h.n > 1 {
		h.dropOldest()
	}
}

func (h *memoryHistory) dropOldest() {
	h.bytes -= len(h.ring[h.head].Msg.Data)
	h.ring[h.head] = nil
	h.head = (h.head + 1) % len(h.ring)
	h.n--
}

func (h *memoryHistory) grow() {
	ring := make([]*Entry, min(max(2*len(h.ring), 16), h.size))
	for i := range h.n {
		ring[i] = h.ring[(h.head+i)%len(h.ring)]
	}
	h.ring, h.head = ring, 0
}

func (h *memoryHistory) Read(after uint64, buf []*Entry) (int, bool) {
	oldest := h.last - uint64(h.n) + 1 // seq of ring[head] when n > 0
	complete := after+1 >= oldest
	start := max(after+1, oldest)
	if start > h.last {
		return 0, complete
	}
	skip := int(start - oldest)
	count := min(h.n-skip, len(buf))
	for i := range count {
		buf[i] = h.ring[(h.head+skip+i)%len(h.ring)]
	}
	return count, complete
}

func (h *memoryHistory) Expire(cutoff time.Time) int {
	for h.n > 0 && h.ring[h.head].Accepted.Before(cutoff) {
		h.dropOldest()
	}
	if h.n == 0 && len(h.ring) > 16 {
		h.ring, h.head = nil, 0 // give an idle session's memory back
	}
	return h.n
}

// newEpoch returns a random identifier for a session incarnation.
func newEpoch() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}
