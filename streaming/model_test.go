// A randomized model-based test of SPEC §3: clients join (live, at a
// position, with another epoch), leave, pause, resume, publish and
// reconnect at random, through a loopback proxy that cuts connections at
// random, and every message each of them receives is checked against what
// the specification says it must be.

package streaming

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	streamsvcc "github.com/streamhub/streamhub/gen/grpc/stream_service/client"
	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	"github.com/streamhub/streamhub/internal/faultproxy"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

var (
	modelSeed     = flag.Uint64("model.seed", 0, "TestModel: seed of the random operations and faults (0: a new one)")
	modelDuration = flag.Duration("model.duration", 3*time.Second, "TestModel: how long clients operate while faults happen")
)

const (
	modelClients = 5
	// modelHistory is small, so that history is overtaken within a run:
	// joins far back, long pauses and long disconnections are told
	// recovered:false.
	modelHistory = 64
)

// modelSessions are the sessions the clients use. A setup client publishes
// one message to each before the run, so that none is ever removed and each
// keeps one epoch throughout.
var modelSessions = []string{"ma", "mb", "mc"}

// TestModel runs several clients with fixed IDs against a real server
// through a fault proxy. Each client checks, message by message, what it
// receives on each stream against a model of the contract:
//
//   - a joined per join, a left, paused or resumed per request, in the order
//     asked, and a joined (then paused, if it was) per membership restored
//     when a stream opens, exactly for the memberships the server must hold;
//   - after a joined, deliveries of that session go up one by one from the
//     position the join fixed (nothing at or before it), or, after
//     recovered:false, from what history holds; a restored membership goes on
//     from past the position last fixed for it; no delivery while paused or
//     after left;
//   - recovered is consistent with what history of this size can hold;
//   - every seq is the same message, with the same id, data, sender and
//     timestamp, for every observer, in the session's one epoch.
//
// After a reconnect (its own, or after the proxy cut it) a client rejoins
// each session with the last seq it received, as SPEC §3 tells a client that
// must lose nothing; the union of what it received then covers every seq
// from its join to the end. A quiescent phase ends the run: faults stop,
// clients resume what they paused and do a health_check round trip, a
// marker is published to each session, and every member must have received
// everything up to it; the number of seqs must match what was published.
func TestModel(t *testing.T) {
	seed := *modelSeed
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("seed %d (replay with -model.seed=%d; run longer with -model.duration)", seed, seed)

	// A small queue pushes back on clients' requests now and then.
	ts := startServer(t, Config{HistorySize: modelHistory, QueueSize: 8})
	proxy, err := faultproxy.New(ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := proxy.Close(); err != nil {
			t.Error(err)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := &modelRun{t: t, seed: seed, proxy: proxy, ctx: ctx, cancel: cancel, abort: make(chan struct{}),
		sessions: map[string]*modelSession{}, sent: map[string]*sentMsg{}}
	r.setup(ts)

	ph := &modelPhases{quiesce: make(chan struct{}), ready: make(chan struct{}, modelClients), final: make(chan struct{})}
	var clients sync.WaitGroup
	for i := range modelClients {
		// The last client reads lazily: it takes naps, on small fixed
		// windows, so the server's sends to it block and its queue fills
		// while it goes on asking.
		lazy := i == modelClients-1
		opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
		if lazy {
			opts = append(opts, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
		}
		cc, err := grpc.NewClient(proxy.Addr(), opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		c := &modelClient{run: r, id: fmt.Sprint("mc", i), rnd: rand.New(rand.NewPCG(seed, uint64(i))), cc: cc,
			lazy: lazy, sess: map[string]*clientSession{}}
		for _, s := range modelSessions {
			c.sess[s] = &clientSession{}
		}
		clients.Go(func() { c.loop(ph) })
	}
	stopFaults := make(chan struct{})
	var faults sync.WaitGroup
	faults.Go(func() { r.faults(rand.New(rand.NewPCG(seed, modelClients)), stopFaults) })

	run := time.NewTimer(*modelDuration)
	select {
	case <-run.C:
	case <-r.abort:
	}
	run.Stop()
	close(stopFaults)
	faults.Wait()
	close(ph.quiesce)
	ready := 0
	for ready < modelClients {
		select {
		case <-ph.ready:
			ready++
		case <-r.abort:
			ready = modelClients + 1
		}
	}
	if ready == modelClients {
		r.markers(ts)
		close(ph.final)
	}
	clients.Wait()
	cancel()
	if !r.aborted() {
		r.checkCounts()
	}
	t.Logf("%s", r.stats.String())
}

// modelRun is one run: what every client sent, and what every observer saw
// of each session.
type modelRun struct {
	t      *testing.T
	seed   uint64
	proxy  *faultproxy.Proxy
	ctx    context.Context // every client stream ends with it
	cancel context.CancelFunc
	stats  modelStats

	abort     chan struct{} // closed at the first violation
	abortOnce sync.Once

	// cuts is incremented before and after each Cut, so it is odd while one
	// runs: a Cut can have hit a stream opened at an even count only if the
	// count changed since.
	cuts atomic.Uint64

	mu       sync.Mutex // guards the fields below and what they point to
	sessions map[string]*modelSession
	sent     map[string]*sentMsg // every message published, by id
}

// modelSession is what the observers agree a session is.
type modelSession struct {
	epoch  string
	seqs   map[uint64]observed // what each seq is, as first observed
	ids    map[string]uint64   // the seq of each id observed
	max    uint64              // highest seq anyone observed: the session's last is at least this
	marker uint64              // the seq of the marker ending the run, once published
	sent   int                 // client publishes sent
	acked  int                 // of those, the ones the server certainly accepted
}

type observed struct {
	id string
	ts int64
}

type sentMsg struct {
	session, from, data string
	client              bool // published by a model client (not setup or markers)
	acked               bool // the server read it: observed, or a health_check sent after it was answered
}

// modelPhases are the signals of the run's end.
type modelPhases struct {
	quiesce chan struct{} // faults stopped: settle
	ready   chan struct{} // a client settled: every request answered
	final   chan struct{} // markers published: catch up and check
}

// modelStats counts what a run exercised, so that a reader of the log can
// tell it covered the interesting cases.
type modelStats struct {
	publishes, deliveries, joins, positioned, elsewhere, notRecovered, resumes, resumesNotRecovered,
	leaves, pauses, restores, restoredPaused, reconnects, cutEnds, lateReplaces, cuts, stalls atomic.Int64
}

func (s *modelStats) String() string {
	return fmt.Sprintf("publishes %d, deliveries %d, joins %d (at a position %d, another epoch %d, recovered:false %d), "+
		"leaves %d, pauses %d, resumes %d (recovered:false %d), restored memberships %d (paused %d), "+
		"reconnects %d, streams ended by cuts %d, streams replaced by an older one %d, cuts %d, stalls %d",
		s.publishes.Load(), s.deliveries.Load(), s.joins.Load(), s.positioned.Load(), s.elsewhere.Load(), s.notRecovered.Load(),
		s.leaves.Load(), s.pauses.Load(), s.resumes.Load(), s.resumesNotRecovered.Load(), s.restores.Load(), s.restoredPaused.Load(),
		s.reconnects.Load(), s.cutEnds.Load(), s.lateReplaces.Load(), s.cuts.Load(), s.stalls.Load())
}

// fail reports the first violation, with the seed, and stops the run.
func (r *modelRun) fail(msg string) {
	r.abortOnce.Do(func() {
		r.t.Errorf("seed %d (replay: go test -race -run TestModel ./streaming/ -model.seed=%d): %s", r.seed, r.seed, msg)
		close(r.abort)
		r.cancel()
	})
}

func (r *modelRun) aborted() bool {
	select {
	case <-r.abort:
		return true
	default:
		return false
	}
}

// mayHaveCut says whether a Cut may have ended a stream opened when the
// counter was at.
func (r *modelRun) mayHaveCut(at uint64) bool {
	return at%2 == 1 || r.cuts.Load() != at
}

// setup publishes one message to each session, directly to the server, so
// that the sessions exist with history (and so one epoch) for the whole run.
func (r *modelRun) setup(ts *testServer) {
	r.t.Helper()
	c := ts.open(r.t, "setup")
	c.welcome()
	for _, s := range modelSessions {
		j := c.join(s)
		r.sessions[s] = &modelSession{epoch: *j.Epoch, seqs: map[uint64]observed{}, ids: map[string]uint64{}}
		r.publishDirect(c, "setup", s, "seed-"+s)
		c.send(&streamsvc.DataMessage{Type: typeControl, Action: ptr(actLeave), SessionID: &s})
		c.expect(typeControl, actLeft)
	}
}

// markers publishes a marker to each session, directly to the server, once
// every client settled: its seq is each session's last.
func (r *modelRun) markers(ts *testServer) {
	r.t.Helper()
	c := ts.open(r.t, "closer")
	c.welcome()
	marker := map[string]uint64{}
	for _, s := range modelSessions {
		c.join(s)
		marker[s] = r.publishDirect(c, "closer", s, "marker-"+s)
	}
	r.mu.Lock()
	for s, seq := range marker {
		r.sessions[s].marker = seq
	}
	r.mu.Unlock()
}

// publishDirect publishes id to s as c, client from and a member, and
// returns its seq.
func (r *modelRun) publishDirect(c *testClient, from, s, id string) uint64 {
	r.t.Helper()
	r.mu.Lock()
	r.sent[id] = &sentMsg{session: s, from: from, data: id}
	r.mu.Unlock()
	c.send(&streamsvc.DataMessage{Type: typeData, SessionID: &s, ID: &id, Data: []byte(id)})
	d := c.expect(typeData, "")
	if v := r.observe(s, d); v != "" {
		r.t.Fatalf("%s: %s", id, v)
	}
	return *d.Seq
}

// observe checks a delivery of session s against what was published and
// what others observed, and records it. It returns the violation, if any.
func (r *modelRun) observe(s string, d *streamsvc.DataMessage) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ms := r.sessions[s]
	if d.Seq == nil || d.ID == nil || d.ClientID == nil || d.Timestamp == nil || d.Epoch == nil {
		return "delivery without seq, id, client_id, timestamp or epoch"
	}
	q, id := *d.Seq, *d.ID
	switch sm := r.sent[id]; {
	case *d.Epoch != ms.epoch:
		return fmt.Sprintf("seq %d in epoch %s, but the session's epoch is %s", q, *d.Epoch, ms.epoch)
	case q == 0:
		return "seq 0"
	case ms.marker != 0 && q > ms.marker:
		return fmt.Sprintf("seq %d after the marker ending the run, seq %d", q, ms.marker)
	case sm == nil:
		return fmt.Sprintf("seq %d has id %q, which nobody published", q, id)
	case sm.session != s || sm.from != *d.ClientID || sm.data != string(d.Data):
		return fmt.Sprintf("seq %d (id %s) is %s/%s/%q, but %s published %q to %s", q, id, s, *d.ClientID, d.Data, sm.from, sm.data, sm.session)
	}
	if o, ok := ms.seqs[q]; ok {
		if o.id != id || o.ts != *d.Timestamp {
			return fmt.Sprintf("seq %d is id %s at %d here, but id %s at %d elsewhere", q, id, *d.Timestamp, o.id, o.ts)
		}
	} else {
		if other, ok := ms.ids[id]; ok {
			return fmt.Sprintf("id %s was accepted twice: seq %d and seq %d", id, other, q)
		}
		ms.seqs[q] = observed{id: id, ts: *d.Timestamp}
		ms.ids[id] = q
	}
	if sm := r.sent[id]; sm.client && !sm.acked {
		sm.acked = true
		ms.acked++
	}
	ms.max = max(ms.max, q)
	return ""
}

// lower is a lower bound of session s's last seq now: the highest anyone
// observed.
func (r *modelRun) lower(s string) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sessions[s].max
}

// epochs returns the session's epoch and another session's.
func (r *modelRun) epochs(s string) (own, foreign string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, o := range modelSessions {
		if o != s {
			foreign = r.sessions[o].epoch
		}
	}
	return r.sessions[s].epoch, foreign
}

// register records a publish before it is sent, so that observers know it.
func (r *modelRun) register(id, s, from, data string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent[id] = &sentMsg{session: s, from: from, data: data, client: true}
	r.sessions[s].sent++
}

// ack records that the server read these publishes.
func (r *modelRun) ack(ids []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		if sm := r.sent[id]; !sm.acked {
			sm.acked = true
			r.sessions[sm.session].acked++
		}
	}
}

// checkCounts checks that each session's seqs are exactly the publishes the
// server accepted: the setup message, the clients' publishes it certainly
// read, some of those it may have read before a cut, and the marker.
func (r *modelRun) checkCounts() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range modelSessions {
		ms := r.sessions[s]
		accepted := int(ms.marker) - 2
		if accepted < ms.acked || accepted > ms.sent {
			r.fail(fmt.Sprintf("session %s: %d seqs for client publishes, but %d were certainly accepted and %d sent",
				s, accepted, ms.acked, ms.sent))
		}
	}
}

