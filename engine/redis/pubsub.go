package redis

import (
	"context"
	"fmt"
	"hash/maphash"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/streamhub/streamhub/engine"
)

// subscribeBatch is how many channels one SUBSCRIBE names when resubscribing.
const subscribeBatch = 512

// Subscribe implements engine.Engine. It fails with ErrUnavailable while the
// Pub/Sub connection is down; the sessions it added are then not subscribed.
func (e *Engine) Subscribe(ctx context.Context, sessions ...string) (err error) {
	defer e.observer.Done(engine.OpSubscribe, time.Now(), &err)
	if err := e.check(ctx); err != nil {
		return err
	}
	e.subMu.Lock()
	defer e.subMu.Unlock()
	e.mu.Lock()
	var added []string
	for _, s := range sessions {
		if _, ok := e.subs[s]; !ok {
			e.subs[s] = struct{}{}
			added = append(added, s)
		}
	}
	conn := e.conn
	e.mu.Unlock()
	if len(added) == 0 {
		return nil
	}
	if conn == nil {
		err = fmt.Errorf("%w: redis subscribe: the Pub/Sub connection is down", engine.ErrUnavailable)
	} else if derr := conn.Do(ctx, conn.B().Subscribe().Channel(e.channels(added)...).Build()).Error(); derr != nil {
		err = e.fail(ctx, "subscribe", derr)
	}
	if err != nil {
		e.mu.Lock()
		for _, s := range added {
			delete(e.subs, s)
		}
		e.mu.Unlock()
	}
	return err
}

// Unsubscribe implements engine.Engine. The sessions stop being delivered
// at once, even when telling Redis fails (the error is still returned).
func (e *Engine) Unsubscribe(ctx context.Context, sessions ...string) (err error) {
	defer e.observer.Done(engine.OpUnsubscribe, time.Now(), &err)
	if err := e.check(ctx); err != nil {
		return err
	}
	e.subMu.Lock()
	defer e.subMu.Unlock()
	e.mu.Lock()
	var removed []string
	for _, s := range sessions {
		if _, ok := e.subs[s]; ok {
			delete(e.subs, s)
			removed = append(removed, s)
		}
	}
	conn := e.conn
	e.mu.Unlock()
	if len(removed) == 0 || conn == nil { // a dead connection subscribes nothing
		return nil
	}
	if err := conn.Do(ctx, conn.B().Unsubscribe().Channel(e.channels(removed)...).Build()).Error(); err != nil {
		return e.fail(ctx, "unsubscribe", err)
	}
	return nil
}

func (e *Engine) channels(sessions []string) []string {
	chs := make([]string, len(sessions))
	for i, s := range sessions {
		chs[i] = e.channel(s)
	}
	return chs
}

// runPubSub keeps a Pub/Sub connection up until Close, subscribing every
// subscribed session on each new connection. It closes up once the first
// connection is ready, and calls HandleResync after each later one.
func (e *Engine) runPubSub(up chan<- struct{}) {
	defer e.wg.Done()
	backoff := 50 * time.Millisecond
	first := true
	for e.ctx.Err() == nil {
		if e.connectOnce(func() {
			if first {
				first = false
				close(up)
			} else {
				e.handler.HandleResync()
			}
			backoff = 50 * time.Millisecond
		}) {
			continue // it was up: reconnect at once
		}
		t := time.NewTimer(backoff)
		select {
		case <-e.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, time.Second)
	}
}

// connectOnce opens a Pub/Sub connection, subscribes, calls ready and serves
// the connection until it breaks or the engine closes. It reports whether
// the connection got ready.
func (e *Engine) connectOnce(ready func()) bool {
	conn, release := e.client.Dedicate()
	defer release()
	defer conn.Close()
	broken := conn.SetPubSubHooks(rueidis.PubSubHooks{OnMessage: e.dispatch})
	if !e.resubscribe(conn) {
		return false
	}
	ready()
	for {
		select {
		case <-e.ctx.Done():
		case <-broken:
		case <-e.lost:
			e.handler.HandleResync()
			continue
		}
		break
	}
	e.mu.Lock()
	if e.conn == conn {
		e.conn = nil
	}
	e.mu.Unlock()
	return true
}

