package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	streamsvcc "github.com/streamhub/streamhub/gen/grpc/stream_service/client"
	streampb "github.com/streamhub/streamhub/gen/grpc/stream_service/pb"
	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// maxRecvMessageSize is above any server's --max-message-size we expect
// (grpc-go's client default is only 4 MiB): the server enforces the limit,
// and the client must not refuse a message the server accepted.
const maxRecvMessageSize = 64 << 20

// stream is one StreamData stream and its own gRPC connection: a fresh
// connection per stream, so that a reconnect after a goaway reaches
// whichever server now answers at the address, not the draining one.
//
// Its reader hands what it receives to the client and the user; its writer
// owns every Send. They meet only at the bounded send queue, so a writer
// blocked by flow control never keeps the reader from reading, which would
// deadlock with a server waiting for the client to read its answers.
type stream struct {
	c      *Client
	cc     *grpc.ClientConn
	pb     streampb.StreamService_StreamDataClient
	ctx    context.Context
	cancel context.CancelFunc
	out    sendQueue

	readerDone, writerDone chan struct{}

	endOnce sync.Once
	endErr  error // why the stream ended; set once, before cancel

	lastRecv     atomic.Int64 // Unix nanoseconds of the last message received
	lastSend     atomic.Int64 // Unix nanoseconds of the last message sent
	waitingUser  atomic.Bool  // the reader is waiting for the user to read Events
	heartbeat    atomic.Bool  // a heartbeat is queued
	probing      bool         // a health_check probe is out; owned by the manager
	welcomeTimer *time.Timer

	// Guarded by Client.mu.
	welcomed   bool
	welcomedAt time.Time
	fenced     bool             // the answer to the post-welcome health_check arrived
	ops        map[string][]*op // requests in flight, per session, in the order sent
	goaway     string           // the reason of the goaway received, if any
}

// fail ends the stream for err (the first cause wins).
func (s *stream) fail(err error) {
	s.endOnce.Do(func() { s.endErr = err })
	s.cancel()
}

// cause is why the stream ended.
func (s *stream) cause() error {
	s.fail(nil) // settles endErr
	return s.endErr
}

// run is the connection manager: it opens a stream, serves it until it
// ends, and opens the next after a backoff delay, until the client is
// closed or closes itself.
func (c *Client) run() {
	defer close(c.done)
	c.emit(nil, []Event{&StateChange{State: StateConnecting}})
	attempt := 0
	var fatal error
	for c.ctx.Err() == nil {
		s, err := c.open()
		if s != nil {
			err = c.serve(s)
		}
		if c.ctx.Err() != nil {
			break
		}
		var goaway string
		var welcomed time.Time
		if s != nil {
			c.mu.Lock()
			goaway, welcomed = s.goaway, s.welcomedAt
			c.mu.Unlock()
		}
		end := endFatal
		if !errors.Is(err, errConfig) {
			end = c.classify(err, goaway)
		}
		if end == endFatal {
			if goaway == "replaced" || isAborted(err) {
				err = fmt.Errorf("%w: %w", ErrReplaced, err)
			}
			fatal = err
			break
		}
		c.mu.Lock()
		c.lastErr = err
		c.mu.Unlock()
		if !welcomed.IsZero() {
			// A stream that lived long gets a quick first retry; one that
			// keeps failing soon after its welcome backs off further.
			if time.Since(welcomed) >= c.cfg.backoffMax {
				attempt = 0
			}
			c.emit(nil, []Event{&StateChange{State: StateReconnecting, Cause: err}})
		}
		if end == endImmediate {
			continue
		}
		t := time.NewTimer(c.backoff(attempt))
		attempt++
		select {
		case <-t.C:
		case <-c.ctx.Done():
			t.Stop()
		}
	}
	c.finish(fatal)
}