// faults cuts every proxied connection at random, and now and then stalls
// them all for a moment.
func (r *modelRun) faults(rnd *rand.Rand, stop <-chan struct{}) {
	wait := time.NewTimer(0)
	defer wait.Stop()
	pause := func(d time.Duration) bool {
		wait.Reset(d)
		select {
		case <-wait.C:
			return true
		case <-stop:
		case <-r.abort:
		}
		return false
	}
	for pause(time.Duration(20+rnd.IntN(180)) * time.Millisecond) {
		if rnd.IntN(5) == 0 {
			r.stats.stalls.Add(1)
			r.proxy.Stall()
			pause(time.Duration(1+rnd.IntN(30)) * time.Millisecond) // how long the path is frozen
			r.proxy.Unstall()
			continue
		}
		r.stats.cuts.Add(1)
		r.cuts.Add(1)
		r.proxy.Cut()
		r.cuts.Add(1)
	}
}

// memberState is a membership as the replies on one stream describe it,
// or what the server must hold for a client.
type memberState int8

const (
	stateUnknown memberState = iota - 1
	stateNone
	stateActive
	statePaused
)

func (s memberState) String() string {
	return [...]string{"unknown", "none", "active", "paused"}[s+1]
}

// joinKind is what a join asked for.
type joinKind uint8

