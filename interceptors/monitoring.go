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
		ctx, tally := m.Start(ss.Context())
		err := handler(srv, &monitoredStream{ServerStream: ss, ctx: ctx, tally: tally})
		tally.End(ctx, err)
		return err
	}
}

// Start begins measuring one stream of Method for a transport outside
// gRPC's interceptor chain (StreamHub's WebSocket transport): the stream's
// handler runs with the returned context, so that Annotate reaches its
// end-of-stream line, and the transport reports each message and the end
// to the returned tally.
func (m Monitoring) Start(ctx context.Context) (context.Context, *StreamTally) {
	t := &StreamTally{metrics: m.Metrics, method: m.Method, notes: &annotations{}, start: time.Now()}
	return context.WithValue(ctx, annotationsKey{}, t.notes), t
}

// StreamTally measures one stream: messages and bytes each way as they
// pass, lifetime and final status at the end. Received and Sent may be
// called from different goroutines.
type StreamTally struct {
	metrics StreamMetrics
	method  string
	notes   *annotations
	start   time.Time
	// Written by the one goroutine that receives (or sends), read at the end.
	received, receivedBytes, sent, sentBytes atomic.Int64
}

// Received counts one message read from the client and its encoded size.
func (t *StreamTally) Received(bytes int) {
	t.received.Add(1)
	t.receivedBytes.Add(int64(bytes))
	t.metrics.MessageReceived(bytes)
}

// Sent counts one message written to the client and its encoded size.
func (t *StreamTally) Sent(bytes int) {
	t.sent.Add(1)
	t.sentBytes.Add(int64(bytes))
	t.metrics.MessageSent(bytes)
}

// End records the stream's lifetime and final status (err as a gRPC status:
// nil is OK) and logs the end-of-stream line with ctx's logger: the
// handler's annotations, the peer if ctx has one, duration, counts, code.
func (t *StreamTally) End(ctx context.Context, err error) {
	lifetime := time.Since(t.start)
	st := status.Convert(err)
	t.metrics.StreamEnded(st.Code(), lifetime)

	kvs := []log.Fielder{
		log.KV{K: "msg", V: "stream ended"},
		log.KV{K: "method", V: t.method},
	}
	t.notes.mu.Lock()
	kvs = append(kvs, t.notes.kvs...)
	t.notes.mu.Unlock()
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		kvs = append(kvs, log.KV{K: "peer", V: p.Addr.String()})
	}
	kvs = append(kvs,
		log.KV{K: "duration", V: lifetime.String()},
		log.KV{K: "received", V: t.received.Load()}, log.KV{K: "received_bytes", V: t.receivedBytes.Load()},
		log.KV{K: "sent", V: t.sent.Load()}, log.KV{K: "sent_bytes", V: t.sentBytes.Load()},
		log.KV{K: "code", V: st.Code().String()})
	if err != nil {
		kvs = append(kvs, log.KV{K: "status", V: st.Message()})
	}
	log.Print(ctx, kvs...)
}

type monitoredStream struct {
	grpc.ServerStream
	ctx   context.Context
	tally *StreamTally
}

func (s *monitoredStream) Context() context.Context { return s.ctx }

func (s *monitoredStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	s.tally.Received(size(m))
	return nil
}

func (s *monitoredStream) SendMsg(m any) error {
	if err := s.ServerStream.SendMsg(m); err != nil {
		return err
	}
	s.tally.Sent(size(m))
	return nil
}

// size is a message's encoded size: a message sent already encoded says
// it; gRPC's own messages are protobuf.
func size(m any) int {
	switch m := m.(type) {
	case interface{ EncodedSize() int }:
		return m.EncodedSize()
	case proto.Message:
		return proto.Size(m)
	}
	return 0
}
