package streaming

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	"goa.design/clue/log"
	goa "goa.design/goa/v3/pkg"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// deliverBatch is how many entries a sender sends per member and turn, so
// that one busy session cannot starve the connection's other sessions or
// its replies.
const deliverBatch = 64

// conn is one stream. Its receiver reads and handles client messages in
// order; its sender owns every write to the stream and every cursor of the
// memberships attached to it. They meet only at the bounded outbound queue
// (publishers only count and wake), so neither can block the other.
type conn struct {
	svc      *Service
	id       string
	clientID *string // id, shared by every delivery this client sends
	client   *client // set by pool.register
	slot     int     // index in pool.conns; guarded by pool.mu
	stream   streamsvc.StreamDataServerStream
	ctx      context.Context
	raw      rawSender // the gRPC stream under stream, when deliveries may go out encoded once
	peer     string
	ident    *Identity     // nil without authentication
	fence    atomic.Uint64 // with a shared engine, the client's claim for this stream; 0 until made
	notified atomic.Uint64 // with a shared engine, the highest fence another instance told it of
	opened   time.Time
	q        *outQueue

	closeOnce sync.Once
	closing   chan struct{} // closed by close
	reason    closeReason   // set before closing is closed
	err       error         // the receive error behind reasonClientGone or reasonReceiveLimit
	killOnce  sync.Once
	killed    chan struct{} // closed when even a flush must stop

	senderDone chan struct{} // closed when the last sender ended
	sender     atomic.Int32  // senderRunning or senderParked
	parked     chan struct{} // capacity 1: a sender parked
	recvDone   chan struct{}
	finished   chan struct{} // closed when every part ended and the cleanup ran
	running    atomic.Int32  // parts still running: handler, sender, receiver

	// Live deliveries counted for this stream but not yet sent: the
	// distance between its active cursors and the heads of their sessions.
	pending      atomic.Int64
	pendingBytes atomic.Int64

	// Activity the housekeeper watches.
	received atomic.Uint64
	sends    atomic.Uint64 // incremented before and after each send: odd while one is in progress
	stuck    atomic.Bool   // a send has been blocked since the housekeeper's last look

	serving atomic.Bool  // set once serve starts; the housekeeper leaves it alone before
	hk      housekeeping // owned by the housekeeper

	// Owned by the sender, then by the cleanup once the sender ended.
	cursors []*member // attached members being delivered
	batch   []outItem // taken from the queue; batch[applied:] not applied yet
	applied int

	// With a shared engine, publications on their way to the engine, in
	// the client's order; a publisher goroutine runs while there are any.
	pubMu      sync.Mutex
	pubs       []publication
	publishing bool
	pubRoom    chan struct{} // capacity 1: room again in pubs
	pubIdle    chan struct{} // capacity 1: the publisher goroutine ended
	dirty      atomic.Bool   // its client's memberships changed since the saver last looked
	saveMu     sync.Mutex    // one save of its memberships at a time
	lastSaved  bool          // the stream's end saved them: the saver's older picture must not; guarded by saveMu

	// Owned by the receiver, then by the cleanup once the receiver ended.
	refused []outItem // membership changes served but not queued: the stream ended first
}

func newConn(svc *Service, id string, stream streamsvc.StreamDataServerStream, ctx context.Context, peer string, now time.Time) *conn {
	c := &conn{
		svc:        svc,
		id:         id,
		slot:       -1,
		stream:     stream,
		raw:        rawSenderFrom(ctx),
		ctx:        ctx,
		peer:       peer,
		opened:     now,
		q:          newOutQueue(svc.cfg.QueueSize),
		closing:    make(chan struct{}),
		killed:     make(chan struct{}),
		senderDone: make(chan struct{}),
		parked:     make(chan struct{}, 1),
		pubRoom:    make(chan struct{}, 1),
		pubIdle:    make(chan struct{}, 1),
		recvDone:   make(chan struct{}),
		finished:   make(chan struct{}),
		hk:         housekeeping{recvAt: now, sendAt: now},
	}
	c.clientID = ptr(id) // not &c.id: entries point at it and must not keep c alive
	return c
}

