package streaming

import (
	"sync"

	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
)

// memberOp is a change to one of the connection's memberships, applied by
// its sender in the order the client asked for it, with its reply.
type memberOp uint8

const (
	opNone    memberOp = iota
	opJoin             // point the cursor after seq; reply joined
	opRestore          // point the cursor at the retained position; reply joined (and paused)
	opPause            // stop the cursor; reply paused
	opResume           // restart a paused cursor; reply resumed
	opLeave            // let go of the member; reply left
	opRejoin           // the session's history restarted: point the cursor at its start; reply joined, recovered false
)

// outItem is one thing a connection's sender has to do: send a message as
// is, or apply a membership change and send its reply.
type outItem struct {
	msg   *streamsvc.DataMessage // a message to send as is
	op    memberOp
	m     *member
	seq   uint64  // opJoin, opRejoin: the position fixed
	last  uint64  // opJoin: the session's last seq when the join was served
	epoch *string // opJoin, opRejoin: the session's epoch when the position was fixed
	lost  bool    // opJoin: the client asked for another epoch
}

// outQueue is a connection's queue of replies, errors, probes and
// membership changes; deliveries do not go through it (members are cursors
// into history). Its receiver waits for room when it is full: a client
// that asks faster than it reads the answers is pushed back, not cut off.
// Its buffer grows with use, so an idle connection holds none.
type outQueue struct {
	notify chan struct{} // capacity 1: "there is something to send"
	room   chan struct{} // capacity 1: "the queue has room again"

	mu     sync.Mutex // guards the fields below
	items  []outItem
	max    int
	closed bool
}

func newOutQueue(max int) *outQueue {
	return &outQueue{notify: make(chan struct{}, 1), room: make(chan struct{}, 1), max: max}
}

// wake tells the sender there is something to send.
func (q *outQueue) wake() {
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// push queues it, waiting for room until done is closed. It reports
// whether it was queued.
func (q *outQueue) push(it outItem, done <-chan struct{}) bool {
	for {
		q.mu.Lock()
		switch {
		case q.closed:
			q.mu.Unlock()
			return false
		case len(q.items) < q.max:
			q.items = append(q.items, it)
			q.mu.Unlock()
			q.wake()
			return true
		}
		q.mu.Unlock()
		select {
		case <-q.room:
		case <-done:
			return false
		}
	}
}

// offer queues it if there is room, and reports whether it did. For what
// can be skipped when the client has plenty to read: heartbeats, probes.
func (q *outQueue) offer(it outItem) bool {
	q.mu.Lock()
	ok := !q.closed && len(q.items) < q.max
	if ok {
		q.items = append(q.items, it)
	}
	q.mu.Unlock()
	if ok {
		q.wake()
	}
	return ok
}

// pushRestore queues a restored membership whatever the bound: a client
// must be able to come back with all of its memberships.
func (q *outQueue) pushRestore(it outItem) {
	q.mu.Lock()
	q.items = append(q.items, it)
	q.mu.Unlock()
	q.wake()
}

// take moves every queued item into dst, which it returns; the queue keeps
// dst's old backing array for reuse, so a busy connection swaps two buffers.
func (q *outQueue) take(dst []outItem) []outItem {
	q.mu.Lock()
	dst, q.items = q.items, dst[:0]
	q.mu.Unlock()
	if len(dst) > 0 {
		select {
		case q.room <- struct{}{}:
		default:
		}
	}
	return dst
}

// close refuses further pushes; what is queued stays for a final flush.
func (q *outQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
}
