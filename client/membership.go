package client

import (
	"slices"
	"strconv"
	"time"

	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
)

// membership is what the client knows of one session its user joined. All of
// it is guarded by Client.mu.
//
// The position (epoch, last) is what the user was handed: the client
// rejoins from it on every new stream. While a join of the session is in
// flight on the current stream, the server may still be sending from an
// older position (a membership it restored by itself, or the previous
// join's cursor): only the very next seq is taken then, and the rest comes
// again in the replay that follows the join's answer. Once every join is
// answered, any seq after the position is taken, since the server only
// skips ahead when its answer said Recovered: false.
//
// Seqs count within an epoch. When the session's epoch changes under the
// client (the server says so with a joined, or only by delivering the new
// epoch), the position moves to the start of the new epoch (restartEpoch):
// what the user was handed of the old one says nothing about the new one.
type membership struct {
	name string

	epoch      string // "" until the first joined, or as given to From
	last       uint64 // last seq handed to the user
	hasPos     bool   // last means something: joins ask to replay from it
	joinedOnce bool   // a joined was received: later ones are rejoins
	paused     bool

	joining  int    // joins in flight on the current stream
	synced   bool   // the current stream answered its joins
	replayTo uint64 // the session's last seq when the latest join was served: the replay ends there
	ready    bool   // synced and replayed: publications may go out

	// A join the client made by itself that the server refused for a
	// passing reason is sent again at retryAt (zero: none is due), as a
	// rejoin or silently like the refused one; retries counts the
	// refusals in a row, for the backoff.
	retryAt                  time.Time
	retryRejoin, retrySilent bool
	retries                  int

	waiters []*call        // Join and Resume calls waiting for the next joined
	pubs    []*Publication // waiting for their delivery, in publication order
}

// pub returns the publication in flight with id, or nil.
func (st *membership) pub(id string) *Publication {
	for _, p := range st.pubs {
		if p.id == id {
			return p
		}
	}
	return nil
}

// takePub removes and returns the publication in flight with id, or nil.
// takeSentPub is takePub for a publication already sent: one never sent
// cannot be in a replay, however its id matches.
func (st *membership) takeSentPub(id string) *Publication {
	for i, p := range st.pubs {
		if p.id == id && p.sent {
			st.pubs = slices.Delete(st.pubs, i, i+1)
			return p
		}
	}
	return nil
}

func (st *membership) takePub(id string) *Publication {
	for i, p := range st.pubs {
		if p.id == id {
			st.pubs = slices.Delete(st.pubs, i, i+1)
			return p
		}
	}
	return nil
}

// opKind is a request the client sent that the server answers.
type opKind uint8

const (
	opJoin  opKind = iota + 1 // answered by joined
	opPause                   // answered by paused
	opLeave                   // answered by left
)

// op is a request in flight on one stream. The server answers the
// requests about one session in the order it received them, so each
// session's ops form a queue; an error answer names the op by its ID.
type op struct {
	kind   opKind
	id     string
	calls  []*call // user calls waiting for the answer
	rejoin bool    // a join the client made by itself after a reconnect
	resume bool    // a join that answers Resume
	silent bool    // the client's own business: no event for its answer
}

// answers says whether a reply with action answers this op.
func (o *op) answers(action string) bool {
	switch o.kind {
	case opJoin:
		return action == "joined"
	case opPause:
		return action == "paused"
	case opLeave:
		return action == "left"
	}
	return false
}

func (o *op) resolve(j Joined, err error) {
	for _, cl := range o.calls {
		cl.resolve(j, err)
	}
	o.calls = nil
}

// sendControl sends a control action about session on s and records the
// op that waits for its answer. Called with c.mu held.
func (c *Client) sendControl(s *stream, action, session string, o *op) {
	c.send(s, &streamsvc.DataMessage{Type: "control", Action: &action, SessionID: &session}, session, o)
}

// send queues msg, a request about session, with a fresh ID, and records
// the op that waits for its answer. Called with c.mu held.
func (c *Client) send(s *stream, msg *streamsvc.DataMessage, session string, o *op) {
	c.nextOp++
	o.id = "_c." + strconv.FormatUint(c.nextOp, 36)
	msg.ID = &o.id
	s.ops[session] = append(s.ops[session], o)
	s.out.push(msg)
}

