package streaming

import (
	"fmt"
	"runtime/debug"
	"time"

	"goa.design/clue/log"
)

// housekeeping is the housekeeper's view of one connection.
type housekeeping struct {
	recv     uint64    // received count at the last change
	recvAt   time.Time // when the client was last heard from
	probeAt  time.Time // when a health probe was sent; zero if none is out
	send     uint64    // send counter at the last change
	sendAt   time.Time // when the sender last started or finished a send
	overAt   time.Time // since when more than queue-size deliveries are pending; zero if not
	overFrom int64     // how many were pending then
}

// housekeep runs the service's periodic work in one goroutine: heartbeats,
// health probes, slow consumers, history expiry and membership expiry.
func (s *Service) housekeep() {
	defer s.wg.Done()
	tick := time.NewTicker(s.cfg.tick())
	defer tick.Stop()
	var conns []*conn
	for {
		select {
		case <-s.stop:
			return
		case now := <-tick.C:
			conns = s.tick(now, conns)
		}
	}
}

// tick does one round of housekeeping: it looks at every live stream, and
// at the sessions and retained clients whose time has come — what expires,
// not what exists. A panic is logged and the next round goes on.
func (s *Service) tick(now time.Time, conns []*conn) []*conn {
	defer func() {
		if r := recover(); r != nil {
			log.Error(s.logCtx, fmt.Errorf("panic: %v", r), log.KV{K: "msg", V: "housekeeping"}, log.KV{K: "stack", V: string(debug.Stack())})
		}
	}()
	conns = s.pool.snapshot(conns[:0])
	for _, c := range conns {
		if c.serving.Load() {
			s.check(c, now)
		}
	}
	clear(conns)
	s.sessions.expire(now, s.cfg.HistoryTTL)
	for _, cl := range s.pool.expire(now.Add(-s.cfg.SessionTTL)) {
		cl.forget(s.sessions)
	}
	return conns
}

// check looks at one connection's activity since the last tick.
func (s *Service) check(c *conn, now time.Time) {
	h := &c.hk
	if n := c.received.Load(); n != h.recv {
		h.recv, h.recvAt, h.probeAt = n, now, time.Time{}
	}
	switch {
	case h.probeAt.IsZero() && now.Sub(h.recvAt) >= s.cfg.MaxInactivity:
		if c.q.offer(outItem{msg: stamped(typeHealthCheck, now)}) {
			h.probeAt = now
		}
	case !h.probeAt.IsZero() && now.Sub(h.probeAt) >= s.cfg.ProbeTimeout:
		c.close(reasonInactive, nil)
	}

	if s.cfg.MaxStreamAge > 0 && now.Sub(c.opened) >= s.cfg.MaxStreamAge {
		c.close(reasonStreamAge, nil)
	}
	if c.ident != nil && !c.ident.Expires.IsZero() && !now.Before(c.ident.Expires) {
		c.close(reasonUnauthenticated, nil)
	}

	// A slow consumer is one that does not read, not one a burst got ahead
	// of: a send blocked for the send timeout; more than the byte bound
	// pending while a send is blocked (checked here and as deliveries are
	// counted); or more than queue-size deliveries or the byte bound
	// pending for a whole send timeout without the backlog going down — a
	// client that reads slower than the session's sustained rate. A backlog
	// that drains is a burst being read, however long it takes.
	over := c.pendingBytes.Load() > int64(s.cfg.MaxPendingBytes)
	switch pending := c.pending.Load(); {
	case pending <= int64(s.cfg.QueueSize) && !over:
		h.overAt = time.Time{}
	case h.overAt.IsZero():
		h.overAt, h.overFrom = now, pending
	case now.Sub(h.overAt) < s.cfg.SendTimeout:
	case pending < h.overFrom:
		h.overAt, h.overFrom = now, pending
	default:
		c.close(reasonSlowConsumer, nil)
	}
	n := c.sends.Load()
	switch {
	case n != h.send:
		h.send, h.sendAt = n, now
	case n%2 == 1 && (now.Sub(h.sendAt) >= s.cfg.SendTimeout || over):
		c.close(reasonSlowConsumer, nil)
		c.kill()
	case n%2 == 1:
		c.stuck.Store(true) // blocked since the last look: the client does not read
	case n%2 == 0 && now.Sub(h.sendAt) >= s.cfg.HeartbeatInterval:
		if c.q.offer(outItem{msg: stamped(typeHeartbeat, now)}) {
			h.sendAt = now
		}
	}
}
