package streaming

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	"goa.design/clue/log"
	goa "goa.design/goa/v3/pkg"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// replayBatch is how many history entries a sender reads per member and
// turn, so that a long replay holds a session's lock only briefly and
// interleaves with the connection's other traffic.
const replayBatch = 64

// conn is one stream. Its receiver reads and dispatches client messages in
// order; its sender owns every write to the stream. They meet only at the
// bounded outbound queue, so neither can block the other.
type conn struct {
	svc      *Service
	id       string
	clientID *string // id, shared by every delivery this client sends
	client   *client // set by pool.register
	stream   streamsvc.StreamDataServerStream
	ctx      context.Context
	peer     string
	ident    *Identity // nil without authentication
	opened   time.Time
	q        *outQueue

	closeOnce sync.Once
	closing   chan struct{} // closed by close
	reason    closeReason   // set before closing is closed
	err       error         // the receive error behind reasonClientGone or reasonReceiveLimit
	killOnce  sync.Once
	killed    chan struct{} // closed when even a flush must stop

	senderDone chan struct{}
	recvDone   chan struct{}
	finished   chan struct{} // closed when all three parts ended and the cleanup ran
	running    atomic.Int32  // parts still running: handler, sender, receiver

	// Activity the housekeeper watches.
	received atomic.Uint64
	sends    atomic.Uint64 // incremented before and after each send: odd while one is in progress

	serving atomic.Bool  // set once serve starts; the housekeeper leaves it alone before
	hk      housekeeping // owned by the housekeeper

	// Owned by the sender.
	replays []*replay
	buf     []*Entry
}

