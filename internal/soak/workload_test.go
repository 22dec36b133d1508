package soak

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/streamhub/streamhub/client"
	"github.com/streamhub/streamhub/internal/faultproxy"
	"google.golang.org/grpc"
)

// role is what a member does: subscribers are members of every session
// from its first message; publishers publish to every session in turn and
// are live members of each from their first join.
type role int

const (
	roleSubscriber role = iota + 1
	rolePublisher
)

// member is one client identity and what it was handed. A subscriber may
// be restarted — its client closed and a new one dialed with the same ID,
// joining where the old one left off — so it can have several clients over
// the run, one at a time. Every connection goes through the member's own
// fault proxy, which the client's dialer points at an instance that is up.
type member struct {
	name     string
	role     role
	cl       *cluster
	proxy    *faultproxy.Proxy
	sessions []string
	probs    *problems

	mu         sync.Mutex // guards the fields below
	c          *client.Client
	readerDone chan struct{}       // closed when c's events are all read
	views      map[string]*view    // by session
	past       client.Stats        // of the clients closed by restarts
	lost       time.Time           // when the current stream was lost; zero while connected and rejoined
	rejoining  map[string]struct{} // sessions not yet rejoined since lost
	resumes    []time.Duration     // from a stream's loss to every session rejoined
	reconnects int
	restarting bool
	restarts   int
	refusals   map[string]int // the server's errors, by reason
	disorder   map[string]int // order problems, by session
	received   int
}

// view is what a member was handed of one session: every seq from first
// to last, in one epoch.
type view struct {
	epoch       string
	first, last uint64
	ids         []string // ids[i] is the ID of seq first+i; "" for a seq missed
}

func (v *view) id(seq uint64) (string, bool) {
	if v == nil || seq < v.first || seq > v.last {
		return "", false
	}
	return v.ids[seq-v.first], true
}

// clientOptions are the settings of every client: quick reconnects, and a
// stalled connection noticed within seconds.
func (m *member) clientOptions() []client.Option {
	return []client.Option{
		client.WithClientID(m.name),
		client.WithBackoff(20*time.Millisecond, time.Second),
		client.WithHealthCheck(1500*time.Millisecond, time.Second),
		client.WithHeartbeat(500 * time.Millisecond),
		client.WithConnectTimeout(3 * time.Second),
		client.WithMaxInflight(64),
		client.WithDialOptions(grpc.WithContextDialer(m.dialContext)),
	}
}

