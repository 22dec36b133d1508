package streaming

import (
	"sync"

	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
)

// outItem is one thing a connection's sender has to do: send a control
// message, deliver a session entry, or answer a join or resume and then
// replay history.
type outItem struct {
	msg   *streamsvc.DataMessage // a message to send as is
	entry *Entry                 // a delivery; m's position advances when it is sent
	start *replayStart           // a joined/resumed reply followed by a replay
	m     *member                // the membership an entry or start is for
}

// size is what the item counts against the pending-bytes bound: the
// variable-length content it carries.
func (it *outItem) size() int {
	switch {
	case it.entry != nil:
		return len(it.entry.Msg.Data)
	case it.msg != nil && it.msg.Reason != nil:
		return len(*it.msg.Reason)
	}
	return 0
}

// outQueue is a connection's bounded outbound queue. Producers (publishers,
// the receiver, the housekeeper) never wait on it: a push that would cross a
// bound fails, and the caller disconnects the client as a slow consumer.
// Its buffer grows with use, so an idle connection holds none.
type outQueue struct {
	notify chan struct{} // capacity 1: "the queue is not empty"

	mu       sync.Mutex // guards the fields below
	items    []outItem
	pending  int // items queued or taken but not yet sent
	bytes    int // payload bytes of those items
	closed   bool
	maxItems int
	maxBytes int
}

func newOutQueue(maxItems, maxBytes int) *outQueue {
	return &outQueue{notify: make(chan struct{}, 1), maxItems: maxItems, maxBytes: maxBytes}
}

// pushResult says what became of a push.
type pushResult int

const (
	pushed pushResult = iota
	pushFull
	pushClosed
)

func (q *outQueue) push(it outItem) pushResult {
	return q.pushBounded(it, true)
}

// pushRestore queues one of the items a reconnecting client's memberships
// need, whatever the bounds: there are at most two per membership, and a
// client must be able to come back with all of them.
func (q *outQueue) pushRestore(it outItem) {
	q.pushBounded(it, false)
}

func (q *outQueue) pushBounded(it outItem, bounded bool) pushResult {
	n := it.size()
	q.mu.Lock()
	switch {
	case q.closed:
		q.mu.Unlock()
		return pushClosed
	case bounded && (q.pending >= q.maxItems || (n > 0 && q.bytes+n > q.maxBytes)):
		q.mu.Unlock()
		return pushFull
	}
	wasEmpty := len(q.items) == 0
	q.items = append(q.items, it)
	q.pending++
	q.bytes += n
	q.mu.Unlock()
	// The sender waits only after taking an empty queue, so only the push
	// that makes the queue non-empty needs to wake it.
	if wasEmpty {
		select {
		case q.notify <- struct{}{}:
		default:
		}
	}
	return pushed
}

// take moves every queued item into dst, which it returns; the queue keeps
// dst's old backing array for reuse, so a busy connection swaps two buffers.
func (q *outQueue) take(dst []outItem) []outItem {
	q.mu.Lock()
	dst, q.items = q.items, dst[:0]
	q.mu.Unlock()
	return dst
}

// sent releases what take handed out once it has been sent.
func (q *outQueue) sent(items, bytes int) {
	q.mu.Lock()
	q.pending -= items
	q.bytes -= bytes
	q.mu.Unlock()
}

// close refuses further pushes; what is queued stays for a final flush.
func (q *outQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
}