func newConn(svc *Service, id string, stream streamsvc.StreamDataServerStream, ctx context.Context, peer string, now time.Time) *conn {
	c := &conn{
		svc:        svc,
		id:         id,
		stream:     stream,
		ctx:        ctx,
		peer:       peer,
		opened:     now,
		q:          newOutQueue(svc.cfg.QueueSize, svc.cfg.MaxPendingBytes),
		closing:    make(chan struct{}),
		killed:     make(chan struct{}),
		senderDone: make(chan struct{}),
		recvDone:   make(chan struct{}),
		finished:   make(chan struct{}),
		hk:         housekeeping{recvAt: now, sendAt: now},
	}
	c.clientID = ptr(id) // not &c.id: history entries point at it and must not keep c alive
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

// push queues an item for the sender. A client whose queue is full is a
// slow consumer: it is disconnected, and whoever pushed carries on.
func (c *conn) push(it outItem) {
	if c.q.push(it) == pushFull {
		c.close(reasonSlowConsumer, nil)
	}
}

// serve runs the stream until it ends and returns its final status.
func (c *conn) serve() error {
	c.attach()
	c.serving.Store(true)

	c.running.Add(2)
	c.svc.wg.Add(2)
	go c.sendLoop()
	go c.recvLoop()

	select {
	case <-c.closing:
	case <-c.ctx.Done():
		// The RPC is over, and the receiver sees it at once. gRPC also ends
		// the RPC itself when it refuses a message (too large), so let the
		// receiver say why before calling the client gone.
		<-c.recvDone
		c.close(reasonClientGone, c.ctx.Err())
	}
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

// exit is called by each of the three parts as it ends; the last one out
// detaches the memberships, frees the pool slot and counts the disconnect.
func (c *conn) exit() {
	if c.running.Add(-1) > 0 {
		return
	}
	now := time.Now()
	c.detach(now)
	c.svc.pool.unregister(c)
	if label := reasons[c.reason].label; label != "" {
		c.svc.metrics.Disconnected(label)
	}
	close(c.finished)
}

// attach hands the client's retained memberships to this connection: each
// gets a joined and the replay of what it missed, or stays paused.
func (c *conn) attach() {
	cl := c.client
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cl.conn = c
	for _, m := range cl.members {
		c.restore(m)
	}
}

// restore attaches one retained membership, unless this connection's
// identity may no longer have it.
func (c *conn) restore(m *member) {
	s := m.sess
	s.mu.Lock()
	defer s.mu.Unlock()
	if !c.ident.May(*s.name) {
		delete(c.client.members, *s.name)
		m.leave()
		reply := control(&actError, s.name)
		reply.Reason = ptr(errPermissionDenied)
		c.q.pushRestore(outItem{msg: reply})
		return
	}
	m.conn = c
	m.gen++
	if m.state == statePaused {
		_, complete := s.hist.Read(m.sent.Load(), nil)
		reply := control(&actJoined, s.name)
		reply.Seq, reply.Epoch, reply.Recovered = ptr(s.hist.Last()), s.epoch, &complete
		c.q.pushRestore(outItem{msg: reply})
		c.q.pushRestore(outItem{msg: control(&actPaused, s.name)})
		return
	}
	m.state = stateReplaying
	c.q.pushRestore(outItem{m: m, start: &replayStart{gen: m.gen, action: &actJoined, fromSent: true}})
}

// detach leaves the memberships to be retained, unless a newer connection
// already took them.
func (c *conn) detach(now time.Time) {
	cl := c.client
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.conn != c {
		return
	}
	cl.conn, cl.detachedAt = nil, now
	for _, m := range cl.members {
		m.sess.mu.Lock()
		if m.conn == c {
			m.conn = nil
			m.gen++
		}
		m.sess.mu.Unlock()
	}
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

// sendLoop writes everything the client is sent: the queue's items in
// order, interleaved with the replays in progress.
func (c *conn) sendLoop() {
	defer c.svc.wg.Done()
	defer c.exit()
	defer close(c.senderDone)
	defer c.recoverPanic()
	welcome := &streamsvc.DataMessage{
		Type:      typeControl,
		Action:    &actWelcome,
		ClientID:  c.clientID,
		Timestamp: ptr(c.opened.UnixMilli()),
	}
	if c.send(welcome) != nil { // first, whatever else is already queued
		return
	}
	var batch []outItem
	for {
		if c.isClosing() {
			c.sendFinal(batch)
			return
		}
		batch = c.q.take(batch)
		ok := c.sendAll(batch)
		busy := len(batch) > 0
		clear(batch)
		batch = batch[:0]
		if !ok {
			return
		}
		if len(c.replays) > 0 {
			if !c.replayStep() {
				return
			}
			continue
		}
		if !busy {
			select {
			case <-c.q.notify:
			case <-c.closing:
			}
		}
	}
}

// sendFinal sends what the close reason calls for: a goaway, then, when
// flushing, what was queued before the queue closed.
func (c *conn) sendFinal(batch []outItem) {
	r := reasons[c.reason]
	if r.goaway != "" {
		msg := control(&actGoaway, nil)
		msg.Reason = &r.goaway
		if c.send(msg) != nil {
			return
		}
	}
	if r.flush {
		if !c.sendAll(c.q.take(batch)) {
			return
		}
		// Replays under way, including those the flush just started, are
		// part of what the client was promised. The send timeout and the
		// drain deadline bound this.
		for len(c.replays) > 0 && c.replayStep() {
		}
	}
}

func (c *conn) sendAll(batch []outItem) bool {
	bytes := 0
	defer func() { c.q.sent(len(batch), bytes) }()
	for i := range batch {
		it := &batch[i]
		bytes += it.size()
		if !c.sendItem(it) {
			return false
		}
	}
	return true
}

func (c *conn) sendItem(it *outItem) bool {
	switch {
	case it.entry != nil:
		if c.send(&it.entry.Msg) != nil {
			return false
		}
		it.m.sent.Store(it.entry.Seq)
		c.svc.metrics.Delivered(time.Since(it.entry.Accepted))
	case it.start != nil:
		reply, rp := it.m.sess.startReplay(c, it.m, it.start)
		if c.send(reply) != nil {
			return false
		}
		if rp != nil {
			c.replays = append(c.replays, rp)
		}
	default:
		if c.send(it.msg) != nil {
			return false
		}
	}
	return true
}

// replayStep sends the next batch of each replay in progress.
func (c *conn) replayStep() bool {
	if c.buf == nil {
		c.buf = make([]*Entry, replayBatch)
	}
	live := c.replays[:0]
	for _, r := range c.replays {
		n, st := r.m.sess.readReplay(c, r, c.buf)
		switch st {
		case replayLost:
			c.close(reasonSlowConsumer, nil)
			return false
		case replayOver:
			continue
		}
		for _, e := range c.buf[:n] {
			if c.send(&e.Msg) != nil {
				return false
			}
			r.cursor = e.Seq
			r.m.sent.Store(e.Seq)
			c.svc.metrics.Delivered(time.Since(e.Accepted))
		}
		clear(c.buf[:n])
		live = append(live, r)
	}
	clear(c.replays[len(live):])
	c.replays = live
	return true
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
	err := c.stream.Send(msg)
	c.sends.Add(1)
	if err != nil {
		if !c.isClosing() { // a send cut short by the end of the stream did not fail
			c.svc.metrics.SendFailed()
		}
		c.close(reasonSendFailed, err)
		return err
	}
	return nil
}
