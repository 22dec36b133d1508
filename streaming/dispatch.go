package streaming

import (
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
		c.push(outItem{msg: stamped(typeHealthCheck, time.Now())})
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
	if len(reason) > maxReasonLen { // validation errors quote the offending value
		reason = strings.ToValidUTF8(reason[:maxReasonLen], "") + "…"
	}
	reply := control(&actError, nil)
	reply.Reason = &reason
	if msg != nil {
		reply.ID, reply.SessionID = msg.ID, msg.SessionID
	}
	c.push(outItem{msg: reply})
}

func (c *conn) publish(msg *streamsvc.DataMessage) {
	if m := c.memberFor(msg); m != nil {
		m.sess.publish(c, msg)
	}
}

// memberFor returns the client's membership of msg's session, joining it
// live if needed, or nil if that was refused.
func (c *conn) memberFor(msg *streamsvc.DataMessage) *member {
	cl := c.client
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.conn != c {
		return nil
	}
	if m := cl.members[*msg.SessionID]; m != nil {
		return m
	}
	return c.joinLocked(msg, true)
}

func (c *conn) control(msg *streamsvc.DataMessage) {
	cl := c.client
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.conn != c {
		return
	}
	name := *msg.SessionID
	switch *msg.Action {
	case actJoin:
		c.joinLocked(msg, false)
		return
	case actLeave, actPause, actResume:
	default:
		c.refuse(msg, fmt.Sprintf("action %q is not a client action", *msg.Action))
		return
	}
	m := cl.members[name]
	if m == nil {
		c.refuse(msg, "not a member of session "+name)
		return
	}
	s := m.sess
	s.mu.Lock()
	defer s.mu.Unlock()
	switch *msg.Action {
	case actLeave:
		delete(cl.members, name)
		m.leave()
		c.push(outItem{msg: control(&actLeft, s.name)})
	case actPause:
		if m.state != statePaused {
			m.state = statePaused
			m.gen++
		}
		c.push(outItem{msg: control(&actPaused, s.name)})
	case actResume:
		if m.state != statePaused {
			reply := control(&actResumed, s.name)
			reply.Seq, reply.Recovered = ptr(s.hist.Last()), ptr(true)
			c.push(outItem{msg: reply})
			return
		}
		m.state = stateReplaying
		m.gen++
		c.push(outItem{m: m, start: &replayStart{gen: m.gen, action: &actResumed, fromSent: true}})
	}
}

// joinLocked makes the client a member of msg's session, or restarts its
// membership there. implicit is a data message's live join. It returns nil
// when the join was refused. Called with the client's lock held.
func (c *conn) joinLocked(msg *streamsvc.DataMessage, implicit bool) *member {
	cl := c.client
	name := *msg.SessionID
	if !c.ident.May(name) {
		c.refuse(msg, errPermissionDenied)
		return nil
	}
	m := cl.members[name]
	if m == nil {
		if len(cl.members) >= c.svc.cfg.MaxSessionsPerConnection {
			c.refuse(msg, fmt.Sprintf("too many sessions: at most %d per connection", c.svc.cfg.MaxSessionsPerConnection))
			return nil
		}
		s := c.svc.sessions.lock(name)
		if s == nil {
			c.refuse(msg, fmt.Sprintf("too many sessions on this server: at most %d", c.svc.cfg.MaxSessions))
			return nil
		}
		m = &member{client: cl, sess: s}
		s.members[cl.id] = m
		cl.members[name] = m
	} else {
		m.sess.mu.Lock()
	}
	s := m.sess
	defer s.mu.Unlock()
	m.conn = c
	m.gen++
	if implicit || msg.Seq == nil {
		last := s.hist.Last()
		m.state = stateLive
		m.sent.Store(last)
		reply := control(&actJoined, s.name)
		reply.Seq, reply.Epoch, reply.Recovered = &last, s.epoch, ptr(true) // nothing was asked for, nothing is missing
		c.push(outItem{msg: reply})
		return m
	}
	m.state = stateReplaying
	c.push(outItem{m: m, start: &replayStart{gen: m.gen, action: &actJoined, from: *msg.Seq, epoch: msg.Epoch}})
	return m
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}