// dialContext is the client's way to the service: its own proxy, pointed
// at an instance that is up for each new connection.
func (m *member) dialContext(ctx context.Context, _ string) (net.Conn, error) {
	in := m.cl.dialTarget()
	m.cl.jr.addf("%s: dialing %s", m.name, in.name)
	if err := m.proxy.Retarget(in.proxy.Addr()); err != nil {
		return nil, err
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", m.proxy.Addr())
}

// connect dials a client for the member and starts reading its events.
func (m *member) connect(ctx context.Context) (*client.Client, error) {
	c, err := client.Dial(ctx, "passthrough:///"+m.name, m.clientOptions()...)
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	m.mu.Lock()
	m.c, m.readerDone = c, done
	m.lost, m.rejoining = time.Time{}, nil
	m.mu.Unlock()
	go m.read(c, done)
	return c, nil
}

// start connects the member and joins its sessions: a subscriber from the
// start of each, a publisher live.
func (m *member) start(ctx context.Context) error {
	c, err := m.connect(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", m.name, err)
	}
	for _, s := range m.sessions {
		var opts []client.JoinOption
		if m.role == roleSubscriber {
			opts = append(opts, client.From(0, ""))
		}
		if err := joinRetrying(ctx, c, s, opts...); err != nil {
			return fmt.Errorf("%s: join %s: %w", m.name, s, err)
		}
	}
	return nil
}

func (m *member) client() *client.Client {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.c
}

func (m *member) read(c *client.Client, done chan struct{}) {
	defer close(done)
	for ev := range c.Events() {
		m.handle(ev)
	}
}

func (m *member) handle(ev client.Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch ev := ev.(type) {
	case *client.Message:
		m.received++
		m.onMessage(ev)
	case *client.Joined:
		if !ev.Recovered {
			m.probs.addf("%s: joined %s recovered false (seq %d, epoch %s, rejoin %v): history holds everything, so nothing may be lost",
				m.name, ev.Session, ev.Seq, ev.Epoch, ev.Rejoin)
		}
		if !ev.Rejoin {
			m.cl.jr.addf("%s: joined %s at seq %d (recovered %v)", m.name, ev.Session, ev.Seq, ev.Recovered)
		}
		if ev.Rejoin && !m.lost.IsZero() {
			delete(m.rejoining, ev.Session)
			if len(m.rejoining) == 0 {
				m.resumes = append(m.resumes, time.Since(m.lost))
				m.cl.jr.addf("%s: every session rejoined after %s", m.name, time.Since(m.lost).Round(time.Millisecond))
				m.lost = time.Time{}
			}
		}
	case *client.StateChange:
		switch ev.State {
		case client.StateConnected:
			m.cl.jr.addf("%s: connected", m.name)
		case client.StateReconnecting:
			m.cl.jr.addf("%s: stream lost: %v", m.name, ev.Cause)
			m.reconnects++
			if m.lost.IsZero() {
				m.lost = time.Now()
				m.rejoining = make(map[string]struct{})
				for _, s := range m.sessions {
					m.rejoining[s] = struct{}{}
				}
			}
		case client.StateClosed:
			if ev.Cause != nil {
				m.probs.addf("%s: the client closed itself: %v", m.name, ev.Cause)
			}
		}
	case *client.ServerError:
		if m.refusals == nil {
			m.refusals = map[string]int{}
		}
		m.refusals[reasonKind(ev.Reason)]++
		m.cl.jr.addf("%s: refused (%s %s): %s", m.name, ev.Session, ev.ID, ev.Reason)
	}
}

// onMessage checks a delivery against what the member was handed so far:
// the next seq of the session's one epoch, from seq 1 for a subscriber,
// with the data its ID says.
func (m *member) onMessage(ev *client.Message) {
	if ev.ID != "" && !bytes.Equal(ev.Data, payload(ev.ID)) {
		m.probs.addf("%s: %s seq %d (id %s): data %q is not what was published", m.name, ev.Session, ev.Seq, ev.ID, ev.Data)
	}
	if m.views == nil {
		m.views = map[string]*view{}
	}
	v := m.views[ev.Session]
	if v == nil {
		if m.role == roleSubscriber && ev.Seq != 1 {
			m.probs.addf("%s: first message of %s is seq %d, want 1 (joined from the start)", m.name, ev.Session, ev.Seq)
		}
		m.views[ev.Session] = &view{epoch: ev.Epoch, first: ev.Seq, last: ev.Seq, ids: []string{ev.ID}}
		return
	}
	switch {
	case ev.Epoch != v.epoch:
		m.orderf(ev.Session, "%s: %s seq %d in epoch %s after seq %d of epoch %s: Redis kept its data, there is one epoch",
			m.name, ev.Session, ev.Seq, ev.Epoch, v.last, v.epoch)
	case ev.Seq <= v.last:
		m.orderf(ev.Session, "%s: %s seq %d (id %s) after seq %d: a duplicate or out of order", m.name, ev.Session, ev.Seq, ev.ID, v.last)
	default:
		if ev.Seq != v.last+1 {
			m.orderf(ev.Session, "%s: %s seq %d (id %s) after seq %d: a gap of %d", m.name, ev.Session, ev.Seq, ev.ID, v.last, ev.Seq-v.last-1)
			for range ev.Seq - v.last - 1 {
				v.ids = append(v.ids, "")
			}
		}
		v.ids = append(v.ids, ev.ID)
		v.last = ev.Seq
	}
}

// maxOrderProblems is how many order problems of one session a member
// reports; the others are only counted.
const maxOrderProblems = 5

// orderf reports a problem with the order of session's messages. Called
// with m.mu held.
func (m *member) orderf(session, format string, args ...any) {
	if m.disorder == nil {
		m.disorder = map[string]int{}
	}
	if m.disorder[session]++; m.disorder[session] <= maxOrderProblems {
		m.probs.addf(format, args...)
	}
}

// last is the last seq the member was handed of session.
func (m *member) last(session string) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if v := m.views[session]; v != nil {
		return v.last
	}
	return 0
}

