package streaming

import (
	"testing"
	"time"
)

func entry(data int, at time.Time) *Entry {
	e := &Entry{Accepted: at}
	e.Msg.Data = make([]byte, data)
	return e
}

// chain returns the seqs reachable from at, in order.
func chain(at *Entry) []uint64 {
	var seqs []uint64
	for e := at.next.Load(); e != nil; e = e.next.Load() {
		seqs = append(seqs, e.Seq)
	}
	return seqs
}

func TestHistory(t *testing.T) {
	now := time.Now()
	b := &budget{limit: 1 << 30}
	h := newHistory(5, 1000, b)
	if at, complete := h.from(0); !complete || at.Seq != 0 || at.next.Load() != nil {
		t.Fatalf("empty: at %d complete %v", at.Seq, complete)
	}
	root, _ := h.from(0)
	for range 7 {
		h.append(entry(10, now))
	}
	if got := chain(root); len(got) != 7 || got[0] != 1 || got[6] != 7 {
		t.Fatalf("the chain from the root: %v", got)
	}
	if at, complete := h.from(0); complete || at.Seq != 2 || chain(at)[0] != 3 {
		t.Fatalf("from 0: at %d complete %v", at.Seq, complete)
	}
	if at, complete := h.from(2); !complete || at.Seq != 2 || len(chain(at)) != 5 {
		t.Fatalf("from 2: at %d complete %v", at.Seq, complete)
	}
	if at, complete := h.from(5); !complete || at.Seq != 5 || chain(at)[0] != 6 {
		t.Fatalf("from 5: at %d complete %v", at.Seq, complete)
	}
	if at, complete := h.from(7); !complete || at.Seq != 7 || at.next.Load() != nil {
		t.Fatalf("from last: at %d complete %v", at.Seq, complete)
	}
	if at, complete := h.from(99); !complete || at.Seq != 7 {
		t.Fatalf("from beyond last: at %d complete %v", at.Seq, complete)
	}

	// The byte bound evicts the oldest, but never the newest.
	h.append(entry(900, now)) // seq 8: 4×10 + 900 fit
	if h.n != 5 || h.held.Load() != 940 {
		t.Fatalf("after a big entry: %d entries, %d bytes", h.n, h.held.Load())
	}
	h.append(entry(100, now)) // seq 9: only 900 + 100 fit
	if h.n != 2 || h.held.Load() != 1000 {
		t.Fatalf("after crossing the byte bound: %d entries, %d bytes", h.n, h.held.Load())
	}
	h.append(entry(5000, now)) // seq 10: alone, over the bound
	if h.n != 1 || h.held.Load() != 5000 || h.last() != 10 {
		t.Fatalf("after a huge entry: %d entries, %d bytes, last %d", h.n, h.held.Load(), h.last())
	}
	if at, _ := h.from(9); at.cum != 10*7+900+100 {
		t.Fatalf("cumulative bytes at 9: %d", at.cum)
	}

	// Expiry by age.
	h.append(entry(1, now.Add(time.Minute))) // seq 11
	if left := h.expire(now.Add(time.Second)); left != 1 || h.held.Load() != 1 {
		t.Fatalf("after expiry: %d left, %d bytes", left, h.held.Load())
	}
	// The newest entry stays held as the tail, and counted, until the next
	// append or the session's end.
	if left := h.expire(now.Add(time.Hour)); left != 0 || h.held.Load() != 1 || b.used.Load() != 1 {
		t.Fatalf("after full expiry: %d left, %d bytes held, %d counted", left, h.held.Load(), b.used.Load())
	}
	if at, complete := h.from(10); complete || at.Seq != 11 {
		t.Fatalf("an expired entry read as complete: at %d", at.Seq)
	}
	at, _ := h.from(11)
	h.append(entry(1, now)) // seq 12
	if got := chain(at); len(got) != 1 || got[0] != 12 {
		t.Fatalf("append after full expiry: %v", got)
	}
	if h.held.Load() != 1 || b.used.Load() != 1 {
		t.Fatalf("after the append: %d bytes held, %d counted, want the new entry's 1", h.held.Load(), b.used.Load())
	}
	h.clear()
	if h.held.Load() != 0 || b.used.Load() != 0 {
		t.Fatalf("after clear: %d bytes held, %d counted", h.held.Load(), b.used.Load())
	}
}