// sendJoin joins st on s at its position (live without one). Called with
// c.mu held.
func (c *Client) sendJoin(s *stream, st *membership, o *op) {
	o.kind = opJoin
	action, session := "join", st.name
	msg := &streamsvc.DataMessage{Type: "control", Action: &action, SessionID: &session}
	if st.hasPos {
		seq := st.last
		msg.Seq = &seq
		if st.epoch != "" {
			epoch := st.epoch
			msg.Epoch = &epoch
		}
	}
	c.send(s, msg, session, o)
	st.joining++
	st.synced, st.ready = false, false
	st.retryAt = time.Time{} // this join is the retry
}

// retryJoins sends again, on s, the refused joins whose retry is due.
// Called with c.mu held.
func (c *Client) retryJoins(s *stream, now time.Time) {
	for _, st := range c.sessions {
		if st.retryAt.IsZero() || now.Before(st.retryAt) || st.joining > 0 || st.paused {
			continue
		}
		o := &op{rejoin: st.retryRejoin, silent: st.retrySilent, calls: st.waiters}
		st.waiters = nil
		c.sendJoin(s, st, o)
	}
}

// sendPub sends p on s. Called with c.mu held.
func (c *Client) sendPub(s *stream, p *Publication) {
	if p.sent {
		c.stats.Resent++
	}
	p.sent, p.sentOn = true, s
	ts := time.Now().UnixMilli()
	s.out.push(&streamsvc.DataMessage{Type: "data", SessionID: &p.session, ID: &p.id, Data: p.data, Timestamp: &ts})
}

// finishPub ends p with its seq or its failure. Called with c.mu held,
// once p is no longer in its session's list.
func (c *Client) finishPub(p *Publication, seq uint64, err error) {
	p.seq, p.err = seq, err
	close(p.done)
	<-c.slots
}

// dropSession forgets st, failing what waits on it with err. Called with
// c.mu held.
func (c *Client) dropSession(st *membership, err error) {
	delete(c.sessions, st.name)
	for _, p := range st.pubs {
		c.finishPub(p, 0, err)
	}
	st.pubs = nil
	for _, cl := range st.waiters {
		cl.resolve(Joined{}, err)
	}
	st.waiters = nil
}

// checkReady sends st's held publications once st is rejoined on s and
// its replay is done, so that a publication accepted before a reconnect
// is found in the replay instead of being sent again. Called with c.mu
// held.
func (c *Client) checkReady(s *stream, st *membership) {
	if st.ready || !st.synced || st.paused || st.joining > 0 || st.last < st.replayTo {
		return
	}
	st.ready = true
	for _, p := range st.pubs {
		if p.sentOn != s {
			c.sendPub(s, p)
		}
	}
}

// handle applies one message from the server and appends the events it
// makes for the user to evs.
func (c *Client) handle(s *stream, m *streamsvc.DataMessage, evs []Event) []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch m.Type {
	case "data":
		return c.onData(s, m, evs)
	case "health_check":
		if s.welcomed && !s.fenced {
			// The answer to the health_check sent after the welcome:
			// what came before it was the server restoring memberships
			// by itself; what follows answers the client's requests.
			s.fenced = true
			return evs
		}
		s.out.push(&streamsvc.DataMessage{Type: "heartbeat"}) // a probe: any message answers it
	case "control":
		switch action := deref(m.Action); action {
		case "welcome":
			return c.onWelcome(s, m, evs)
		case "goaway":
			s.goaway = deref(m.Reason)
		case "joined", "paused", "left", "resumed", "error":
			if !s.fenced {
				c.onRestore(s, m)
				return evs
			}
			if action == "error" {
				return c.onError(s, m, evs)
			}
			return c.onReply(s, action, m, evs)
		}
	}
	return evs
}

// onWelcome makes s the client's stream and rejoins every session on it:
// a health_check first, whose answer tells the server's own restores from
// the answers to these joins, then a join at each session's position (a
// pause for paused ones, in case the server restores them).
func (c *Client) onWelcome(s *stream, m *streamsvc.DataMessage, evs []Event) []Event {
	if s.welcomed {
		return evs
	}
	s.welcomed, s.welcomedAt = true, time.Now()
	c.connOnce.Do(func() { close(c.connected) }) // Dial returns, whatever the user's buffer holds
	if id := deref(m.ClientID); id != "" {
		c.clientID = id
	}
	c.cur = s
	c.stats.Connects++
	s.out.push(&streamsvc.DataMessage{Type: "health_check"})
	for _, st := range c.sessions {
		if st.paused {
			c.sendControl(s, "pause", st.name, &op{kind: opPause, silent: true})
			continue
		}
		o := &op{rejoin: st.joinedOnce, calls: st.waiters}
		st.waiters = nil
		c.sendJoin(s, st, o)
	}
	return append(evs, &StateChange{State: StateConnected, ClientID: c.clientID})
}

