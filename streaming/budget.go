package streaming

import (
	"container/heap"
	"context"
	"sync"
	"sync/atomic"
	"time"

	"goa.design/clue/log"
)

// budget is the one bound on everything the server holds on clients'
// behalf: history payloads, and the payload of live deliveries pending for
// each member. Bytes are counted when an entry is accepted or counted as
// pending, and released when it leaves history or is sent; nothing is
// scanned on the per-message path. When a publish would go over, history
// is evicted from the sessions that hold the most, so that a hog evicts its
// own history, not the quiet sessions'.
type budget struct {
	limit   int64
	used    atomic.Int64
	metrics Metrics
	logCtx  context.Context

	mu       sync.Mutex // serializes eviction; guards warnedAt
	warnedAt time.Time
}

// add counts n more bytes held (negative: released). A nil budget counts
// nothing.
func (b *budget) add(n int64) {
	if b != nil {
		b.used.Add(n)
	}
}

// fits reports whether need more bytes fit.
func (b *budget) fits(need int64) bool { return b.used.Load()+need <= b.limit }

// budgetSlack is the fraction of the budget an eviction frees beyond what
// is needed, so that sustained pressure costs one pass per batch of
// publishes, not one per publish.
const budgetSlack = 16

// makeRoom evicts history until need more bytes fit, and a little more,
// from the sessions that hold the most first. It reports whether need fits
// now. Called with no lock held.
func (b *budget) makeRoom(r *sessions, need int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fits(need) {
		return true // another publisher made room meanwhile
	}
	target := b.limit - need - b.limit/budgetSlack
	all := r.snapshot()
	byBytes := make(sessionsByBytes, 0, len(all))
	var evictable int64 // all history but each session's newest entry
	for _, s := range all {
		h := s.evictable()
		if h.bytes > 0 {
			byBytes = append(byBytes, h)
			evictable += h.bytes
		}
	}
	if b.used.Load()-evictable > b.limit-need {
		return false // what holds the budget is pending for live streams: evicting would not help
	}
	heap.Init(&byBytes)
	evicted := 0
	for b.used.Load() > target && len(byBytes) > 0 {
		top := heap.Pop(&byBytes).(held)
		var next int64 // what the next largest holds: evict down to it
		if len(byBytes) > 0 {
			next = byBytes[0].bytes
		}
		n, left := top.s.evictDownTo(next, b, target)
		evicted += n
		if n > 0 && left > 0 {
			heap.Push(&byBytes, held{top.s, left})
		}
	}
	if evicted > 0 {
		b.metrics.HistoryEvicted(evicted)
		if now := time.Now(); now.Sub(b.warnedAt) >= 10*time.Second {
			b.warnedAt = now
			log.Warn(b.logCtx, log.KV{K: "msg", V: "memory budget reached: evicting history from the largest sessions"},
				log.KV{K: "budget", V: b.limit}, log.KV{K: "used", V: b.used.Load()}, log.KV{K: "evicted", V: evicted})
		}
	}
	return b.fits(need)
}

// evictDownTo drops s's oldest entries until what it can still evict is no
// more than level bytes or the budget is down to target, keeping its newest
// entry, which continues the chain; it evicts at least one entry when it
// can. It returns how many it evicted and what it can still evict then.
func (s *session) evictDownTo(level int64, b *budget, target int64) (n int, left int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.hist.n > 1 && (n == 0 || s.hist.evictable() > level) && b.used.Load() > target {
		s.hist.dropOldest()
		n++
	}
	return n, s.hist.evictable()
}

// evictable is what eviction can take from s: its history but the newest
// entry.
func (s *session) evictable() held {
	s.mu.Lock()
	defer s.mu.Unlock()
	return held{s, s.hist.evictable()}
}

// held is a session and the history bytes it held when looked at.
type held struct {
	s     *session
	bytes int64
}

// sessionsByBytes is a max-heap of sessions by the history bytes they hold.
type sessionsByBytes []held

func (h sessionsByBytes) Len() int           { return len(h) }
func (h sessionsByBytes) Less(i, j int) bool { return h[i].bytes > h[j].bytes }
func (h sessionsByBytes) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *sessionsByBytes) Push(x any)        { *h = append(*h, x.(held)) }
func (h *sessionsByBytes) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
