package faultproxy

import (
	"errors"
	"io"
	"net"
	"sync"
)

// link is one proxied connection: the client the proxy accepted and the
// connection it dialed to the target.
type link struct {
	client, server *net.TCPConn
	done           chan struct{} // closed by teardown, to free pumps waiting out a stall
	once           sync.Once
}

// teardown closes both sides, with an RST if abort is set, and reports
// whether this call was the one that did it.
func (l *link) teardown(abort bool) (first bool) {
	l.once.Do(func() {
		first = true
		close(l.done)
		closeConn(l.client, abort)
		closeConn(l.server, abort)
	})
	return first
}

// pump copies src to dst until src ends or the link is torn down.
func (p *Proxy) pump(l *link, dst, src *net.TCPConn) {
	buf := make([]byte, 32<<10) // all a stalled direction holds in the proxy; the rest stays in the kernel
	for {
		n, err := src.Read(buf)
		// Wait out a stall before acting on anything the read returned, so bytes,
		// a half-close and a reset are held in order; not reading meanwhile
		// leaves later bytes in the kernel to fill the window and block the sender.
		if !p.flowing(l.done) {
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				l.teardown(true)
				return
			}
		}
		switch {
		case errors.Is(err, io.EOF):
			// Pass the half-close on; the other direction may still be busy.
			if cerr := dst.CloseWrite(); cerr != nil {
				l.teardown(true)
			}
			return
		case err != nil:
			// A reset (or our own teardown) on one side becomes a reset on
			// the other, so neither peer mistakes it for a clean end.
			l.teardown(true)
			return
		}
	}
}

// closeConn closes c, with an RST instead of a FIN if abort is set:
// SetLinger(0) makes Close discard unsent data and abort the connection.
// Errors are ignored because they only say c was closed already.
func closeConn(c *net.TCPConn, abort bool) {
	if abort {
		_ = c.SetLinger(0)
	}
	_ = c.Close()
}
