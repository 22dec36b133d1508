// Package client is StreamHub's Go client. It runs one StreamData stream to
// a server and keeps it going for its user: it reconnects after faults,
// rejoins every session where its user left off, drops what it already
// handed over, and sends again the publications the server may never have
// received, so that the user sees each message of a session once, in seq
// order, and each publication is delivered once, for as long as the
// server's history holds what was missed.
//
// A Client is made by Dial and used from any number of goroutines. Its
// user reads one ordered channel of events (Events): messages, joins,
// refusals by the server and connection state changes.
//
// # Guarantees
//
//   - Within a session and epoch, messages are handed over in seq order,
//     each once. After a reconnect the client rejoins every session with
//     the last seq it handed over (and its epoch) and drops what comes
//     twice.
//   - A gap is never hidden: when the server could not replay everything
//     (history evicted, or a new epoch because the server lost its
//     history), the Joined event says Recovered: false, and delivery goes
//     on from what history holds — from the start of the new epoch when
//     the epoch changed. An epoch change is noticed on a rejoin and also
//     while the client is a member (the server's joined, or a delivery of
//     another epoch): a Joined with Rejoin and Recovered: false, then the
//     new epoch from seq 1. Seqs are compared within an epoch only, so the
//     new epoch's are never dropped as the old one's duplicates, and
//     later rejoins ask from the new epoch's position.
//   - Publish returns the seq of the publication once its own delivery
//     comes back. A publication sent on a stream that died before its
//     delivery came back is sent again after the rejoin, unless the
//     replay shows the server had accepted it (matched by its ID). So a
//     publication is neither lost nor doubled while history holds it.
//   - A rejoin the server refuses for a passing reason (its engine
//     unavailable, say; anything but "permission denied") keeps the
//     membership: the client joins again after a backoff, and holds the
//     session's publications meanwhile.
//   - Reconnects back off exponentially with jitter (WithBackoff), except
//     after a goaway (server shutdown, maximum stream age), which is
//     followed by a reconnect at once. A stream replaced by another with
//     the same client ID closes the client (ErrReplaced).
//   - The client answers the server's health probes, sends heartbeats when
//     otherwise silent, pings with gRPC keepalive at an interval the server
//     accepts, and gives up a connection the server stopped answering on
//     (WithHealthCheck).
//   - Every buffer is bounded, and no goroutine outlives Close.
package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"time"
)

// Client is a connection to StreamHub that survives faults. Its methods are
// safe for concurrent use.
type Client struct {
	cfg    config
	target string
	events chan Event
	slots  chan struct{} // one per publication waiting for its delivery

	ctx    context.Context // canceled by Close: ends every stream and wait
	cancel context.CancelFunc

	stop      chan struct{} // closed once the client is closed, by Close or for good
	stopOnce  sync.Once
	done      chan struct{} // closed when the connection manager has ended
	connected chan struct{} // closed at the first welcome, for Dial
	connOnce  sync.Once

	// mu guards the fields below and the state of every session, call,
	// publication and stream (the fields marked so). It is never held
	// while sending on a channel that can block or on the network. Lock
	// order: a stream's sendQueue.mu may be taken while holding mu, never
	// the other way round; nothing else is locked under mu.
	mu       sync.Mutex
	clientID string                 // the identity the server last welcomed us with
	sessions map[string]*membership // what the user joined, by name
	cur      *stream                // the welcomed stream, nil between streams
	closed   error                  // why calls fail: ErrClosed, or the cause the client closed itself for
	fatal    error                  // the cause the client closed itself for
	lastErr  error                  // the last failed attempt's error, for Dial
	nextOp   uint64
	stats    Stats
}

// Stats counts what the client did to keep its guarantees.
type Stats struct {
	// Connects is the number of streams the server welcomed.
	Connects int64
	// Duplicates is the number of messages dropped because they had been
	// handed over already.
	Duplicates int64
	// Resent is the number of publications sent again after a reconnect
	// or a new epoch of their session.
	Resent int64
	// FoundInReplay is the number of publications found in a replay after
	// a reconnect or a new epoch of their session: accepted before the
	// connection died (or the epoch changed), not sent again.
	FoundInReplay int64
}