// finish fails everything still waiting, sends the StateClosed event and
// closes Events. After Close the event is dropped if the user is not
// reading; when the client closes itself it waits for the user (or Close).
func (c *Client) finish(fatal error) {
	c.mu.Lock()
	c.fatal = fatal
	c.closed = fatal
	if c.closed == nil {
		c.closed = ErrClosed
	}
	for _, st := range c.sessions {
		for _, p := range st.pubs {
			c.finishPub(p, 0, c.closed)
		}
		st.pubs = nil
		for _, cl := range st.waiters {
			cl.resolve(Joined{}, c.closed)
		}
		st.waiters = nil
	}
	c.mu.Unlock()
	c.stopOnce.Do(func() { close(c.stop) })
	ev := &StateChange{State: StateClosed, Cause: fatal}
	select {
	case c.events <- ev:
	default:
		if fatal != nil {
			select {
			case c.events <- ev:
			case <-c.ctx.Done():
			}
		}
	}
	close(c.events)
	c.cancel()
}

// errConfig marks an error in the client's configuration: retrying cannot
// help.
var errConfig = errors.New("streamhub: client configuration")

// open dials a new connection and opens a stream on it, with its reader
// and writer running. The stream is given up if the server has not
// welcomed the client within the connect timeout.
func (c *Client) open() (*stream, error) {
	cc, err := grpc.NewClient(c.target, c.dialOptions()...)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errConfig, err)
	}
	ctx, cancel := context.WithCancel(c.ctx)
	s := &stream{
		c:          c,
		cc:         cc,
		ctx:        ctx,
		cancel:     cancel,
		out:        sendQueue{notify: make(chan struct{}, 1)},
		readerDone: make(chan struct{}),
		writerDone: make(chan struct{}),
		ops:        make(map[string][]*op),
	}
	now := time.Now().UnixNano()
	s.lastRecv.Store(now)
	s.lastSend.Store(now)
	// Stopped by serve; until the welcome it gives up a stream that
	// does not open or is not welcomed in time.
	s.welcomeTimer = time.AfterFunc(c.cfg.connectTimeout, func() {
		c.mu.Lock()
		welcomed := s.welcomed
		c.mu.Unlock()
		if !welcomed {
			s.fail(errNoWelcome)
		}
	})
	abort := func(err error) (*stream, error) {
		s.fail(err)
		s.welcomeTimer.Stop()
		cc.Close()
		return nil, s.cause()
	}

	p := &streamsvc.StreamDataPayload{}
	c.mu.Lock()
	if c.clientID != "" {
		id := c.clientID
		p.ClientID = &id
	}
	c.mu.Unlock()
	if c.cfg.token != nil {
		token, err := c.cfg.token(ctx)
		if err != nil {
			return abort(fmt.Errorf("streamhub: token: %w", err))
		}
		token = bearer(token)
		p.Token = &token
	}
	md := metadata.MD{}
	if _, err := streamsvcc.EncodeStreamDataRequest(ctx, p, &md); err != nil {
		return abort(fmt.Errorf("%w: %w", errConfig, err))
	}
	pbs, err := streampb.NewStreamServiceClient(cc).StreamData(metadata.NewOutgoingContext(ctx, md))
	if err != nil {
		return abort(err)
	}
	s.pb = pbs
	go s.read()
	go s.write()
	return s, nil
}

// serve watches s until it ends: it sends heartbeats when the client has
// been silent, probes a silent server and gives up one that does not
// answer. It returns why the stream ended, once its reader and writer
// have ended and its connection is closed.
func (c *Client) serve(s *stream) error {
	tick := time.NewTicker(c.cfg.tick())
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-s.readerDone:
			done = true
		case now := <-tick.C:
			c.check(s, now)
		}
	}
	err := s.cause()
	<-s.writerDone
	s.welcomeTimer.Stop()
	s.cc.Close()
	c.failOversized(s, err)
	c.detach(s)
	return err
}

