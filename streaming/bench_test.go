package streaming

import (
	"context"
	"fmt"
	"testing"
	"time"

	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
)

// BenchmarkPublish measures publishing into a session with n active
// members: seq assignment, history append and the count and wake-up of
// each member's connection. The cursors are moved as a sender would,
// without the network.
func BenchmarkPublish(b *testing.B) {
	for _, n := range []int{1, 10, 100, 1000} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			svc := &Service{cfg: Config{MaxPendingBytes: 1 << 40}.withDefaults(), metrics: nopMetrics{}}
			svc.budget = &budget{limit: svc.cfg.MemoryBudget}
			r := newSessions(svc.cfg, svc.budget)
			s := r.lock("room")
			s.mu.Unlock()
			members := make([]*member, n)
			conns := make([]*conn, n)
			for i := range members {
				c := newConn(svc, fmt.Sprint("c", i), nil, context.Background(), "", time.Now())
				c.client = &client{id: c.id}
				m := &member{client: c.client, sess: s}
				s.mu.Lock()
				s.members[m] = struct{}{}
				s.attach(r, m, c)
				s.mu.Unlock()
				m.activate(c, 0)
				members[i], conns[i] = m, c
			}
			msg := &streamsvc.DataMessage{Type: typeData, SessionID: s.name, Data: make([]byte, 64)}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				_ = s.publish(r, conns[0], msg)
				if i%256 == 255 {
					for j, m := range members {
						sent := int64(0)
						for e := m.at.next.Load(); e != nil; e = e.next.Load() {
							m.at = e
							sent++
						}
						conns[j].sent(sent, 64*sent)
					}
				}
			}
		})
	}
}

// BenchmarkHistory measures appending to and positioning in a full history.
func BenchmarkHistory(b *testing.B) {
	h := newHistory(1000, 1<<30, nil)
	for range 1000 {
		h.append(&Entry{})
	}
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			h.append(&Entry{})
		}
	})
	b.Run("from", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			h.from(h.last() - 500)
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