const (
	joinLive      joinKind = iota // no seq: live from the next message
	joinAt                        // a seq, in the session's epoch or none
	joinElsewhere                 // a seq with an epoch that is not the session's
)

// request is a control message sent, waiting for its reply.
type request struct {
	action string
	kind   joinKind
	seq    uint64
	lower  uint64 // the session's last seq was at least this when it was sent
	at     uint64 // a join: the position it fixes is at least this
	gen    int    // the client's membership generation it belongs to
}

// clientSession is one client's view of one session across its streams.
type clientSession struct {
	// What the client asked for last: the server's state once the stream
	// carrying the requests answered them.
	member bool
	paused bool
	hold   int // operations on the session left before it is resumed
	gen    int // incremented by each leave: replies of older joins do not move pos

	// Coverage: every seq in (the start of this membership, pos] was
	// received on some stream. It moves only by one, or where the client
	// asked to skip (a join at a later position) or the server said
	// recovered:false.
	posOK bool
	pos   uint64
	fresh request // the join that began the membership, sent again while pos is unknown

	// floor is at or below the position the server can hold for the
	// membership, whatever it did with requests that were not answered:
	// what a restored membership must replay after.
	floor   uint64
	floorOK bool

	// known is the membership the server holds, when the last stream
	// answered every request about the session; a new stream must restore
	// exactly that.
	known memberState
}

// streamSession is one session as one stream's replies describe it.
type streamSession struct {
	reqs       []request // sent, not answered yet, in order
	state      memberState
	joinedHere bool // a join was sent on this stream since the last leave: publishing cannot join implicitly

	restored       bool // a membership was restored when the stream opened
	restoredPaused bool
	expect         memberState // what must be restored

	// The current segment: deliveries since the last joined or resumed.
	restore bool   // it began with a restore: its start is the server's best-effort record
	gen     int    // the membership generation it belongs to; -1: none of the client's
	floor   uint64 // every delivery is above it
	next    uint64 // the seq the next delivery must have; 0 when unknown
	last    uint64 // the last delivery of the segment; 0 for none
	truth   uint64 // after recovered:false: the seq said to be missing, which the first delivery must be past
	reset   bool   // after recovered:false: the first delivery restarts the coverage
}

// modelStream is one stream of a client.
type modelStream struct {
	n          int
	s          *streamsvcc.StreamDataClientStream
	cancel     context.CancelFunc
	in         chan *streamsvc.DataMessage
	done       chan struct{} // closed when the reader ends; err is set then
	err        error
	cutsAtOpen uint64
	broken     bool // a send failed: the stream is ending
	replaced   bool // a goaway replaced came: nothing else may

	welcomed    bool
	restoring   bool // until the reply to the first health_check: restored memberships come first
	rejoinLater bool // rejoin once the restoring is over
	health      []healthCheck
	unacked     []string // publishes sent since the last health_check
	requests    int      // control requests sent
	replies     int      // and answered
	sess        map[string]*streamSession
}

// healthCheck is a health_check sent and not answered.
type healthCheck struct {
	publishes []string // sent before it: the server read them once it answers
	requests  int      // control requests sent before it: answered before it
}

// pending says whether a request sent on st is not answered yet.
func (st *modelStream) pending() bool {
	for _, ss := range st.sess {
		if len(ss.reqs) > 0 {
			return true
		}
	}
	return false
}