// onRestore handles what the server sends before the fence: memberships it
// restored by itself. The client's own joins follow and decide; a
// membership the user left meanwhile is left now.
func (c *Client) onRestore(s *stream, m *streamsvc.DataMessage) {
	name := deref(m.SessionID)
	if deref(m.Action) != "joined" || name == "" {
		return
	}
	if _, ok := c.sessions[name]; !ok {
		c.sendControl(s, "leave", name, &op{kind: opLeave, silent: true})
	}
}

// restartEpoch moves st to the start of epoch, a new epoch of its session
// (the server lost the session's history, or the session expired and its
// name was used again), and asks the server for all of it.
//
// The server's replies carry no request ID, so a joined that announces an
// epoch change by itself may have been taken for the answer to a join
// still in flight; the real answer then comes later and, had that join
// asked for the old epoch, moved the member to the session's last seq,
// past what the user has not seen. The pause sent first puts a reply that
// is not a joined ahead of the join at the new position: a joined that
// arrives before the pause's answer matches no request (onReply ignores
// it), and the join's own answer is the one after. Joined at seq 0 of the
// new epoch, the member gets the epoch from its first message, and the
// client takes only the next seq until that join is answered and its
// replay is done.
//
// Publications sent but not delivered back are held like after a
// reconnect: found by ID in the replay, or sent again once it is done.
// The server serves one stream's messages in order, so one sent before
// this join is in its replay if the server accepted it in the new epoch.
// Called with c.mu held.
func (c *Client) restartEpoch(s *stream, st *membership, epoch string) {
	st.epoch, st.last, st.hasPos, st.replayTo = epoch, 0, true, 0
	for _, p := range st.pubs {
		p.sentOn = nil
	}
	c.sendControl(s, "pause", st.name, &op{kind: opPause, silent: true})
	c.sendJoin(s, st, &op{silent: true})
}

// onReply handles the answer to a request.
func (c *Client) onReply(s *stream, action string, m *streamsvc.DataMessage, evs []Event) []Event {
	name := deref(m.SessionID)
	var o *op
	if q := s.ops[name]; len(q) > 0 && q[0].answers(action) {
		o = q[0]
		s.ops[name] = q[1:]
		if len(s.ops[name]) == 0 {
			delete(s.ops, name)
		}
	}
	if action != "joined" {
		if o != nil {
			o.resolve(Joined{}, nil)
		}
		return evs
	}
	st := c.sessions[name]
	if o == nil {
		// Nobody asked for it on this stream: a restore the server sent
		// late, or the server saying the session has a new epoch (its
		// history was lost) and delivering it from seq 1 on. A session
		// still joined in its epoch is being rejoined anyway; a paused one
		// learns of the new epoch when it resumes at its position.
		epoch := deref(m.Epoch)
		switch {
		case st == nil:
			c.sendControl(s, "leave", name, &op{kind: opLeave, silent: true})
		case st.paused || st.epoch == "" || epoch == "" || epoch == st.epoch:
		default:
			c.restartEpoch(s, st, epoch)
			evs = append(evs, &Joined{Session: name, Seq: deref(m.Seq), Epoch: epoch, Rejoin: true})
		}
		return evs
	}
	if st == nil {
		o.resolve(Joined{}, ErrNotJoined) // left meanwhile; its leave follows
		return evs
	}
	st.joining--
	j := Joined{
		Session:   name,
		Seq:       deref(m.Seq),
		Epoch:     deref(m.Epoch),
		Recovered: deref(m.Recovered),
		Rejoin:    o.rejoin,
		Resume:    o.resume,
	}
	newEpoch := st.hasPos && st.epoch != "" && j.Epoch != st.epoch
	if newEpoch {
		// What came after the position in the old epoch is gone, and
		// everything of the new one is new to the user, so the client
		// goes on from its start.
		j.Recovered = false
		c.restartEpoch(s, st, j.Epoch)
	} else {
		st.epoch = j.Epoch
		if !st.hasPos {
			st.last, st.hasPos = j.Seq, true
		}
		st.replayTo = j.Seq
		st.synced = st.joining == 0
	}
	st.joinedOnce = true
	st.retries = 0
	o.resolve(j, nil)
	for _, cl := range st.waiters {
		cl.resolve(j, nil)
	}
	st.waiters = nil
	switch {
	case !o.silent:
		evs = append(evs, &j)
	case newEpoch:
		// The client's own join found the epoch changed again: the user
		// hears of every loss.
		j.Rejoin = true
		evs = append(evs, &j)
	}
	c.checkReady(s, st)
	return evs
}