// close ends the stream for reason; the first reason wins.
func (c *conn) close(r closeReason, err error) {
	c.closeOnce.Do(func() {
		c.reason, c.err = r, err
		c.q.close()
		close(c.closing)
	})
}

// kill stops a flush in progress: the handler returns at once.
func (c *conn) kill() {
	c.killOnce.Do(func() { close(c.killed) })
}

func (c *conn) isClosing() bool {
	select {
	case <-c.closing:
		return true
	default:
		return false
	}
}

// queued counts n live deliveries of the given payload bytes as pending for
// this stream, and wakes the sender. A client that does not read (its send has been blocked
// since the housekeeper last looked) is a slow consumer as soon as more
// than the byte bound is pending for it; one that reads gets the backlog
// rule's time to catch up (see Service.check).
func (c *conn) queued(n, bytes int64) {
	c.pending.Add(n)
	if c.pendingBytes.Add(bytes) > int64(c.svc.cfg.MaxPendingBytes) && c.stuck.Load() {
		c.close(reasonSlowConsumer, nil)
	}
	c.q.wake()
}

// sent takes back n live deliveries of the given payload bytes that were
// sent or are no longer due.
func (c *conn) sent(n, bytes int64) {
	c.pending.Add(-n)
	c.pendingBytes.Add(-bytes)
	c.svc.budget.add(-bytes)
}

// senderLinger is how long an idle sender waits for something to send
// before its goroutine ends; the handler starts another when there is.
// An idle stream then costs no sender goroutine, and a busy one never
// starts one per message.
const senderLinger = 50 * time.Millisecond

// Sender states.
const (
	senderRunning int32 = iota
	senderParked        // no sender goroutine: the handler starts one when there is something to send
)

// start runs the sender: the welcome goes out at once, whatever the
// stream is waiting for.
func (c *conn) start() {
	c.running.Add(1)
	c.runSender(true)
}

func (c *conn) runSender(welcome bool) {
	c.svc.wg.Add(1)
	go c.sendLoop(welcome)
}

// unpark starts a sender if none runs, and reports whether it did.
func (c *conn) unpark() bool {
	if c.sender.CompareAndSwap(senderParked, senderRunning) {
		c.runSender(false)
		return true
	}
	return false
}

// serve takes over the client's memberships, runs the receiver, and returns
// the stream's final status when it ends.
func (c *conn) serve() error {
	if !c.isClosing() {
		c.attach()
	}
	c.serving.Store(true)
	c.running.Add(1)
	c.svc.wg.Add(1)
	go c.recvLoop()

	for parked := false; ; {
		var work <-chan struct{}
		if parked {
			work = c.q.notify
		}
		select {
		case <-c.closing:
		case <-c.ctx.Done():
			// The RPC is over, and the receiver sees it at once. gRPC also
			// ends the RPC itself when it refuses a message (too large), so
			// let the receiver say why before calling the client gone.
			<-c.recvDone
			c.close(reasonClientGone, c.ctx.Err())
		case <-c.parked:
			parked = true
			continue
		case <-work:
			parked = !c.unpark()
			continue
		}
		break
	}
	c.unpark() // a sender ends the stream's sending: the goaway, the flush, or nothing
	if r := reasons[c.reason]; r.flush || r.goaway != "" {
		select {
		case <-c.senderDone:
		case <-c.killed:
		}
	}
	return c.status()
}

// status is what the stream ends with.
func (c *conn) status() error {
	switch c.reason {
	case reasonClientDone:
		return nil
	case reasonClientGone, reasonReceiveLimit, reasonSendFailed:
		if c.err == nil {
			return status.Error(codes.Canceled, "stream ended")
		}
		if _, ok := status.FromError(c.err); ok {
			return c.err
		}
		return status.FromContextError(c.err).Err()
	default:
		return reasons[c.reason].err
	}
}