func (st *modelStream) ended() bool {
	select {
	case <-st.done:
		return true
	default:
		return false
	}
}

// read passes the stream's messages to the client until it ends.
func (st *modelStream) read(ctx context.Context) {
	defer close(st.done)
	for {
		msg, err := st.s.Recv()
		if err != nil {
			st.err = err
			return
		}
		select {
		case st.in <- msg:
		case <-ctx.Done():
			st.err = ctx.Err()
			return
		}
	}
}

// modelClient is one client ID, driven by one goroutine: it does random
// operations, reads and checks its current stream, and reconnects.
type modelClient struct {
	run     *modelRun
	id      string
	rnd     *rand.Rand
	cc      *grpc.ClientConn
	lazy    bool // takes naps from reading
	napping bool
	st      *modelStream
	streams int
	msgs    int
	sess    map[string]*clientSession
	// late counts the streams that ended before their welcome when a cut
	// may have hit them: the server may not have seen such a stream end
	// (its connection is not the newer stream's), and may register it
	// after a newer one, which it then replaces. No server can tell.
	late   int
	trace  [128]traceEvent // the latest events, for failure reports
	traced int
}

type traceEvent struct {
	stream int
	sent   bool
	msg    *streamsvc.DataMessage
}

func (c *modelClient) record(st *modelStream, sent bool, msg *streamsvc.DataMessage) {
	c.trace[c.traced%len(c.trace)] = traceEvent{stream: st.n, sent: sent, msg: msg}
	c.traced++
}

// fail reports a violation with the client's latest events; it returns
// false so that callers can return it.
func (c *modelClient) fail(format string, args ...any) bool {
	var b strings.Builder
	fmt.Fprintf(&b, "client %s, stream %d: %s\nits latest events, oldest first:", c.id, c.streams, fmt.Sprintf(format, args...))
	for i := max(0, c.traced-len(c.trace)); i < c.traced; i++ {
		e := c.trace[i%len(c.trace)]
		dir := "<-"
		if e.sent {
			dir = "->"
		}
		fmt.Fprintf(&b, "\n  stream %d %s %s", e.stream, dir, brief(e.msg))
	}
	c.run.fail(b.String())
	return false
}

// brief describes a message on one line.
func brief(m *streamsvc.DataMessage) string {
	if m == nil {
		return "-"
	}
	var b strings.Builder
	b.WriteString(m.Type)
	if m.Action != nil {
		b.WriteString("/" + *m.Action)
	}
	if m.SessionID != nil {
		b.WriteString(" " + *m.SessionID)
	}
	if m.Seq != nil {
		fmt.Fprintf(&b, " seq=%d", *m.Seq)
	}
	if m.Recovered != nil {
		fmt.Fprintf(&b, " recovered=%v", *m.Recovered)
	}
	if m.Epoch != nil {
		b.WriteString(" epoch=" + *m.Epoch)
	}
	if m.ID != nil {
		b.WriteString(" id=" + *m.ID)
	}
	if m.Reason != nil {
		b.WriteString(" reason=" + *m.Reason)
	}
	return b.String()
}

// loop runs the client until the quiescent phase ends or a violation.
func (c *modelClient) loop(ph *modelPhases) {
	defer c.close()
	if !c.reconnect() {
		return
	}
	think := time.NewTimer(c.think())
	defer think.Stop()
	nap := time.NewTimer(time.Hour)
	defer nap.Stop()
	for {
		st := c.st
		in := st.in
		if c.napping {
			in = nil
		}
		select {
		case <-c.run.abort:
			return
		case <-ph.quiesce:
			c.quiesce(ph)
			return
		case <-nap.C:
			c.napping = false
		case msg := <-in:
			if !c.handle(st, msg) {
				return
			}
		case <-st.done:
			if !c.reconnect() {
				return
			}
		case <-think.C:
			if !c.op() {
				return
			}
			think.Reset(c.think())
			if c.lazy && !c.napping && c.rnd.IntN(50) == 0 {
				// Far shorter than the send timeout: a reader that
				// keeps reading, if unevenly, is never cut off.
				c.napping = true
				nap.Reset(time.Duration(50+c.rnd.IntN(950)) * time.Millisecond)
			}
		}
	}
}

// think is the pause before the next operation.
func (c *modelClient) think() time.Duration {
	return time.Duration(c.rnd.IntN(4000)) * time.Microsecond
}

// close ends the current stream and waits for its reader.
func (c *modelClient) close() {
	if c.st != nil {
		c.st.cancel()
		<-c.st.done
	}
}

// op does one random operation on one random session.
func (c *modelClient) op() bool {
	rnd := c.rnd
	s := modelSessions[rnd.IntN(len(modelSessions))]
	cs, st := c.sess[s], c.st
	ss := st.sess[s]
	member := cs.member && ss.joinedHere
	if member && cs.paused && rnd.IntN(20) != 0 {
		// A pause lasts its hold, mostly: now and then the client leaves or
		// joins while paused instead.
		switch {
		case cs.hold == 0:
			c.resume(st, s)
		case rnd.IntN(2) == 0:
			cs.hold--
			c.publish(st, s)
		default:
			cs.hold--
			c.healthCheck(st)
		}
		return true
	}
	switch x := rnd.IntN(100); {
	case x < 40 && member:
		c.publish(st, s)
	case x < 55 && !cs.member:
		c.join(st, s, joinLive, 0)
	case x < 65:
		c.joinSomewhere(st, s)
	case x < 73 && member:
		c.leave(st, s)
	case x < 81 && member && !cs.paused:
		// Some pauses last long enough for history to overtake them.
		cs.hold = 5 + rnd.IntN(30)
		if rnd.IntN(3) == 0 {
			cs.hold = 100 + rnd.IntN(300)
		}
		c.pauseSession(st, s)
	case x < 90 && member && cs.paused:
		c.resume(st, s)
	case x < 97:
		c.healthCheck(st)
	case x >= 98:
		// Sometimes the client gives up on the new stream at once too,
		// before the server may have got to it.
		for range 1 + rnd.IntN(2) {
			c.run.stats.reconnects.Add(1)
			if !c.reconnect() {
				return false
			}
		}
	}
	return true
}

