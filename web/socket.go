package web

import (
	"errors"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

type socketKey struct{}

// errEnded is what a stream's Send and Recv get once the stream has ended
// and the socket belongs to its closing handshake.
var errEnded = errors.New("web: stream ended")

// socket is one stream request's connection: upgraded by the stream's
// first Send or Recv (from the service's goroutines), closed by the
// endpoint once the service is done with it. Until the endpoint ends the
// stream, the generated handler owns the response; the socket makes sure
// that no upgrade starts after that.
//
// Reads: gorilla allows one reader at a time. The service's receiver reads
// until the closing handshake starts; from then on the handshake reads,
// once the receiver is out of its read.
type socket struct {
	pingInterval, pongTimeout time.Duration

	mu         sync.Mutex // guards the fields below
	conn       *websocket.Conn
	ended      bool          // the endpoint returned: no upgrade from now on
	failed     bool          // the upgrade failed and answered the request itself
	closing    bool          // the closing handshake owns the reads
	reading    bool          // the service's receiver is in a read
	idle       chan struct{} // closed when that read ends, once closing
	readFailed bool          // a read failed: nothing more can be read
	ka         *keepalive
}

// upgrade runs dial, which upgrades the connection and returns the socket,
// unless the stream has ended.
func (k *socket) upgrade(dial func() (*websocket.Conn, error)) (*websocket.Conn, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.ended {
		return nil, errEnded
	}
	conn, err := dial()
	if err != nil {
		k.failed = true // gorilla answered with an HTTP error
		return nil, err
	}
	k.conn = conn
	k.extendRead()
	conn.SetPongHandler(func(string) error {
		k.extendRead()
		return nil
	})
	k.ka = startKeepalive(conn, k.pingInterval, k.pongTimeout)
	return conn, nil
}

// extendRead gives the client another ping interval and pong timeout to
// send something. A dead peer's read then fails instead of blocking
// forever. conn's deadline setters are safe for concurrent use.
func (k *socket) extendRead() {
	if k.conn != nil {
		_ = k.conn.SetReadDeadline(time.Now().Add(k.pingInterval + k.pongTimeout))
	}
}

// startRead is called by the stream before it reads; false means the
// closing handshake owns the reads and the stream must not read.
func (k *socket) startRead() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closing {
		return false
	}
	k.reading = true
	k.extendRead()
	return true
}

// endRead is called by the stream after a read; failed says the socket can
// be read no more (the client's close came, or the connection broke).
func (k *socket) endRead(failed bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.reading = false
	k.readFailed = k.readFailed || failed
	if k.idle != nil {
		close(k.idle)
		k.idle = nil
	}
}

// end marks the stream as ended: no upgrade starts from now on. It returns
// the socket, if the request was upgraded, and whether a failed upgrade
// has already answered the request.
func (k *socket) end() (conn *websocket.Conn, failed bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.ended = true
	return k.conn, k.failed
}

// close runs the closing handshake after end: the close frame with code
// and text (unless the client's close came first: gorilla answered it),
// then what the client still sends up to its close frame, and the TCP
// connection last — closing it with unread data would reset it, and the
// client could lose the close frame. timeout bounds it all.
func (k *socket) close(code int, text string, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	k.ka.stop()
	k.mu.Lock()
	readFailed := k.readFailed
	k.mu.Unlock()
	if !readFailed {
		_ = k.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), deadline)
	}

	k.mu.Lock()
	k.closing = true
	var idle chan struct{}
	if k.reading {
		k.idle = make(chan struct{})
		idle = k.idle
	}
	k.mu.Unlock()
	if idle != nil {
		t := time.NewTimer(time.Until(deadline))
		select {
		case <-idle:
		case <-t.C:
		}
		t.Stop()
	}
	k.mu.Lock()
	drain := !k.readFailed && !k.reading
	k.mu.Unlock()
	if drain {
		_ = k.conn.SetReadDeadline(deadline)
		for {
			if _, _, err := k.conn.NextReader(); err != nil {
				break
			}
		}
	}
	_ = k.conn.Close()
	k.ka.wait()
}

// keepalive pings a socket every interval: browsers and WebSocket
// libraries answer on their own, and the answer extends the read deadline.
// It runs on a timer, so an idle socket costs no goroutine.
type keepalive struct {
	conn              *websocket.Conn
	interval, timeout time.Duration

	mu      sync.Mutex // guards timer and stopped
	timer   *time.Timer
	stopped bool
	pinging sync.WaitGroup // a ping being written
}

func startKeepalive(conn *websocket.Conn, interval, timeout time.Duration) *keepalive {
	ka := &keepalive{conn: conn, interval: interval, timeout: timeout}
	ka.timer = time.AfterFunc(interval, ka.ping)
	return ka
}

func (ka *keepalive) ping() {
	ka.mu.Lock()
	if ka.stopped {
		ka.mu.Unlock()
		return
	}
	ka.pinging.Add(1)
	ka.mu.Unlock()
	defer ka.pinging.Done()
	// A ping that cannot be written in time (a send in progress holds the
	// socket) is skipped: a client that does not read is the service's send
	// timeout's business, a dead one the read deadline's.
	_ = ka.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(ka.timeout))
	ka.mu.Lock()
	if !ka.stopped {
		ka.timer.Reset(ka.interval)
	}
	ka.mu.Unlock()
}

// stop ends the pings; a ping being written may still finish (wait).
func (ka *keepalive) stop() {
	ka.mu.Lock()
	ka.stopped = true
	ka.timer.Stop()
	ka.mu.Unlock()
}

// wait returns when no ping is being written; call it after stop and after
// closing the connection, which ends a blocked write.
func (ka *keepalive) wait() { ka.pinging.Wait() }