// onError handles a refusal: of a request (a join refused drops the
// session), of a publication, or of a message the server could not read.
func (c *Client) onError(s *stream, m *streamsvc.DataMessage, evs []Event) []Event {
	name, id := deref(m.SessionID), deref(m.ID)
	se := &ServerError{Session: name, ID: id, Reason: deref(m.Reason)}
	if name == "" || id == "" {
		return append(evs, se)
	}
	if q := s.ops[name]; len(q) > 0 {
		if i := slices.IndexFunc(q, func(o *op) bool { return o.id == id }); i >= 0 {
			o := q[i]
			s.ops[name] = slices.Delete(q, i, i+1)
			if len(s.ops[name]) == 0 {
				delete(s.ops, name)
			}
			if st := c.sessions[name]; o.kind == opJoin && st != nil && (o.rejoin || o.silent) && se.Reason != permissionDenied {
				// A join the client made by itself, for a membership
				// its user holds: refused for a passing reason (the
				// server's engine is unavailable, say), not for want of
				// permission. The user never asked to leave, so the
				// membership stays and the join is sent again after a
				// backoff (check); its publications are held meanwhile.
				st.joining--
				st.waiters = append(st.waiters, o.calls...)
				o.calls = nil
				st.retryAt = time.Now().Add(c.backoff(st.retries))
				st.retries++
				st.retryRejoin, st.retrySilent = o.rejoin, o.silent
				return append(evs, se)
			}
			o.resolve(Joined{}, se)
			if o.kind == opJoin {
				if st := c.sessions[name]; st != nil {
					c.dropSession(st, se)
				}
			}
			if o.silent && o.kind != opJoin {
				return evs
			}
			return append(evs, se)
		}
	}
	if st := c.sessions[name]; st != nil {
		if p := st.takePub(id); p != nil {
			c.finishPub(p, 0, se)
		}
	}
	return append(evs, se)
}

// onData hands a delivery to the user unless it was handed over already
// or a replay will bring it in order.
func (c *Client) onData(s *stream, m *streamsvc.DataMessage, evs []Event) []Event {
	st := c.sessions[deref(m.SessionID)]
	if st == nil || st.paused || m.Seq == nil {
		return evs
	}
	epoch, seq := deref(m.Epoch), *m.Seq
	if st.epoch != "" && epoch != "" && epoch != st.epoch && st.synced && st.joining == 0 {
		// Every join is answered, so the server delivers from the
		// position the client holds: another epoch means the session
		// started a new one under the membership, which the server said
		// only by delivering it. Its seq 1 is the next message; later
		// ones come in the replay of the join restartEpoch sends.
		c.restartEpoch(s, st, epoch)
		evs = append(evs, &Joined{Session: st.name, Seq: seq - 1, Epoch: epoch, Rejoin: true})
	}
	switch {
	case st.epoch == "" || epoch != st.epoch:
		return evs // of a position the client did not ask for
	case seq <= st.last:
		c.stats.Duplicates++
		return evs
	case (st.joining > 0 || !st.retryAt.IsZero()) && seq != st.last+1:
		return evs // the replay after the join brings it in order
	}
	st.last = seq
	msg := &Message{
		Session: st.name,
		Seq:     seq,
		Epoch:   epoch,
		Sender:  deref(m.ClientID),
		ID:      deref(m.ID),
		Data:    m.Data,
	}
	if m.Timestamp != nil {
		msg.Time = time.UnixMilli(*m.Timestamp)
	}
	if msg.Sender == c.clientID && msg.ID != "" {
		if p := st.takeSentPub(msg.ID); p != nil {
			if p.sentOn != s {
				c.stats.FoundInReplay++
			}
			p.seq = seq
			msg.pub = p // done once the user has the delivery (emit)
		}
	}
	evs = append(evs, msg)
	c.checkReady(s, st)
	return evs
}

func deref[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}