// joinSomewhere joins s at a random position: before, at or after what the
// client has, beyond the session's last, or in another epoch.
func (c *modelClient) joinSomewhere(st *modelStream, s string) {
	rnd, cs := c.rnd, c.sess[s]
	top := c.run.lower(s)
	var seq uint64
	switch rnd.IntN(4) {
	case 0:
		seq = rnd.Uint64N(top + 1)
	case 1:
		seq = top + rnd.Uint64N(4)
	case 2:
		seq = top - min(top, rnd.Uint64N(2*modelHistory))
	default:
		seq = top
		if cs.posOK {
			seq = cs.pos - min(cs.pos, rnd.Uint64N(3))
		}
	}
	kind := joinAt
	if rnd.IntN(6) == 0 {
		kind = joinElsewhere
	}
	c.join(st, s, kind, seq)
}

// join sends a join of s.
func (c *modelClient) join(st *modelStream, s string, kind joinKind, seq uint64) {
	cs, ss := c.sess[s], st.sess[s]
	msg := &streamsvc.DataMessage{Type: typeControl, Action: ptr(actJoin), SessionID: ptr(s)}
	own, foreign := c.run.epochs(s)
	switch kind {
	case joinAt:
		msg.Seq = ptr(seq)
		if c.rnd.IntN(2) == 0 {
			msg.Epoch = &own
		}
	case joinElsewhere:
		msg.Seq = ptr(seq)
		msg.Epoch = ptr("0123456789abcdef")
		if c.rnd.IntN(2) == 0 {
			msg.Epoch = &foreign
		}
	}
	if !cs.member {
		cs.member, cs.posOK = true, false
	}
	cs.paused = false
	req := request{action: actJoin, kind: kind, seq: seq, lower: c.run.lower(s), gen: cs.gen}
	// The position this join fixes is at least this, whatever the server's last is.
	req.at = req.lower
	if kind == joinAt {
		req.at = min(seq, req.lower)
	}
	if !cs.posOK {
		cs.fresh = req
	}
	if !cs.floorOK || req.at < cs.floor {
		cs.floor, cs.floorOK = req.at, true
	}
	ss.joinedHere = true
	c.request(st, s, req, msg)
}

func (c *modelClient) leave(st *modelStream, s string) {
	cs := c.sess[s]
	cs.member, cs.paused, cs.posOK = false, false, false
	cs.gen++
	st.sess[s].joinedHere = false
	c.request(st, s, request{action: actLeave, gen: cs.gen},
		&streamsvc.DataMessage{Type: typeControl, Action: ptr(actLeave), SessionID: ptr(s)})
}

func (c *modelClient) pauseSession(st *modelStream, s string) {
	c.sess[s].paused = true
	c.request(st, s, request{action: actPause}, &streamsvc.DataMessage{Type: typeControl, Action: ptr(actPause), SessionID: ptr(s)})
}

func (c *modelClient) resume(st *modelStream, s string) {
	c.sess[s].paused = false
	c.request(st, s, request{action: actResume, lower: c.run.lower(s)},
		&streamsvc.DataMessage{Type: typeControl, Action: ptr(actResume), SessionID: ptr(s)})
}

func (c *modelClient) request(st *modelStream, s string, req request, msg *streamsvc.DataMessage) {
	st.sess[s].reqs = append(st.sess[s].reqs, req)
	st.requests++
	c.send(st, msg)
}

func (c *modelClient) publish(st *modelStream, s string) {
	c.msgs++
	id := fmt.Sprintf("%s-%d", c.id, c.msgs)
	data := fmt.Sprintf("%s:%x", id, c.rnd.Uint32())
	if !c.lazy && c.rnd.IntN(3) == 0 {
		// Bulky now and then, so that a lazy reader's window fills. (Its
		// own publishes stay small, so that its sends never wait for a
		// server that waits for it.)
		data += strings.Repeat(".", 4<<10+c.rnd.IntN(12<<10))
	}
	c.run.register(id, s, c.id, data)
	c.run.stats.publishes.Add(1)
	st.unacked = append(st.unacked, id)
	c.send(st, &streamsvc.DataMessage{Type: typeData, SessionID: ptr(s), ID: &id, Data: []byte(data)})
}

func (c *modelClient) healthCheck(st *modelStream) {
	st.health = append(st.health, healthCheck{publishes: st.unacked, requests: st.requests})
	st.unacked = nil
	c.send(st, &streamsvc.DataMessage{Type: typeHealthCheck})
}

// send sends msg unless the stream already failed; what it asks for stays
// unanswered then, and the server may or may not have read it.
func (c *modelClient) send(st *modelStream, msg *streamsvc.DataMessage) {
	c.record(st, true, msg)
	if st.broken {
		return
	}
	if err := st.s.Send(msg); err != nil {
		st.broken = true
	}
}

// reconnect ends the current stream, if any, and opens a new one: a
// health_check first, to tell the memberships the server restores from the
// replies that follow, then a join of every session the client is a member
// of, at the last seq it received (SPEC §3: "a client that must lose
// nothing rejoins with the last seq it actually received").
func (c *modelClient) reconnect() bool {
	if old := c.st; old != nil {
		endedByItself := old.ended()
		old.cancel()
		<-old.done
		for drained := false; !drained; {
			select {
			case msg := <-old.in:
				if !c.handle(old, msg) {
					return false
				}
			default:
				drained = true
			}
		}
		if endedByItself && !c.checkEnd(old) {
			return false
		}
		c.retire(old)
	}
	if !c.open() {
		return false
	}
	st := c.st
	c.healthCheck(st)
	if c.rnd.IntN(2) == 0 {
		// Read what the server restores first, then rejoin: its replays
		// run longer before the joins override them.
		st.rejoinLater = true
		return true
	}
	c.rejoin(st)
	return true
}