// restart closes the member's client, as a crashed or redeployed process
// would lose it, and starts another with the same ID that joins every
// session where the old one left off. It runs on its own goroutine (in
// wg); false if a restart is already under way.
func (m *member) restart(wg *sync.WaitGroup) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.restarting {
		return false
	}
	m.restarting = true
	old, done := m.c, m.readerDone
	wg.Go(func() {
		defer func() {
			m.mu.Lock()
			m.restarting = false
			m.restarts++
			m.mu.Unlock()
		}()
		m.cl.jr.addf("%s: closing the client to restart it", m.name)
		old.Close()
		<-done // every event the old client handed over is read
		m.mu.Lock()
		m.past = addStats(m.past, old.Stats())
		m.mu.Unlock()
		ctx, cancel := ctxTimeout(60 * time.Second)
		defer cancel()
		c, err := m.connect(ctx)
		if err != nil {
			m.probs.addf("%s: restart: %v", m.name, err)
			return
		}
		for _, s := range m.sessions {
			// The last seq it was handed, as SPEC §3 has a client that
			// must lose nothing rejoin.
			seq, epoch := m.position(s)
			if err := joinRetrying(ctx, c, s, client.From(seq, epoch)); err != nil {
				m.probs.addf("%s: restart: join %s: %v", m.name, s, err)
			}
		}
	})
	return true
}

// position is the last seq the member was handed of session, and its
// epoch; 0 and "" for none.
func (m *member) position(session string) (uint64, string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if v := m.views[session]; v != nil {
		return v.last, v.epoch
	}
	return 0, ""
}

// joinRetrying joins session, again after a refusal for a passing reason
// (the server's engine unavailable), as a user would, until ctx ends.
func joinRetrying(ctx context.Context, c *client.Client, session string, opts ...client.JoinOption) error {
	for {
		_, err := c.Join(ctx, session, opts...)
		var se *client.ServerError
		if !errors.As(err, &se) || !strings.HasPrefix(se.Reason, "engine") {
			return err
		}
		pause := time.NewTimer(100 * time.Millisecond) // pacing the attempts
		select {
		case <-pause.C:
		case <-ctx.Done():
			pause.Stop()
			return fmt.Errorf("%w (last refusal: %w)", ctx.Err(), err)
		}
	}
}

// close closes the member's client and waits for its events.
func (m *member) close() client.Stats {
	m.mu.Lock()
	c, done := m.c, m.readerDone
	m.mu.Unlock()
	if c == nil {
		return client.Stats{}
	}
	c.Close()
	<-done
	m.mu.Lock()
	defer m.mu.Unlock()
	m.past = addStats(m.past, c.Stats())
	return m.past
}

func addStats(a, b client.Stats) client.Stats {
	return client.Stats{
		Connects:      a.Connects + b.Connects,
		Duplicates:    a.Duplicates + b.Duplicates,
		Resent:        a.Resent + b.Resent,
		FoundInReplay: a.FoundInReplay + b.FoundInReplay,
	}
}

// addrRE and aboutRE match what differs from one refusal to the next of
// the same kind: addresses, and the session and ID a refusal names.
var (
	addrRE  = regexp.MustCompile(`\d+\.\d+\.\d+\.\d+:\d+`)
	aboutRE = regexp.MustCompile(`\(session [^)]*\)`)
)

// reasonKind is a refusal's reason without what differs between refusals
// of the same kind, to count them by kind.
func reasonKind(reason string) string {
	return aboutRE.ReplaceAllString(addrRE.ReplaceAllString(reason, "ADDR"), "(…)")
}

// payload is the data published with id: its own ID and some padding of a
// length that depends on it, so that a delivery's data can be checked.
func payload(id string) []byte {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return []byte(id + ":" + strings.Repeat("x", int(h.Sum32()%240)))
}

// ledger is what the publishers were told: each publication done (with its
// seq), failed, or neither by the end.
type ledger struct {
	jr        *journal
	mu        sync.Mutex // guards the fields below
	done      []published
	failed    map[string]string // id → why, for publications that failed
	unsettled []string          // IDs still in flight at the end
}

type published struct {
	session, id string
	seq         uint64
	took        time.Duration
}