// exit is called by each part as it ends; the last one out retains the
// memberships, frees the pool slot and counts the disconnect.
func (c *conn) exit() {
	if c.running.Add(-1) > 0 {
		return
	}
	now := time.Now()
	c.detach()
	if c.svc.shared != nil {
		c.svc.leaveShared(c)
	} else if evicted := c.svc.pool.unregister(c, now); evicted != nil {
		evicted.forget(c.svc.sessions)
		c.svc.metrics.RetainedEvicted()
	}
	if label := reasons[c.reason].label; label != "" {
		c.svc.metrics.Disconnected(label)
	}
	close(c.finished)
}

// attach hands the client's retained memberships to this connection: each
// gets a joined and the replay of what it missed, or stays paused.
func (c *conn) attach() {
	cl := c.client
	r := c.svc.sessions
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cl.conn = c
	for name, m := range cl.members {
		s := m.sess
		s.mu.Lock()
		switch {
		case s.removed: // evicted to make room while retained: not restored
			delete(cl.members, name)
		case !c.ident.May(name):
			delete(cl.members, name)
			s.drop(r, m)
			reply := control(&actError, s.name)
			reply.Reason = ptr(errPermissionDenied)
			c.q.pushRestore(outItem{msg: reply})
		default:
			s.attach(r, m, c)
			c.q.pushRestore(outItem{op: opRestore, m: m})
		}
		s.mu.Unlock()
	}
}

// detach leaves the memberships to be retained, at the positions this
// stream was actually handed. Called once the sender and receiver ended.
// The changes the sender did not apply are applied here, in the order the
// client asked for them: those it took, those still queued, and those the
// receiver could not queue.
func (c *conn) detach() {
	for i := range c.batch[c.applied:] { // the sender stopped in the middle: a failed send, a panic
		c.change(&c.batch[c.applied+i], false)
	}
	for _, it := range c.q.take(nil) {
		c.change(&it, false)
	}
	for i := range c.refused {
		c.change(&c.refused[i], false)
	}
	cl := c.client
	r := c.svc.sessions
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.conn != c {
		return // it never took them over
	}
	for _, m := range c.cursors {
		m.deactivate(c)
	}
	c.cursors = nil
	for _, m := range cl.members {
		m.sess.mu.Lock()
		m.sess.detach(r, m)
		m.sess.mu.Unlock()
	}
	cl.conn = nil
}

// recvLoop reads the client's messages and handles them one at a time, in
// order. It ends when the stream does; a blocked Recv returns only once the
// handler has returned.
func (c *conn) recvLoop() {
	defer c.svc.wg.Done()
	defer c.exit()
	defer close(c.recvDone)
	defer c.recoverPanic()
	for {
		msg, err := c.stream.Recv()
		if err != nil {
			var invalid *goa.ServiceError
			if errors.As(err, &invalid) {
				// Goa validated one message and refused it; the stream is fine.
				c.received.Add(1)
				c.refuse(nil, invalid.Error())
				continue
			}
			switch {
			case errors.Is(err, io.EOF):
				c.close(reasonClientDone, nil)
			case status.Code(err) == codes.ResourceExhausted:
				c.svc.metrics.ReceiveFailed()
				c.close(reasonReceiveLimit, err)
			default:
				if !c.isClosing() {
					c.svc.metrics.ReceiveFailed()
				}
				c.close(reasonClientGone, err)
			}
			return
		}
		c.received.Add(1)
		if c.isClosing() {
			return
		}
		c.handle(msg)
	}
}

// sendLoop writes everything the client is sent: the welcome, then the
// queue's items in order, interleaved with the deliveries of every active
// cursor. After senderLinger with nothing to send it parks: its goroutine
// ends, and the handler starts another when there is something to send.
func (c *conn) sendLoop(welcome bool) {
	defer c.svc.wg.Done()
	if c.send1(welcome) {
		signal(c.parked) // one is pending at most: only the handler starts senders
		return
	}
	close(c.senderDone)
	c.exit()
}