// rejoin joins every session the client is a member of at the last seq it
// received, pausing again what it had paused.
func (c *modelClient) rejoin(st *modelStream) {
	for _, s := range modelSessions {
		cs := c.sess[s]
		paused := cs.paused
		switch {
		case !cs.member:
			continue
		case cs.posOK:
			c.join(st, s, joinAt, cs.pos)
		default:
			c.join(st, s, cs.fresh.kind, cs.fresh.seq)
		}
		if paused { // the join made it active: pause it again, so pauses outlast reconnects
			c.pauseSession(st, s)
		}
	}
}

// checkEnd checks why a stream the client did not cancel ended: only a cut
// (the transport failed: UNAVAILABLE from gRPC itself, not from the
// service) or a replace by a stream a cut made late may end it.
func (c *modelClient) checkEnd(st *modelStream) bool {
	switch {
	case st.replaced:
		return true
	case errorName(st.err) == "aborted" && c.late > 0:
		return c.replacedLate(st) // its goaway did not get through
	case status.Code(st.err) == codes.Unavailable && c.run.cuts.Load() > 0:
		// A stream opened after a Cut may still have gone out on the
		// transport it cut, before gRPC noticed: any cut will do.
		c.run.stats.cutEnds.Add(1)
		return true
	}
	return c.fail("the stream ended (%s: %v) although the client read everything and no cut happened", errorName(st.err), st.err)
}

// retire works out, from what an ended stream answered, what the server
// holds for each session: the next stream must restore exactly that.
func (c *modelClient) retire(old *modelStream) {
	if !old.welcomed && c.run.mayHaveCut(old.cutsAtOpen) {
		c.late++
	}
	for _, s := range modelSessions {
		cs, ss := c.sess[s], old.sess[s]
		switch {
		case len(ss.reqs) > 0:
			cs.known = stateUnknown
		case !old.restoring:
			cs.known = ss.state
		}
	}
}

// open opens a stream through the proxy, retrying while cuts get in the way.
func (c *modelClient) open() bool {
	for {
		cuts := c.run.cuts.Load()
		ctx, cancel := context.WithCancel(c.run.ctx)
		giveUp := time.AfterFunc(waitTimeout, cancel)
		res, err := streamsvcc.NewClient(c.cc, grpc.WaitForReady(true)).StreamData()(ctx, &streamsvc.StreamDataPayload{ClientID: &c.id})
		if !giveUp.Stop() {
			err = fmt.Errorf("no stream within %v", waitTimeout)
		}
		if err == nil {
			inbox := 4096
			if c.lazy {
				inbox = 1 // not reading is not reading the stream
			}
			c.streams++
			st := &modelStream{n: c.streams, s: res.(*streamsvcc.StreamDataClientStream), cancel: cancel,
				in: make(chan *streamsvc.DataMessage, inbox), done: make(chan struct{}), cutsAtOpen: cuts,
				restoring: true, sess: map[string]*streamSession{}}
			for _, s := range modelSessions {
				st.sess[s] = &streamSession{expect: c.sess[s].known}
			}
			c.st = st
			go st.read(ctx)
			return true
		}
		cancel()
		if c.run.aborted() {
			return false
		}
		if c.run.cuts.Load() == 0 {
			return c.fail("cannot open a stream: %v", err)
		}
	}
}

// handle checks one message received on st.
func (c *modelClient) handle(st *modelStream, msg *streamsvc.DataMessage) bool {
	c.record(st, false, msg)
	if st.replaced {
		return c.fail("a message after the goaway")
	}
	if !st.welcomed {
		if msg.Type != typeControl || str(msg.Action) != actWelcome || str(msg.ClientID) != c.id {
			return c.fail("the first message is %s, want a welcome for %s", brief(msg), c.id)
		}
		st.welcomed = true
		return true
	}
	switch msg.Type {
	case typeHeartbeat:
		return true
	case typeHealthCheck:
		return c.healthReply(st)
	case typeData:
		s := str(msg.SessionID)
		if _, ok := st.sess[s]; !ok {
			return c.fail("a delivery of session %q", s)
		}
		return c.delivery(st, s, msg)
	case typeControl:
		s := str(msg.SessionID)
		if _, ok := st.sess[s]; !ok {
			return c.fail("unexpected %s", brief(msg))
		}
		switch str(msg.Action) {
		case actJoined:
			return c.joined(st, s, msg)
		case actPaused:
			return c.paused(st, s)
		case actResumed:
			return c.resumed(st, s, msg)
		case actLeft:
			return c.left(st, s)
		}
		if str(msg.Action) == actGoaway && str(msg.Reason) == "replaced" && c.late > 0 {
			return c.replacedLate(st)
		}
	}
	return c.fail("unexpected %s", brief(msg))
}

// replacedLate accepts that an older stream, which the server saw open only
// now, replaced st: it may also have applied requests sent on it after
// those st answered, so what the server holds is not known any more.
func (c *modelClient) replacedLate(st *modelStream) bool {
	c.run.stats.lateReplaces.Add(1)
	c.late--
	st.replaced = true
	for _, cs := range c.sess {
		cs.known, cs.floorOK = stateUnknown, false
	}
	return true
}

func (c *modelClient) healthReply(st *modelStream) bool {
	if len(st.health) == 0 {
		return c.fail("a health_check the client did not ask for")
	}
	h := st.health[0]
	st.health = st.health[1:]
	if st.replies < h.requests {
		return c.fail("the health_check answered before %d requests sent ahead of it", h.requests-st.replies)
	}
	c.run.ack(h.publishes)
	if !st.restoring {
		return true
	}
	st.restoring = false
	if st.rejoinLater {
		c.rejoin(st)
	}
	for _, s := range modelSessions {
		ss := st.sess[s]
		if ss.expect == stateUnknown {
			continue
		}
		got := stateNone
		switch {
		case ss.restoredPaused:
			got = statePaused
		case ss.restored:
			got = stateActive
		}
		if got != ss.expect {
			return c.fail("session %s: restored membership %s, but the server held %s", s, got, ss.expect)
		}
	}
	return true
}