// Dial connects to the StreamHub server at addr (host:port) and returns
// once the server has welcomed the client. It keeps trying, with backoff,
// until ctx ends; an error that retrying cannot fix (bad credentials, a
// refused token, replaced) ends it at once. ctx bounds only Dial: the
// client then runs until Close.
func Dial(ctx context.Context, addr string, opts ...Option) (*Client, error) {
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	cfg = cfg.withDefaults()
	if cfg.clientID != "" {
		if err := checkIdentifier("client ID", cfg.clientID); err != nil {
			return nil, err
		}
	}
	c := &Client{
		cfg:       cfg,
		target:    addr,
		events:    make(chan Event, cfg.eventBuffer),
		slots:     make(chan struct{}, cfg.maxInflight),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
		connected: make(chan struct{}),
		clientID:  cfg.clientID,
		sessions:  make(map[string]*membership),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	go c.run()
	select {
	case <-c.connected:
		return c, nil
	case <-c.stop:
		err := c.Err()
		c.Close()
		return nil, err
	case <-ctx.Done():
		c.mu.Lock()
		last := c.lastErr
		c.mu.Unlock()
		c.Close()
		if last != nil {
			return nil, fmt.Errorf("streamhub: dial %s: %w (last attempt: %w)", addr, ctx.Err(), last)
		}
		return nil, fmt.Errorf("streamhub: dial %s: %w", addr, ctx.Err())
	}
}

// Events returns the client's ordered stream of events: *Message,
// *Joined, *ServerError and *StateChange. It is closed after the
// StateClosed event.
//
// The channel holds WithEventBuffer events (default 256). When it is full,
// the client stops reading the stream until the user reads on: nothing is
// dropped and memory stays bounded, but the server sees a client that does
// not read, and after its --send-timeout (or --max-pending-bytes) it ends
// the stream as a slow consumer. The client then reconnects once the user
// reads again and recovers what history holds, so a user who stops reading
// for long should expect a Joined with Recovered: false. Replies to calls
// arrive through the same stream, so a call that waits for the server
// (Publish, Join, ...) made from the goroutine that reads Events can wait
// until its ctx ends when more than a buffer's worth of events is ahead of
// its answer: read events on their own goroutine, or use PublishAsync.
func (c *Client) Events() <-chan Event { return c.events }

// ClientID returns the identity the server welcomed the client with.
func (c *Client) ClientID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.clientID
}

// Err returns why the client closed itself (ErrReplaced, an authentication
// failure, ...), or nil while it runs or after Close.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fatal
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// Close ends the stream and every goroutine of the client, and fails the
// calls still waiting with ErrClosed. The server keeps the client's
// memberships for its --session-ttl, so a new client with the same ID can
// rejoin where this one left off (Position, Join with From). Close may be
// called more than once.
func (c *Client) Close() error {
	c.cancel()
	<-c.done
	return nil
}

// JoinOption modifies a Join.
type JoinOption func(*joinConfig)

type joinConfig struct {
	from  bool
	seq   uint64
	epoch string
}

// From joins at a position: the server first replays what came after seq
// in epoch ("" for the session's current epoch), then live messages.
// From(0, "") replays all the history holds. A position saved from
// Position, e.g. by an earlier process, resumes exactly where it left off.
func From(seq uint64, epoch string) JoinOption {
	return func(j *joinConfig) { j.from, j.seq, j.epoch = true, seq, epoch }
}

// Join makes the client a member of session, live or From a position, and
// returns the server's answer once it arrives (also sent as a Joined
// event). The client rejoins the session by itself after every reconnect
// until Leave. Joining a session already joined returns at once, unless
// From moves its position.
//
// If ctx ends before the answer, Join returns ctx's error and the join
// stays in effect; Leave undoes it. A join the server refuses returns a
// *ServerError and leaves no membership behind.
func (c *Client) Join(ctx context.Context, session string, opts ...JoinOption) (Joined, error) {
	if err := checkIdentifier("session", session); err != nil {
		return Joined{}, err
	}
	var jc joinConfig
	for _, o := range opts {
		o(&jc)
	}
	c.mu.Lock()
	if c.closed != nil {
		c.mu.Unlock()
		return Joined{}, c.closed
	}
	st := c.sessions[session]
	if st != nil && !jc.from && st.joinedOnce {
		j := Joined{Session: session, Seq: st.last, Epoch: st.epoch, Recovered: true}
		c.mu.Unlock()
		return j, nil
	}
	if st == nil {
		st = &membership{name: session}
		c.sessions[session] = st
	}
	if jc.from {
		st.last, st.epoch, st.hasPos = jc.seq, jc.epoch, true
		st.paused = false
	}
	cl := newCall()
	if s := c.cur; s != nil && !st.paused && (jc.from || st.joining == 0) {
		c.sendJoin(s, st, &op{kind: opJoin, calls: []*call{cl}})
	} else {
		st.waiters = append(st.waiters, cl)
	}
	c.mu.Unlock()
	return c.wait(ctx, cl)
}

