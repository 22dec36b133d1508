package streaming

import (
	"fmt"
	"testing"
	"time"

	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
)

// BenchmarkPublish measures publishing into a session with n live
// members: seq assignment, history append and the push onto each member's
// queue. The queues are drained as a sender would, without the network.
func BenchmarkPublish(b *testing.B) {
	for _, n := range []int{1, 10, 100, 1000} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			svc := &Service{cfg: Config{}.withDefaults(), metrics: nopMetrics{}}
			s := newSessions(NewMemoryHistory(1000, 1<<30), 0).create("room")
			conns := make([]*conn, n)
			for i := range conns {
				c := newConn(svc, fmt.Sprint("c", i), nil, nil, "", time.Now())
				c.client = &client{id: c.id}
				s.members[c.id] = &member{client: c.client, sess: s, conn: c, state: stateLive}
				conns[i] = c
			}
			msg := &streamsvc.DataMessage{Type: typeData, SessionID: s.name, Data: make([]byte, 64)}
			var batch []outItem
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				s.publish(conns[0], msg)
				if i%256 == 255 {
					for _, c := range conns {
						batch = c.q.take(batch[:0])
						c.q.sent(len(batch), 64*len(batch))
						clear(batch)
					}
				}
			}
		})
	}
}

// BenchmarkHistory measures appending to and reading from a full history.
func BenchmarkHistory(b *testing.B) {
	h := NewMemoryHistory(1000, 1<<30)("room")
	for range 1000 {
		h.Append(&Entry{})
	}
	buf := make([]*Entry, replayBatch)
	b.Run("append", func(b *testing.B) {
		e := &Entry{}
		b.ReportAllocs()
		for range b.N {
			h.Append(e)
		}
	})
	b.Run("read", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			h.Read(h.Last()-500, buf)
		}
	})
}

// BenchmarkEcho measures the whole per-message path over loopback gRPC: a
// client publishes to its own session and waits for the delivery.
func BenchmarkEcho(b *testing.B) {
	for _, size := range []int{64, 1024} {
		b.Run(fmt.Sprintf("bytes=%d", size), func(b *testing.B) {
			ts := startServer(b, Config{})
			c := ts.openOnB(b, "bench")
			c.welcome()
			c.join("room")
			msg := &streamsvc.DataMessage{Type: typeData, SessionID: ptr("room"), Data: make([]byte, size)}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				c.send(msg)
				c.expect(typeData, "")
			}
		})
	}
}