// pop takes the request a reply answers: the oldest one of its session.
func (c *modelClient) pop(st *modelStream, s, reply, want string) (request, bool) {
	ss := st.sess[s]
	if len(ss.reqs) == 0 || ss.reqs[0].action != want {
		due := "no reply"
		if len(ss.reqs) > 0 {
			due = "the reply to " + ss.reqs[0].action
		}
		return request{}, c.fail("%s %s, but %s is due", reply, s, due)
	}
	req := ss.reqs[0]
	ss.reqs = ss.reqs[1:]
	st.replies++
	return req, true
}

func (c *modelClient) joined(st *modelStream, s string, msg *streamsvc.DataMessage) bool {
	cs, ss := c.sess[s], st.sess[s]
	if own, _ := c.run.epochs(s); str(msg.Epoch) != own || msg.Seq == nil || msg.Recovered == nil {
		return c.fail("%s, want seq, recovered and epoch %s", brief(msg), own)
	}
	last, recovered := *msg.Seq, *msg.Recovered
	if st.restoring {
		if ss.restored {
			return c.fail("a second restored membership of %s", s)
		}
		c.run.stats.restores.Add(1)
		*ss = streamSession{reqs: ss.reqs, state: stateActive, joinedHere: ss.joinedHere, restored: true,
			expect: ss.expect, restore: true, gen: -1}
		if cs.floorOK {
			ss.floor = cs.floor
		}
		switch {
		case cs.member:
			ss.gen = cs.gen
		case !slices.ContainsFunc(ss.reqs, func(r request) bool { return r.action == actLeave }):
			// A leave the server never read: leave again.
			c.leave(st, s)
		}
		return true
	}
	req, ok := c.pop(st, s, "joined", actJoin)
	if !ok {
		return false
	}
	c.run.stats.joins.Add(1)
	if last < req.lower {
		return c.fail("joined %s at seq %d, but seq %d was delivered before the join was sent", s, last, req.lower)
	}
	*ss = streamSession{reqs: ss.reqs, state: stateActive, joinedHere: ss.joinedHere, restored: ss.restored,
		restoredPaused: ss.restoredPaused, expect: ss.expect, gen: req.gen}
	at := last // the position the join fixed
	switch req.kind {
	case joinLive:
		if !recovered {
			return c.fail("a live join of %s said recovered:false", s)
		}
	case joinElsewhere:
		c.run.stats.elsewhere.Add(1)
		if recovered {
			return c.fail("a join of %s with another epoch said recovered:true", s)
		}
	case joinAt:
		c.run.stats.positioned.Add(1)
		at = min(req.seq, last)
		switch {
		case recovered && at+1+modelHistory <= last:
			return c.fail("joined %s at %d recovered:true, but history of %d held nothing before seq %d", s, at, modelHistory, last-modelHistory+1)
		case !recovered && at >= last:
			return c.fail("joined %s at %d (the session's last is %d) said recovered:false", s, req.seq, last)
		case !recovered:
			c.run.stats.notRecovered.Add(1)
			ss.truth, ss.reset = at+1, true
		}
	}
	ss.floor = at
	if !ss.reset {
		ss.next = at + 1
	}
	if req.gen == cs.gen && cs.member && !ss.reset {
		if cs.posOK {
			cs.pos = max(cs.pos, at)
		} else {
			cs.pos, cs.posOK = at, true
		}
	}
	c.settleFloor(st, s, at, true)
	return true
}

// settleFloor recomputes the floor of s once a reply settled the
// membership: the position it has now (if member), or a join still
// unanswered may have fixed.
func (c *modelClient) settleFloor(st *modelStream, s string, at uint64, member bool) {
	cs := c.sess[s]
	cs.floor, cs.floorOK = at, member
	for _, r := range st.sess[s].reqs {
		if r.action == actJoin && (!cs.floorOK || r.at < cs.floor) {
			cs.floor, cs.floorOK = r.at, true
		}
	}
}

func (c *modelClient) paused(st *modelStream, s string) bool {
	ss := st.sess[s]
	if st.restoring {
		if !ss.restored || ss.restoredPaused || ss.last != 0 {
			return c.fail("paused %s among the restored memberships, not right after its joined", s)
		}
		c.run.stats.restoredPaused.Add(1)
		ss.restoredPaused, ss.state = true, statePaused
		return true
	}
	if _, ok := c.pop(st, s, "paused", actPause); !ok {
		return false
	}
	if ss.state != stateActive {
		return c.fail("paused %s, which was %s", s, ss.state)
	}
	c.run.stats.pauses.Add(1)
	ss.state = statePaused
	return true
}

func (c *modelClient) resumed(st *modelStream, s string, msg *streamsvc.DataMessage) bool {
	ss := st.sess[s]
	req, ok := c.pop(st, s, "resumed", actResume)
	if !ok {
		return false
	}
	if ss.state != statePaused || msg.Seq == nil || msg.Recovered == nil {
		return c.fail("%s while %s", brief(msg), ss.state)
	}
	c.run.stats.resumes.Add(1)
	last, recovered := *msg.Seq, *msg.Recovered
	switch {
	case last < req.lower:
		return c.fail("resumed %s at seq %d, but seq %d was delivered before the resume was sent", s, last, req.lower)
	case recovered && ss.next != 0 && ss.next+modelHistory <= last:
		return c.fail("resumed %s recovered:true, but history of %d held nothing before seq %d, and seq %d was due", s, modelHistory, last-modelHistory+1, ss.next)
	case !recovered && ss.next != 0 && ss.next > last:
		return c.fail("resumed %s recovered:false, but nothing after seq %d was missed (last %d)", s, ss.next-1, last)
	case !recovered:
		c.run.stats.resumesNotRecovered.Add(1)
		if ss.next != 0 {
			ss.truth = ss.next
		}
		ss.next, ss.reset = 0, true
	}
	ss.state = stateActive
	return true
}