// failOversized fails the publications that made the server end the
// stream because they exceed its message size limit: sent again, they
// would end every stream. It fails those larger than the limit the status
// names, or the largest sent on s if it names none.
func (c *Client) failOversized(s *stream, err error) {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.ResourceExhausted {
		return
	}
	msg := st.Message()
	i := strings.Index(msg, "larger than max")
	if i < 0 {
		return
	}
	var got, limit int
	if _, err := fmt.Sscanf(msg[i:], "larger than max (%d vs. %d)", &got, &limit); err != nil {
		limit = -1
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var largest *Publication
	var largestIn *membership
	for _, m := range c.sessions {
		for _, p := range slices.Clone(m.pubs) {
			if p.sentOn != s {
				continue
			}
			if limit >= 0 && encodedSize(p) > limit {
				m.takePub(p.id)
				c.finishPub(p, 0, fmt.Errorf("%w: %w", ErrTooLarge, err))
				continue
			}
			if largest == nil || len(p.data) > len(largest.data) {
				largest, largestIn = p, m
			}
		}
	}
	if limit < 0 && largest != nil {
		largestIn.takePub(largest.id)
		c.finishPub(largest, 0, fmt.Errorf("%w: %w", ErrTooLarge, err))
	}
}

// encodedSize is about what a publication takes on the wire: its payload,
// its identifiers and the envelope's other fields.
func encodedSize(p *Publication) int {
	return len(p.data) + len(p.session) + len(p.id) + 32
}

// check sends a heartbeat when the client has sent nothing for the
// heartbeat interval, probes the server when it has been silent, and sends
// again the refused joins that are due.
// Waiting for the user to read events is not the server's silence.
func (c *Client) check(s *stream, now time.Time) {
	c.mu.Lock()
	welcomed := s.welcomed
	if welcomed && c.cur == s {
		c.retryJoins(s, now)
	}
	c.mu.Unlock()
	if !welcomed {
		return // the welcome timer watches the opening
	}
	if now.Sub(time.Unix(0, s.lastSend.Load())) >= c.cfg.heartbeat && s.heartbeat.CompareAndSwap(false, true) {
		s.out.push(&streamsvc.DataMessage{Type: "heartbeat"})
	}
	if s.waitingUser.Load() {
		return
	}
	silence := now.Sub(time.Unix(0, s.lastRecv.Load()))
	switch {
	case silence >= c.cfg.probeAfter+c.cfg.probeTimeout:
		s.fail(fmt.Errorf("%w for %s", errNoAnswer, silence.Round(time.Millisecond)))
	case silence >= c.cfg.probeAfter:
		if !s.probing {
			s.probing = true
			s.out.push(&streamsvc.DataMessage{Type: "health_check"})
		}
	default:
		s.probing = false
	}
}

// detach lets go of a stream that ended: the requests it had in flight
// are asked again on the next stream (joins) or are over (pause, leave:
// the next stream's rejoin restates them), and every publication is held
// for the next stream.
func (c *Client) detach(s *stream) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == s {
		c.cur = nil
	}
	for name, q := range s.ops {
		for _, o := range q {
			if o.kind != opJoin {
				o.resolve(Joined{}, nil)
				continue
			}
			if st := c.sessions[name]; st != nil {
				st.waiters = append(st.waiters, o.calls...)
				o.calls = nil
			} else {
				o.resolve(Joined{}, ErrNotJoined)
			}
		}
	}
	s.ops = nil
	for _, st := range c.sessions {
		st.joining = 0
		st.synced, st.ready = false, false
		for _, p := range st.pubs {
			p.sentOn = nil
		}
	}
}

// read receives until the stream ends, handing each message to the client
// and the events it makes to the user.
func (s *stream) read() {
	defer close(s.readerDone)
	var evs []Event
	for {
		res, err := s.pb.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errEndedOK
			}
			s.fail(err)
			return
		}
		s.lastRecv.Store(time.Now().UnixNano())
		if streamsvcc.ValidateStreamDataResponse(res) != nil {
			continue // one message the design refuses; the stream goes on
		}
		evs = s.c.handle(s, streamsvcc.NewStreamDataResponseDataMessage(res), evs[:0])
		if !s.c.emit(s, evs) {
			s.fail(ErrClosed)
			return
		}
		clear(evs)
	}
}

