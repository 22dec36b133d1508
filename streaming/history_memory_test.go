package streaming

import (
	"strings"
	"testing"
	"time"
)

func entry(data int, at time.Time) *Entry {
	e := &Entry{Accepted: at}
	e.Msg.Data = make([]byte, data)
	return e
}

func TestMemoryHistory(t *testing.T) {
	now := time.Now()
	h := NewMemoryHistory(5, 1000)("s").(*memoryHistory)
	buf := make([]*Entry, 10)
	for range 7 {
		h.Append(entry(10, now))
	}
	if n, complete := h.Read(0, buf); n != 5 || complete || buf[0].Seq != 3 || buf[4].Seq != 7 {
		t.Fatalf("read from 0: n %d complete %v first %d", n, complete, buf[0].Seq)
	}
	if n, complete := h.Read(2, buf); n != 5 || !complete {
		t.Fatalf("read from 2: n %d complete %v", n, complete)
	}
	if n, complete := h.Read(5, buf[:1]); n != 1 || !complete || buf[0].Seq != 6 {
		t.Fatalf("read one from 5: n %d complete %v seq %d", n, complete, buf[0].Seq)
	}
	if n, complete := h.Read(7, buf); n != 0 || !complete {
		t.Fatalf("read from last: n %d complete %v", n, complete)
	}

	// The byte bound evicts the oldest, but never the newest.
	h.Append(entry(900, now)) // seq 8: 4×10 + 900 fit
	if h.n != 5 || h.bytes != 940 {
		t.Fatalf("after a big entry: %d entries, %d bytes", h.n, h.bytes)
	}
	h.Append(entry(100, now)) // seq 9: only 900 + 100 fit
	if h.n != 2 || h.bytes != 1000 {
		t.Fatalf("after crossing the byte bound: %d entries, %d bytes", h.n, h.bytes)
	}
	h.Append(entry(5000, now)) // seq 10: alone, over the bound
	if h.n != 1 || h.bytes != 5000 || h.Last() != 10 {
		t.Fatalf("after a huge entry: %d entries, %d bytes, last %d", h.n, h.bytes, h.Last())
	}

	// Expiry by age.
	h.Append(entry(1, now.Add(time.Minute))) // seq 11
	if left := h.Expire(now.Add(time.Second)); left != 1 || h.bytes != 1 {
		t.Fatalf("after expiry: %d left, %d bytes", left, h.bytes)
	}
	if left := h.Expire(now.Add(time.Hour)); left != 0 || h.bytes != 0 {
		t.Fatalf("after full expiry: %d left, %d bytes", left, h.bytes)
	}
	if _, complete := h.Read(10, buf); complete {
		t.Fatal("an expired entry read as complete")
	}
	h.Append(entry(1, now)) // seq 12
	if n, complete := h.Read(11, buf); n != 1 || !complete || buf[0].Seq != 12 {
		t.Fatalf("append after full expiry: n %d complete %v", n, complete)
	}
}

func TestMaxSessions(t *testing.T) {
	ts := startServer(t, Config{MaxSessions: 2})
	a := ts.open(t, "a")
	a.welcome()
	a.join("s1")
	a.join("s2")
	a.send(joinMsg("s3", nil, nil))
	if e := a.expect(typeControl, actError); !strings.Contains(str(e.Reason), "too many sessions on this server") {
		t.Fatalf("got %s", describe(e))
	}
	b := ts.open(t, "b")
	b.welcome()
	b.join("s1") // existing sessions stay open to everyone
}