// resubscribe subscribes conn to the control channel (so that an instance
// with no sessions still holds a connection whose loss it notices), to the
// instance's notify channel and to every subscribed session, and makes conn the one Subscribe uses.
func (e *Engine) resubscribe(conn rueidis.DedicatedClient) bool {
	e.subMu.Lock()
	defer e.subMu.Unlock()
	ctx, cancel := context.WithTimeout(e.ctx, e.timeout)
	defer cancel()
	own := []string{e.prefix + ":ctl"}
	if e.notifyCh != "" {
		own = append(own, e.notifyCh)
	}
	if conn.Do(ctx, conn.B().Subscribe().Channel(own...).Build()).Error() != nil {
		return false
	}
	e.mu.Lock()
	sessions := make([]string, 0, len(e.subs))
	for s := range e.subs {
		sessions = append(sessions, s)
	}
	e.mu.Unlock()
	for len(sessions) > 0 {
		n := min(len(sessions), subscribeBatch)
		if conn.Do(ctx, conn.B().Subscribe().Channel(e.channels(sessions[:n])...).Build()).Error() != nil {
			return false
		}
		sessions = sessions[n:]
	}
	e.mu.Lock()
	e.conn = conn
	e.mu.Unlock()
	return true
}

// dispatch runs on the connection's reader: it must not block, or Redis
// replies on the connection stall. A session always goes to the same
// worker, which keeps its order; when that worker's queue is full the entry
// is dropped and a resync is asked for. Notify messages go through the
// workers too.
func (e *Engine) dispatch(m rueidis.PubSubMessage) {
	key, ok := e.sessionOf(m.Channel)
	if !ok {
		if m.Channel != e.notifyCh || e.notifyCh == "" {
			return
		}
		key = m.Message // a notify: spread by client
	}
	q := e.queue[maphash.String(e.seed, key)%uint64(len(e.queue))]
	select {
	case q <- m:
	default:
		select {
		case e.lost <- struct{}{}:
		default:
		}
	}
}

// work hands one queue's entries to the Handler, for sessions still
// subscribed.
func (e *Engine) work(q <-chan rueidis.PubSubMessage) {
	defer e.wg.Done()
	for {
		select {
		case <-e.ctx.Done():
			return
		case m := <-q:
			if m.Channel == e.notifyCh && e.notifyCh != "" {
				e.handleNotify(m)
				continue
			}
			session, _ := e.sessionOf(m.Channel)
			e.mu.RLock()
			_, subscribed := e.subs[session]
			e.mu.RUnlock()
			if !subscribed {
				continue
			}
			if ent, err := decodeEntry(m.Message); err == nil {
				e.handler.HandleEntry(session, ent)
			}
		}
	}
}

// decodeEntry reads what the publish script sends:
// seq:accepted:epoch:len(client id):len(id):<client id><id><data>.
func decodeEntry(msg string) (engine.Entry, error) {
	var head [5]string
	rest := msg
	for i := range head {
		var ok bool
		if head[i], rest, ok = strings.Cut(rest, ":"); !ok {
			return engine.Entry{}, fmt.Errorf("engine redis: malformed entry")
		}
	}
	seq, err1 := strconv.ParseUint(head[0], 10, 64)
	accepted, err2 := strconv.ParseInt(head[1], 10, 64)
	clen, err3 := strconv.Atoi(head[3])
	ilen, err4 := strconv.Atoi(head[4])
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil || clen < 0 || ilen < 0 || clen+ilen > len(rest) {
		return engine.Entry{}, fmt.Errorf("engine redis: malformed entry")
	}
	p := engine.Publication{ClientID: rest[:clen], ID: rest[clen : clen+ilen]}
	if d := rest[clen+ilen:]; d != "" {
		p.Data = []byte(d)
	}
	return engine.Entry{Seq: seq, Epoch: head[2], Accepted: time.UnixMilli(accepted), Publication: p}, nil
}