func (c *modelClient) left(st *modelStream, s string) bool {
	ss := st.sess[s]
	if _, ok := c.pop(st, s, "left", actLeave); !ok {
		return false
	}
	if ss.state == stateNone {
		return c.fail("left %s, which it was not a member of", s)
	}
	c.run.stats.leaves.Add(1)
	ss.state = stateNone
	// No membership now: one restored later can only come from a join
	// sent later, and is at least at its position.
	c.settleFloor(st, s, 0, false)
	return true
}

func (c *modelClient) delivery(st *modelStream, s string, msg *streamsvc.DataMessage) bool {
	if v := c.run.observe(s, msg); v != "" {
		return c.fail("session %s: %s", s, v)
	}
	c.run.stats.deliveries.Add(1)
	cs, ss := c.sess[s], st.sess[s]
	q := *msg.Seq
	switch {
	case ss.state != stateActive:
		return c.fail("seq %d of %s delivered while the membership is %s", q, s, ss.state)
	case q <= ss.floor:
		return c.fail("seq %d of %s delivered, at or before the position %d", q, s, ss.floor)
	case ss.last != 0 && q <= ss.last:
		return c.fail("seq %d of %s delivered after seq %d", q, s, ss.last)
	case ss.next != 0 && q != ss.next:
		return c.fail("seq %d of %s delivered, but seq %d is due", q, s, ss.next)
	case ss.next == 0 && ss.truth != 0 && q <= ss.truth:
		return c.fail("seq %d of %s delivered after recovered:false said seq %d was gone", q, s, ss.truth)
	}
	ss.last, ss.next, ss.truth = q, q+1, 0
	if ss.gen != cs.gen || !cs.member {
		ss.reset = false
		return true
	}
	switch {
	case ss.reset:
		ss.reset = false
		if !cs.posOK || q > cs.pos {
			cs.pos, cs.posOK = q, true
		}
	case !cs.posOK || q <= cs.pos:
	case q == cs.pos+1:
		cs.pos = q
	case !ss.restore:
		return c.fail("seq %d of %s delivered, but the client has received only up to %d", q, s, cs.pos)
	}
	return true
}

// quiesce settles the client once faults stopped, then checks that it
// catches up with the markers.
func (c *modelClient) quiesce(ph *modelPhases) {
	for attempt := 0; ; attempt++ {
		if attempt == 10 {
			c.fail("streams keep ending although faults stopped")
			return
		}
		if c.st.broken || c.st.ended() {
			if !c.reconnect() {
				return
			}
			continue
		}
		// The first round trip ends the restoring (and rejoins, if that
		// waited for it); then what is paused is resumed. A restored
		// membership the client had left is left again after a
		// health_check: round trips until every request is answered.
		alive, ok := c.roundTrip()
		if alive && ok {
			for _, s := range modelSessions {
				if cs := c.sess[s]; cs.member && cs.paused {
					c.resume(c.st, s)
				}
			}
		}
		for alive && ok && c.st.pending() {
			alive, ok = c.roundTrip()
		}
		if !ok {
			return
		}
		if alive {
			break
		}
	}
	st := c.st
	ph.ready <- struct{}{}
	if !c.await(ph.final, "the markers") {
		return
	}
	c.run.mu.Lock()
	marker := map[string]uint64{}
	for _, s := range modelSessions {
		marker[s] = c.run.sessions[s].marker
	}
	c.run.mu.Unlock()
	caughtUp := make(chan struct{})
	check := func() {
		for _, s := range modelSessions {
			if cs := c.sess[s]; cs.member && (!cs.posOK || cs.pos != marker[s]) {
				return
			}
		}
		close(caughtUp)
	}
	if check(); !c.awaitWhile(caughtUp, check, "every member caught up with the markers") {
		return
	}
	if alive, ok := c.roundTrip(); !ok || !alive {
		if ok {
			c.fail("the stream ended in the quiescent phase: %v", st.err)
		}
		return
	}
	for _, s := range modelSessions {
		want := stateNone
		if c.sess[s].member {
			want = stateActive
		}
		if got := st.sess[s].state; got != want {
			c.fail("session %s is %s at the end, want %s", s, got, want)
			return
		}
	}
}

// roundTrip sends a health_check and handles messages until it is
// answered. alive is false when the stream ended first (a cut from before
// the faults stopped); ok is false on a violation.
func (c *modelClient) roundTrip() (alive, ok bool) {
	st := c.st
	c.healthCheck(st)
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for len(st.health) > 0 {
		select {
		case msg := <-st.in:
			if !c.handle(st, msg) {
				return false, false
			}
		case <-st.done:
			return false, true
		case <-c.run.abort:
			return false, false
		case <-deadline.C:
			return false, c.fail("no answer to a health_check in %v", waitTimeout)
		}
	}
	return true, true
}

// await handles messages until ch is closed.
func (c *modelClient) await(ch <-chan struct{}, what string) bool {
	return c.awaitWhile(ch, func() {}, what)
}

// awaitWhile handles messages, calling after each, until ch is closed.
func (c *modelClient) awaitWhile(ch <-chan struct{}, after func(), what string) bool {
	st := c.st
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		select {
		case <-ch:
			return true
		case msg := <-st.in:
			if !c.handle(st, msg) {
				return false
			}
			after()
		case <-st.done:
			return c.fail("the stream ended in the quiescent phase, waiting for %s: %v", what, st.err)
		case <-c.run.abort:
			return false
		case <-deadline.C:
			var pos []string
			for _, s := range modelSessions {
				cs := c.sess[s]
				pos = append(pos, fmt.Sprintf("%s member=%v pos=%d (known %v)", s, cs.member, cs.pos, cs.posOK))
			}
			return c.fail("waited %v for %s: %s", waitTimeout, what, strings.Join(pos, ", "))
		}
	}
}
