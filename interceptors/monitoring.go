package interceptors

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"goa.design/clue/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// StreamMetrics receives what Monitoring measures. Implementations must be
// cheap and safe for concurrent use: they sit on the per-message path.
type StreamMetrics interface {
	// MessageReceived and MessageSent count one message and its encoded size.
	MessageReceived(bytes int)
	MessageSent(bytes int)
	// StreamEnded records a stream's lifetime and final status.
	StreamEnded(code codes.Code, lifetime time.Duration)
}

// Monitoring measures each stream of one method: messages and bytes each
// way, lifetime and final status go to Metrics, and one log line per stream
// says how it ended, with what the handler added through Annotate (who the
// client was, say).
type Monitoring struct {
	// Method is the full method name to monitor.
	Method string
	// Metrics receives the measurements.
	Metrics StreamMetrics
}

type annotationsKey struct{}

// annotations are what a handler adds to its stream's end-of-stream line.
type annotations struct {
	mu  sync.Mutex
	kvs []log.Fielder
}

// Annotate adds key=value to the end-of-stream log line of the monitored
// stream ctx belongs to; for other contexts it does nothing.
func Annotate(ctx context.Context, key string, value any) {
	if a, ok := ctx.Value(annotationsKey{}).(*annotations); ok {
		a.mu.Lock()
		a.kvs = append(a.kvs, log.KV{K: key, V: value})
		a.mu.Unlock()
	}
}

// Stream returns the stream interceptor.
func (m Monitoring) Stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if info.FullMethod != m.Method {
			return handler(srv, ss)
		}
		notes := &annotations{}
		ctx := context.WithValue(ss.Context(), annotationsKey{}, notes)
		ms := &monitoredStream{ServerStream: ss, ctx: ctx, metrics: m.Metrics}
		start := time.Now()
		err := handler(srv, ms)
		lifetime := time.Since(start)
		st := status.Convert(err)
		m.Metrics.StreamEnded(st.Code(), lifetime)

		kvs := []log.Fielder{
			log.KV{K: "msg", V: "stream ended"},
			log.KV{K: "method", V: info.FullMethod},
		}
		notes.mu.Lock()
		kvs = append(kvs, notes.kvs...)
		notes.mu.Unlock()
		if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
			kvs = append(kvs, log.KV{K: "peer", V: p.Addr.String()})
		}
		kvs = append(kvs,
			log.KV{K: "duration", V: lifetime.String()},
			log.KV{K: "received", V: ms.received.Load()}, log.KV{K: "received_bytes", V: ms.receivedBytes.Load()},
			log.KV{K: "sent", V: ms.sent.Load()}, log.KV{K: "sent_bytes", V: ms.sentBytes.Load()},
			log.KV{K: "code", V: st.Code().String()})
		if err != nil {
			kvs = append(kvs, log.KV{K: "status", V: st.Message()})
		}
		log.Print(ctx, kvs...)
		return err
	}
}

type monitoredStream struct {
	grpc.ServerStream
	ctx     context.Context
	metrics StreamMetrics
	// Written by the one goroutine that receives (or sends), read at the end.
	received, receivedBytes, sent, sentBytes atomic.Int64
}

func (s *monitoredStream) Context() context.Context { return s.ctx }

func (s *monitoredStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	n := size(m)
	s.received.Add(1)
	s.receivedBytes.Add(int64(n))
	s.metrics.MessageReceived(n)
	return nil
}

func (s *monitoredStream) SendMsg(m any) error {
	if err := s.ServerStream.SendMsg(m); err != nil {
		return err
	}
	n := size(m)
	s.sent.Add(1)
	s.sentBytes.Add(int64(n))
	s.metrics.MessageSent(n)
	return nil
}

// size is a message's encoded size; gRPC's own messages are protobuf.
func size(m any) int {
	if pm, ok := m.(proto.Message); ok {
		return proto.Size(pm)
	}
	return 0
}
