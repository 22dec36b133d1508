package telemetry

import (
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc/codes"
)

// Transport is one transport's view of the instruments, for its stream
// measurements (the monitoring interceptor's StreamMetrics, the WebSocket
// transport's) and its rate-limit waits. Stream durations and rate-limit
// waits carry the attribute transport=<name>. The message and byte counters
// do not: they sit on the per-message path, where an attribute set costs the
// SDK a hashed lookup per call (about 150ns, measured), twice per message
// and per delivery of a fan-out. Per-transport traffic is in the
// transports' own series (otelgrpc's, otelhttp's).
type Transport struct {
	m    *Metrics
	name string
	// waitAttrs is a slice built once: a variadic argument built per call
	// would escape, one allocation per wait.
	waitAttrs []metric.AddOption
	codeAttrs [codes.Unauthenticated + 1]metric.RecordOption // by gRPC code
}

// Transport returns the view for the transport called name ("grpc",
// "websocket"). Its series exist from this call on, at 0.
func (m *Metrics) Transport(name string) *Transport {
	tr := attribute.String("transport", name)
	t := &Transport{m: m, name: name, waitAttrs: []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(tr))}}
	for c := range t.codeAttrs {
		t.codeAttrs[c] = metric.WithAttributeSet(attribute.NewSet(tr, attribute.String("code", codes.Code(c).String())))
	}
	m.waits.Add(m.ctx, 0, t.waitAttrs...)
	return t
}

// MessageReceived counts a message read from a client and its encoded size.
func (t *Transport) MessageReceived(bytes int) { t.m.MessageReceived(bytes) }

// MessageSent counts a message written to a client and its encoded size.
func (t *Transport) MessageSent(bytes int) { t.m.MessageSent(bytes) }

// StreamEnded records a stream's lifetime with the transport and its final
// status code as attributes "transport" and "code".
func (t *Transport) StreamEnded(code codes.Code, lifetime time.Duration) {
	if int(code) < len(t.codeAttrs) {
		t.m.duration.Record(t.m.ctx, lifetime.Seconds(), t.codeAttrs[code])
		return
	}
	t.m.duration.Record(t.m.ctx, lifetime.Seconds(),
		metric.WithAttributes(attribute.String("transport", t.name), attribute.String("code", code.String())))
}

// RateLimitWait counts a received message that waited for a token.
func (t *Transport) RateLimitWait() { t.m.waits.Add(t.m.ctx, 1, t.waitAttrs...) }