// Leave ends the membership of session: no event about it follows, and
// publications to it still waiting fail with ErrNotJoined. It waits for the
// server's answer while connected.
func (c *Client) Leave(ctx context.Context, session string) error {
	c.mu.Lock()
	if c.closed != nil {
		c.mu.Unlock()
		return c.closed
	}
	st := c.sessions[session]
	if st == nil {
		c.mu.Unlock()
		return ErrNotJoined
	}
	c.dropSession(st, ErrNotJoined)
	var cl *call
	if s := c.cur; s != nil {
		cl = newCall()
		c.sendControl(s, "leave", session, &op{kind: opLeave, calls: []*call{cl}})
	}
	c.mu.Unlock()
	if cl == nil {
		return nil // the next stream leaves it if the server restores it
	}
	_, err := c.wait(ctx, cl)
	return err
}

// Pause stops the deliveries of session until Resume; the client keeps
// its position. No event about the session follows until then. It waits
// for the server's answer while connected.
func (c *Client) Pause(ctx context.Context, session string) error {
	c.mu.Lock()
	if c.closed != nil {
		c.mu.Unlock()
		return c.closed
	}
	st := c.sessions[session]
	if st == nil {
		c.mu.Unlock()
		return ErrNotJoined
	}
	if st.paused {
		c.mu.Unlock()
		return nil
	}
	st.paused, st.ready = true, false
	var cl *call
	if s := c.cur; s != nil {
		cl = newCall()
		c.sendControl(s, "pause", session, &op{kind: opPause, calls: []*call{cl}})
	}
	c.mu.Unlock()
	if cl == nil {
		return nil
	}
	_, err := c.wait(ctx, cl)
	return err
}

// Resume restarts the deliveries of a paused session from the last seq
// the client handed over: what was published meanwhile is replayed first
// (Recovered says whether all of it was). The client resumes by joining at
// its position, so the answer is a Joined (with Resume set), also sent as
// an event. Resuming a session that is not paused returns at once.
func (c *Client) Resume(ctx context.Context, session string) (Joined, error) {
	c.mu.Lock()
	if c.closed != nil {
		c.mu.Unlock()
		return Joined{}, c.closed
	}
	st := c.sessions[session]
	if st == nil {
		c.mu.Unlock()
		return Joined{}, ErrNotJoined
	}
	if !st.paused {
		j := Joined{Session: session, Seq: st.last, Epoch: st.epoch, Recovered: true}
		c.mu.Unlock()
		return j, nil
	}
	st.paused = false
	cl := newCall()
	if s := c.cur; s != nil {
		c.sendJoin(s, st, &op{kind: opJoin, resume: true, calls: []*call{cl}})
	} else {
		st.waiters = append(st.waiters, cl)
	}
	c.mu.Unlock()
	return c.wait(ctx, cl)
}

// Position returns the last seq the client handed over for session and its
// epoch, for a later Join with From. ok is false when the session is not
// joined or its position is not known yet.
func (c *Client) Position(session string) (seq uint64, epoch string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.sessions[session]
	if st == nil || !st.hasPos || st.epoch == "" {
		return 0, "", false
	}
	return st.last, st.epoch, true
}