// send1 is one sender's run; it reports whether it parked.
func (c *conn) send1(welcome bool) (parked bool) {
	defer c.recoverPanic()
	if welcome {
		msg := &streamsvc.DataMessage{
			Type:      typeControl,
			Action:    &actWelcome,
			ClientID:  c.clientID,
			Timestamp: ptr(c.opened.UnixMilli()),
		}
		if c.send(msg) != nil {
			return false
		}
	}
	var linger *time.Timer
	defer func() {
		if linger != nil {
			linger.Stop()
		}
	}()
	for {
		if c.isClosing() {
			c.sendFinal()
			return
		}
		c.batch = c.q.take(c.batch)
		busy := len(c.batch) > 0
		if !c.applyAll() {
			return
		}
		sent, ok := c.deliver(deliverBatch)
		if !ok {
			return
		}
		if busy || sent {
			continue
		}
		if linger == nil {
			linger = time.NewTimer(senderLinger)
		} else {
			linger.Reset(senderLinger)
		}
		select {
		case <-c.q.notify:
		case <-c.closing:
		case <-linger.C:
			if c.park() {
				return true
			}
		}
	}
}

// park ends the sender's goroutine, unless the stream is closing: then a
// sender must end its sending, this one unless the handler started one.
func (c *conn) park() bool {
	c.sender.Store(senderParked)
	if c.isClosing() && c.sender.CompareAndSwap(senderParked, senderRunning) {
		return false
	}
	return true
}

// applyAll applies and answers the items in c.batch. When the sender stops
// before the end (a failed send, a panic), the cleanup applies the rest.
func (c *conn) applyAll() bool {
	for c.applied = 0; c.applied < len(c.batch); {
		reply, then := c.change(&c.batch[c.applied], true)
		c.applied++
		if c.send(reply) != nil || (then != nil && c.send(then) != nil) {
			return false
		}
	}
	clear(c.batch)
	c.batch, c.applied = c.batch[:0], 0
	return true
}

// sendFinal sends what the close reason calls for: a goaway, then, when
// flushing, what was queued before the queue closed and every delivery due
// by then.
func (c *conn) sendFinal() {
	r := reasons[c.reason]
	if r.goaway != "" {
		msg := control(&actGoaway, nil)
		msg.Reason = &r.goaway
		if c.send(msg) != nil {
			return
		}
	}
	if !r.flush {
		return
	}
	c.waitPublished()
	c.batch = c.q.take(c.batch)
	if !c.applyAll() {
		return
	}
	for _, m := range c.cursors {
		for target := m.sess.last(); m.at.Seq < target; {
			// A cursor whose chain was restarted ends before target.
			if sent, ok := c.deliver(deliverBatch); !ok || !sent {
				return
			}
		}
	}
}

// deliver sends up to n entries of each active cursor. It reports whether
// it sent any, and false for ok when a send failed.
func (c *conn) deliver(n int) (sent, ok bool) {
	var live, liveBytes int64
	replayed := 0
	ok = true
	for _, m := range c.cursors {
		from := m.at
		for range n {
			e := m.at.next.Load()
			if e == nil {
				break
			}
			if c.sendEntry(e) != nil {
				ok = false
				break
			}
			m.at, sent = e, true
			if e.Seq > m.liveFrom {
				live++
				liveBytes += int64(e.size())
				c.svc.metrics.Delivered(time.Since(e.Accepted))
			} else {
				replayed++
			}
		}
		if m.at != from {
			m.given.Store(m.at.Seq)
		}
		if !ok {
			break
		}
	}
	if live > 0 {
		c.sent(live, liveBytes)
	}
	if replayed > 0 {
		c.svc.metrics.Replayed(replayed)
	}
	return sent, ok
}