func (l *ledger) settle(session, id string, seq uint64, err error, took time.Duration) {
	switch {
	case err != nil:
		l.jr.addf("publication %s to %s failed after %s: %v", id, session, took.Round(time.Millisecond), err)
	case took > time.Second:
		l.jr.addf("publication %s done as %s seq %d after %s", id, session, seq, took.Round(time.Millisecond))
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		if l.failed == nil {
			l.failed = map[string]string{}
		}
		l.failed[id] = err.Error()
		return
	}
	l.done = append(l.done, published{session: session, id: id, seq: seq, took: took})
}

// last is the highest seq of a publication to session reported done.
func (l *ledger) last(session string) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var last uint64
	for _, p := range l.done {
		if p.session == session {
			last = max(last, p.seq)
		}
	}
	return last
}

// inflight is a publication waiting for its delivery.
type inflight struct {
	p       *client.Publication
	session string
	at      time.Time
}

// publish publishes to the member's sessions in turn at rate per second,
// with at most window publications in flight (a tick with the window full
// publishes nothing), until stop closes; then it waits up to limit for what
// is still in flight.
func (m *member) publish(led *ledger, rate float64, window int, stop <-chan struct{}, limit time.Duration) {
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	c := m.client() // publishers are never restarted
	var q []inflight
	for n := 0; ; {
		select {
		case <-stop:
			m.settleAll(led, q, limit)
			return
		case <-tick.C:
		}
		q = m.reap(led, q)
		if len(q) >= window {
			continue
		}
		session := m.sessions[n%len(m.sessions)]
		id := fmt.Sprintf("%s.%d", m.name, n)
		n++
		ctx, cancel := ctxTimeout(10 * time.Second)
		p, err := c.PublishAsync(ctx, session, id, payload(id))
		cancel()
		if err != nil {
			led.settle(session, id, 0, err, 0)
			continue
		}
		q = append(q, inflight{p: p, session: session, at: time.Now()})
	}
}

// reap settles the publications that are done and returns the others.
func (m *member) reap(led *ledger, q []inflight) []inflight {
	return slices.DeleteFunc(q, func(f inflight) bool {
		select {
		case <-f.p.Done():
		default:
			return false
		}
		seq, err := f.p.Wait(context.Background())
		led.settle(f.session, f.p.ID(), seq, err, time.Since(f.at))
		return true
	})
}

func (m *member) settleAll(led *ledger, q []inflight, limit time.Duration) {
	ctx, cancel := ctxTimeout(limit)
	defer cancel()
	for _, f := range q {
		seq, err := f.p.Wait(ctx)
		if errors.Is(err, context.DeadlineExceeded) {
			led.mu.Lock()
			led.unsettled = append(led.unsettled, f.p.ID())
			led.mu.Unlock()
			continue
		}
		led.settle(f.session, f.p.ID(), seq, err, time.Since(f.at))
	}
}

// fence publishes one last message to session, trying again until it is
// done, and returns its seq: once every member has it, every member has
// everything published before.
func (m *member) fence(session string, limit time.Duration) (uint64, error) {
	ctx, cancel := ctxTimeout(limit)
	defer cancel()
	c := m.client()
	var last error
	for attempt := 0; ctx.Err() == nil; attempt++ {
		id := fmt.Sprintf("fence.%s.%s.%d", m.name, session, attempt)
		seq, err := c.Publish(ctx, session, id, payload(id))
		if err == nil {
			return seq, nil
		}
		last = err
		if c.Err() != nil {
			break // closed itself: reported already
		}
		pause := time.NewTimer(100 * time.Millisecond) // pacing the attempts
		select {
		case <-pause.C:
		case <-ctx.Done():
			pause.Stop()
		}
	}
	return 0, fmt.Errorf("fence of %s not done within %s: %w", session, limit, last)
}

// gone reports whether the member's client closed itself (replaced, say),
// which it reported as a problem when it did.
func (m *member) gone() bool { return m.client().Err() != nil }

// lockedRand is a seeded source of random choices for several goroutines.
type lockedRand struct {
	mu sync.Mutex // guards r
	r  *rand.Rand
}

func newLockedRand(seed uint64) *lockedRand {
	return &lockedRand{r: rand.New(rand.NewPCG(seed, seed>>1|1))}
}

func (l *lockedRand) intN(n int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.IntN(n)
}
