package streaming

import (
	"errors"
	"fmt"
	"strings"
	"time"

	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	"goa.design/clue/log"
)

// maxReasonLen bounds the reason of an error reply.
const maxReasonLen = 256

// handle serves one client message. A message that cannot be served gets a
// control error and changes nothing else.
func (c *conn) handle(msg *streamsvc.DataMessage) {
	if msg.Type != typeData { // never log payloads; control messages carry none
		log.Debug(c.ctx, log.KV{K: "msg", V: "received"}, log.KV{K: "client", V: c.id},
			log.KV{K: "type", V: msg.Type}, log.KV{K: "action", V: deref(msg.Action)},
			log.KV{K: "session", V: deref(msg.SessionID)}, log.KV{K: "seq", V: deref(msg.Seq)})
	}
	switch msg.Type {
	case typeHeartbeat:
		// Receiving it was the point.
	case typeHealthCheck:
		c.reply(outItem{msg: stamped(typeHealthCheck, time.Now())})
	case typeData:
		if msg.SessionID == nil {
			c.refuse(msg, "session_id is required")
			return
		}
		c.publish(msg)
	case typeControl:
		switch {
		case msg.Action == nil:
			c.refuse(msg, "action is required")
		case msg.SessionID == nil:
			c.refuse(msg, "session_id is required")
		default:
			c.control(msg)
		}
	default:
		c.refuse(msg, fmt.Sprintf("unknown type %q", msg.Type))
	}
}

// refuse answers msg (nil when it could not be decoded) with an error.
func (c *conn) refuse(msg *streamsvc.DataMessage, reason string) {
	c.reply(refusal(msg, reason))
}

// reply queues it for the sender, waiting for room: a client that asks
// faster than it reads the answers is not read from until it catches up.
// A membership change that the stream's end kept out of the queue was
// served all the same (join and leave took effect on the client's
// memberships), so the cleanup applies it: a join keeps the position it
// fixed, a leave lets go of the member.
func (c *conn) reply(it outItem) {
	if !c.q.push(it, c.closing) && it.op != opNone {
		c.refused = append(c.refused, it)
	}
}

func (c *conn) publish(msg *streamsvc.DataMessage) {
	m, it := c.joinSession(msg, true)
	if it.op != opNone || it.msg != nil {
		c.reply(it)
	}
	if m != nil {
		// Members of sessions attached to a live stream are never removed
		// under it, so the session is still there.
		if c.svc.shared != nil {
			c.publishShared(m.sess, msg)
		} else if err := m.sess.publish(c.svc.sessions, c, msg); err != nil {
			c.refuse(msg, err.Error())
		}
	}
}

// joinSession is join under the client's lock. When the session limit
// refuses a new session, retained state makes room — taken without the
// client's lock, as the lock order wants — and the join is tried again.
// implicit is a data message's live join: a member already is one.
func (c *conn) joinSession(msg *streamsvc.DataMessage, implicit bool) (*member, outItem) {
	cl := c.client
	for {
		cl.mu.Lock()
		if cl.conn != c {
			cl.mu.Unlock()
			return nil, outItem{}
		}
		if m := cl.members[*msg.SessionID]; m != nil && implicit {
			cl.mu.Unlock()
			return m, outItem{}
		}
		m, it, full := c.join(msg, implicit)
		cl.mu.Unlock()
		if !full {
			if c.svc.shared != nil && m != nil {
				c.membershipsChanged()
			}
			return m, it
		}
		if c.svc.shared != nil {
			// Not loaded here yet: load it, then join.
			err := c.svc.loadSession(*msg.SessionID)
			if err == nil {
				continue
			}
			if !errors.Is(err, errTooManySessions) {
				return nil, refusal(msg, err.Error())
			}
		}
		if !c.svc.makeRoom() {
			return nil, refusal(msg, fmt.Sprintf("too many sessions on this server: at most %d", c.svc.cfg.MaxSessions))
		}
	}
}

func (c *conn) control(msg *streamsvc.DataMessage) {
	var op memberOp
	switch *msg.Action {
	case actJoin:
		op = opJoin
	case actLeave:
		op = opLeave
	case actPause:
		op = opPause
	case actResume:
		op = opResume
	default:
		c.refuse(msg, fmt.Sprintf("action %q is not a client action", *msg.Action))
		return
	}
	name := *msg.SessionID
	if op == opJoin {
		if _, it := c.joinSession(msg, false); it.op != opNone || it.msg != nil {
			c.reply(it)
		}
		return
	}
	cl := c.client
	cl.mu.Lock()
	if cl.conn != c {
		cl.mu.Unlock()
		return
	}
	var it outItem
	if m := cl.members[name]; m != nil {
		it = outItem{op: op, m: m}
		if op == opLeave {
			delete(cl.members, name) // its sender lets go of it when it applies the leave
		}
	}
	cl.mu.Unlock()
	if it.op == opNone && it.msg == nil {
		c.refuse(msg, "not a member of session "+name)
		return
	}
	c.reply(it)
	if c.svc.shared != nil {
		c.membershipsChanged()
	}
}

// join makes the client a member of msg's session, or moves its position
// there, and returns the membership (nil if refused) and what to queue: the
// change, or the refusal. full says the session limit refused a new
// session. implicit is a data message's live join. The position is fixed
// here, when the join is served: a seq beyond the session's last counts as
// its last, and a seq of another epoch means nothing here. Called with the
// client's lock held.
func (c *conn) join(msg *streamsvc.DataMessage, implicit bool) (_ *member, _ outItem, full bool) {
	cl := c.client
	name := *msg.SessionID
	if !c.ident.May(name) {
		return nil, refusal(msg, errPermissionDenied), false
	}
	m := cl.members[name]
	var s *session
	if m == nil {
		if len(cl.members) >= c.svc.cfg.MaxSessionsPerConnection {
			return nil, refusal(msg, fmt.Sprintf("too many sessions: at most %d per connection", c.svc.cfg.MaxSessionsPerConnection)), false
		}
		if s = c.svc.sessions.lock(name); s == nil {
			return nil, outItem{}, true
		}
		m = &member{client: cl, sess: s}
		s.members[m] = struct{}{}
		s.attach(c.svc.sessions, m, c)
		cl.members[name] = m
	} else {
		s = m.sess
		s.mu.Lock()
	}
	last := s.hist.last()
	it := outItem{op: opJoin, m: m, seq: last, last: last, epoch: s.epoch}
	switch {
	case implicit || msg.Seq == nil:
	case msg.Epoch != nil && *msg.Epoch != *s.epoch:
		it.lost = true // replay nothing
	default:
		it.seq = min(*msg.Seq, last)
	}
	if !m.active.Load() { // for the membership store, until the sender applies the join
		m.givenEpoch.Store(s.epoch)
		m.given.Store(it.seq)
	}
	s.mu.Unlock()
	return m, it, false
}

// refusal is the error reply to msg (nil when it could not be decoded).
func refusal(msg *streamsvc.DataMessage, reason string) outItem {
	if len(reason) > maxReasonLen { // validation errors quote the offending value
		reason = strings.ToValidUTF8(reason[:maxReasonLen], "") + "…"
	}
	reply := control(&actError, nil)
	reply.Reason = &reason
	if msg != nil {
		reply.ID, reply.SessionID = msg.ID, msg.SessionID
	}
	return outItem{msg: reply}
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}