// change applies one queue item. With live set it returns the messages to
// send; otherwise the stream has ended and only the membership's state
// changes, so that its retained position is what the client last asked for.
func (c *conn) change(it *outItem, live bool) (reply, then *streamsvc.DataMessage) {
	m := it.m
	switch it.op {
	case opNone:
		return it.msg, nil
	case opJoin:
		c.stop(m)
		m.paused.Store(false)
		if !live {
			m.setPos(it.seq, it.epoch)
			return nil, nil
		}
		complete, _, _ := c.activate(m, it.seq)
		reply = control(&actJoined, m.sess.name)
		reply.Seq, reply.Epoch, reply.Recovered = &it.last, it.epoch, ptr(complete && !it.lost)
		return reply, nil
	case opRestore:
		lost := m.lost
		m.lost = false
		if m.restarted.Swap(false) {
			lost, m.pos = true, 0 // from the start of the restarted history
		}
		if !live {
			return nil, nil
		}
		reply = control(&actJoined, m.sess.name)
		var complete bool
		var last uint64
		if m.paused.Load() {
			complete, last, reply.Epoch = m.peek()
			then = control(&actPaused, m.sess.name)
		} else {
			complete, last, reply.Epoch = c.activate(m, m.pos)
		}
		reply.Seq, reply.Recovered = &last, ptr(complete && !lost)
		return reply, then
	case opRejoin:
		c.stop(m)
		m.setPos(it.seq, it.epoch)
		m.lost = false
		if !live {
			return nil, nil
		}
		reply = control(&actJoined, m.sess.name)
		var last uint64
		if m.paused.Load() {
			_, last, reply.Epoch = m.peek()
			then = control(&actPaused, m.sess.name)
		} else {
			_, last, reply.Epoch = c.activate(m, it.seq)
		}
		reply.Seq, reply.Recovered = &last, ptr(false)
		return reply, then
	case opPause:
		c.stop(m)
		m.paused.Store(true)
		return control(&actPaused, m.sess.name), nil
	case opResume:
		wasPaused := m.paused.Swap(false)
		if !live {
			return nil, nil
		}
		complete, last := true, m.sess.last()
		if wasPaused {
			complete, last, _ = c.activate(m, m.pos)
		}
		reply = control(&actResumed, m.sess.name)
		reply.Seq, reply.Recovered = &last, &complete
		return reply, nil
	case opLeave:
		c.stop(m)
		s := m.sess
		s.mu.Lock()
		s.drop(c.svc.sessions, m)
		s.mu.Unlock()
		return control(&actLeft, s.name), nil
	}
	panic(fmt.Sprintf("unknown membership change %d", it.op))
}

// activate starts delivering m's entries after seq.
func (c *conn) activate(m *member, seq uint64) (complete bool, last uint64, epoch *string) {
	complete, last, epoch = m.activate(c, seq)
	c.cursors = append(c.cursors, m)
	return complete, last, epoch
}

// stop stops delivering m's entries, keeping its position.
func (c *conn) stop(m *member) {
	if i := slices.Index(c.cursors, m); i >= 0 {
		m.deactivate(c)
		c.cursors = slices.Delete(c.cursors, i, i+1)
	}
}

// recoverPanic ends the stream INTERNAL if its goroutine panics, so that
// one stream's failure never takes the process down.
func (c *conn) recoverPanic() {
	if r := recover(); r != nil {
		log.Error(c.ctx, fmt.Errorf("panic: %v", r), log.KV{K: "client", V: c.id}, log.KV{K: "stack", V: string(debug.Stack())})
		c.close(reasonInternal, nil)
	}
}

// send writes one message. The housekeeper watches sends to find one
// blocked past the send timeout.
func (c *conn) send(msg *streamsvc.DataMessage) error {
	c.sends.Add(1)
	return c.endSend(c.stream.Send(msg))
}

// sendEntry writes a delivery: its encoding, made once for every member,
// when the stream allows it, else the message.
func (c *conn) sendEntry(e *Entry) error {
	if c.raw == nil {
		return c.send(&e.Msg)
	}
	c.sends.Add(1)
	return c.endSend(c.raw.SendMsg(&e.enc))
}

// endSend ends a send that returned err.
func (c *conn) endSend(err error) error {
	c.sends.Add(1)
	if c.stuck.Load() {
		c.stuck.Store(false)
	}
	if err != nil {
		if !c.isClosing() { // a send cut short by the end of the stream did not fail
			c.svc.metrics.SendFailed()
		}
		c.close(reasonSendFailed, err)
	}
	return err
}