// Publish sends data to session with the message ID id ("" for a random
// one) and returns its seq once its own delivery comes back. Publishing to
// a session not joined joins it live first, as the server does. The ID
// must be unique among this client's publications to the session that are
// in flight; it is what finds a publication in a replay after a reconnect.
//
// If ctx ends first, Publish returns ctx's error but the publication goes
// on (it may still be delivered, once); PublishAsync lets the caller keep
// waiting. A publication the server refuses returns a *ServerError. The
// client keeps data until the publication is done, since it may send it
// again: do not modify it meanwhile.
func (c *Client) Publish(ctx context.Context, session, id string, data []byte) (uint64, error) {
	p, err := c.PublishAsync(ctx, session, id, data)
	if err != nil {
		return 0, err
	}
	return p.Wait(ctx)
}

// PublishAsync is Publish without the wait for the delivery: it returns
// once the publication is queued, in call order. ctx bounds only the wait
// for room when WithMaxInflight publications are in flight.
func (c *Client) PublishAsync(ctx context.Context, session, id string, data []byte) (*Publication, error) {
	if err := checkIdentifier("session", session); err != nil {
		return nil, err
	}
	if id == "" {
		id = randomID()
	} else if err := checkIdentifier("message ID", id); err != nil {
		return nil, err
	}
	if n := len(data) + len(session) + len(id) + 32; n > c.cfg.maxMessageSize {
		return nil, fmt.Errorf("%w: %d bytes of data, the server takes messages up to %d bytes", ErrTooLarge, len(data), c.cfg.maxMessageSize)
	}
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.stop:
		return nil, c.closedErr()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	fail := func(err error) (*Publication, error) {
		<-c.slots
		return nil, err
	}
	if c.closed != nil {
		return fail(c.closed)
	}
	st := c.sessions[session]
	if st == nil {
		st = &membership{name: session}
		c.sessions[session] = st
		if s := c.cur; s != nil {
			c.sendJoin(s, st, &op{kind: opJoin})
		}
	}
	switch {
	case st.paused:
		return fail(ErrPaused)
	case st.pub(id) != nil:
		return fail(ErrDuplicateID)
	}
	p := &Publication{session: session, id: id, data: data, done: make(chan struct{})}
	st.pubs = append(st.pubs, p)
	if s := c.cur; s != nil && st.ready {
		c.sendPub(s, p)
	}
	return p, nil
}

func (c *Client) closedErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed != nil {
		return c.closed
	}
	return ErrClosed
}

// wait waits for cl's answer or ctx.
func (c *Client) wait(ctx context.Context, cl *call) (Joined, error) {
	select {
	case <-cl.done:
		return cl.joined, cl.err
	case <-ctx.Done():
		return Joined{}, ctx.Err()
	}
}

// Publication is one publication in flight, from PublishAsync.
type Publication struct {
	session, id string
	data        []byte
	done        chan struct{} // closed once seq or err is set

	// Guarded by Client.mu until done is closed.
	seq    uint64
	err    error
	sent   bool    // sent on some stream
	sentOn *stream // the stream it was last sent on; nil while held
}

// ID returns the publication's message ID.
func (p *Publication) ID() string { return p.id }

// Done is closed when the publication is delivered back or failed.
func (p *Publication) Done() <-chan struct{} { return p.done }

// Wait waits until the publication's own delivery comes back and returns
// its seq, or its failure: a *ServerError, ErrNotJoined when the session
// was left, ErrClosed. ctx bounds only this wait.
func (p *Publication) Wait(ctx context.Context) (uint64, error) {
	select {
	case <-p.done:
		return p.seq, p.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// call is a user call waiting for the server's answer.
type call struct {
	done   chan struct{}
	joined Joined // the answer to a join
	err    error
}

func newCall() *call { return &call{done: make(chan struct{})} }

// resolve answers the call once; later answers are ignored. Called with
// Client.mu held.
func (cl *call) resolve(j Joined, err error) {
	select {
	case <-cl.done:
	default:
		cl.joined, cl.err = j, err
		close(cl.done)
	}
}

func randomID() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}

// backoff returns the delay before reconnect attempt n (0 for the first
// after a working stream): it doubles per attempt from the minimum up to
// the maximum, drawn from the upper half of that at random.
func (c *Client) backoff(n int) time.Duration {
	d := c.cfg.backoffMin
	for range min(n, 62) {
		if d >= c.cfg.backoffMax/2 {
			d = c.cfg.backoffMax
			break
		}
		d *= 2
	}
	d = min(d, c.cfg.backoffMax)
	half := d / 2
	return half + jitter(d-half)
}