// errEndedOK: the server ended the stream with OK, which it does only
// after the client half-closed; a client that did not is reconnected.
var errEndedOK = errors.New("streamhub: the server ended the stream")

// write sends what is queued, in order, until the stream ends.
func (s *stream) write() {
	defer close(s.writerDone)
	var batch []*streamsvc.DataMessage
	for {
		select {
		case <-s.out.notify:
		case <-s.ctx.Done():
			return
		}
		batch = s.out.take(batch)
		for i, m := range batch {
			if m.Type == "heartbeat" {
				s.heartbeat.Store(false)
			}
			if err := s.pb.Send(streamsvcc.NewProtoDataMessageStreamDataStreamingRequest(m)); err != nil {
				// io.EOF: the stream is over and the reader learns why.
				if !errors.Is(err, io.EOF) {
					s.fail(err)
				}
				return
			}
			s.lastSend.Store(time.Now().UnixNano())
			batch[i] = nil
		}
	}
}

// emit hands events to the user in order. While the user does not read,
// the stream is not read either (see Events). It reports false once the
// client is closed.
//
// A delivery of the client's own publication completes it only once the
// user has it: a publication is never reported done before its message is
// in the user's hands (a caller that closes the client after its last
// publish loses nothing).
func (c *Client) emit(s *stream, evs []Event) bool {
	for i, ev := range evs {
		var own *Publication
		if m, ok := ev.(*Message); ok {
			own = m.pub
		}
		if !c.emitOne(s, ev) {
			for _, ev := range evs[i:] {
				if m, ok := ev.(*Message); ok && m.pub != nil {
					c.finishPub(m.pub, 0, ErrClosed)
				}
			}
			return false
		}
		if own != nil {
			c.finishPub(own, own.seq, nil)
		}
	}
	return true
}

func (c *Client) emitOne(s *stream, ev Event) bool {
	select {
	case c.events <- ev:
		return true
	default:
	}
	if s != nil {
		s.waitingUser.Store(true)
		defer func() {
			s.lastRecv.Store(time.Now().UnixNano())
			s.waitingUser.Store(false)
		}()
	}
	select {
	case c.events <- ev:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// sendQueue is a stream's queue of messages to send. It does not block:
// what it holds is bounded by the calls waiting for answers, the
// publications in flight (WithMaxInflight) and one heartbeat and probe.
type sendQueue struct {
	notify chan struct{} // capacity 1: "there is something to send"

	mu    sync.Mutex // guards items
	items []*streamsvc.DataMessage
}

func (q *sendQueue) push(m *streamsvc.DataMessage) {
	q.mu.Lock()
	q.items = append(q.items, m)
	q.mu.Unlock()
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// take swaps the queued items with dst's backing array, which the queue
// reuses.
func (q *sendQueue) take(dst []*streamsvc.DataMessage) []*streamsvc.DataMessage {
	q.mu.Lock()
	defer q.mu.Unlock()
	dst, q.items = q.items, dst[:0]
	return dst
}

// dialOptions are the options of each stream's connection.
func (c *Client) dialOptions() []grpc.DialOption {
	return append([]grpc.DialOption{
		grpc.WithTransportCredentials(c.cfg.creds),
		// 30s stays above the server's keepalive enforcement (20s), which
		// closes connections that ping more often ("too_many_pings").
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                30 * time.Second,
			Timeout:             10 * time.Second,
			PermitWithoutStream: true,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMessageSize)),
		grpc.WithUserAgent("streamhub-go-client"),
	}, c.cfg.dialOpts...)
}

// bearer returns the authorization value for a token: the wire contract
// wants "Bearer <JWT>".
func bearer(token string) string {
	if strings.Contains(token, " ") {
		return token // already has a scheme
	}
	return "Bearer " + token
}

// isAborted says a stream ended ABORTED: replaced by a newer one.
func isAborted(err error) bool { return status.Code(err) == codes.Aborted }

// jitter returns a random duration in [0, d].
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d + 1)
}
