// Package telemetry holds StreamHub's OpenTelemetry instruments: the series
// of SPEC §7, fed by the streaming service and the gRPC interceptors, the
// engine's of SPEC §9, fed by its Observer, and the periodic summary log
// line.
package telemetry

import (
	"context"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc/codes"
)

// Instrument names. The Prometheus exporter turns dots into underscores,
// adds _total to counters and _seconds to histograms in seconds.
const (
	ConnectionsActive = "streamhub.connections.active"
	SessionsActive    = "streamhub.sessions.active"
	MemoryBudget      = "streamhub.memory.budget"
	MemoryUsed        = "streamhub.memory.used"
	HistoryEvictions  = "streamhub.history.evictions"
	MessagesReceived  = "streamhub.messages.received"
	MessagesSent      = "streamhub.messages.sent"
	BytesReceived     = "streamhub.bytes.received"
	BytesSent         = "streamhub.bytes.sent"
	SendErrors        = "streamhub.send.errors"
	ReceiveErrors     = "streamhub.receive.errors"
	Disconnects       = "streamhub.disconnects"
	RateLimitWaits    = "streamhub.rate_limit.waits"
	StreamDuration    = "streamhub.stream.duration"
	DeliveryLatency   = "streamhub.delivery.latency"
	ReplayedMessages  = "streamhub.replayed.messages"
	RetainedEvictions = "streamhub.retained.evictions"
)

// disconnectReasons are the reasons of SPEC §7, with their attribute sets
// built once.
var disconnectReasons = []string{"slow_consumer", "inactive", "replaced", "shutdown", "unauthenticated", "resource_exhausted"}

// Metrics records StreamHub's instruments. It serves as the streaming
// service's Metrics and the monitoring interceptor's StreamMetrics, and
// counts rate-limit waits.
type Metrics struct {
	ctx context.Context // instruments record without request context

	// The per-message counts are plain atomics, read by the collection:
	// an instrument's Add costs several times an atomic add, on every
	// message.
	received, sent, bytesReceived, bytesSent atomic.Int64
	sendErrors, receiveErrors, waits         metric.Int64Counter
	replayed, evictions, historyEvictions    metric.Int64Counter
	disconnects                              metric.Int64Counter
	duration, latency                        metric.Float64Histogram
	reasonAttrs                              map[string]metric.AddOption
	codeAttrs                                [codes.Unauthenticated + 1]metric.RecordOption // by gRPC code
}

// GaugeValues are the values of the gauges at one collection.
type GaugeValues struct {
	Connections, Sessions    int
	MemoryBudget, MemoryUsed int64 // bytes
}

// Gauges reports the gauges' current values.
type Gauges func() GaugeValues

// New creates the instruments on mp's "streamhub" meter. gauges is read at
// each collection.
func New(mp metric.MeterProvider, gauges Gauges) (*Metrics, error) {
	meter := mp.Meter("github.com/streamhub/streamhub")
	m := &Metrics{ctx: context.Background(), reasonAttrs: make(map[string]metric.AddOption, len(disconnectReasons))}
	var err error
	counter := func(name, desc string) metric.Int64Counter {
		if err != nil {
			return nil
		}
		var c metric.Int64Counter
		c, err = meter.Int64Counter(name, metric.WithDescription(desc))
		return c
	}
	m.sendErrors = counter(SendErrors, "Failed sends.")
	m.receiveErrors = counter(ReceiveErrors, "Failed receives.")
	m.disconnects = counter(Disconnects, "Streams ended by the server, by reason.")
	m.waits = counter(RateLimitWaits, "Received messages that had to wait for a rate-limit token.")
	m.replayed = counter(ReplayedMessages, "Messages sent from history: joins at a position, resumes, reconnects.")
	m.historyEvictions = counter(HistoryEvictions, "History entries evicted to keep within the memory budget.")
	m.evictions = counter(RetainedEvictions, "Retained state dropped to make room: retained clients beyond the bound, idle sessions beyond the session limit.")
	if err != nil {
		return nil, err
	}
	if m.duration, err = meter.Float64Histogram(StreamDuration, metric.WithUnit("s"),
		metric.WithDescription("Stream lifetimes."),
		metric.WithExplicitBucketBoundaries(0.1, 1, 10, 60, 300, 900, 3600, 4*3600, 24*3600)); err != nil {
		return nil, err
	}
	if m.latency, err = meter.Float64Histogram(DeliveryLatency, metric.WithUnit("s"),
		metric.WithDescription("Time from a data message's acceptance to its live send to a member; replays are not counted."),
		metric.WithExplicitBucketBoundaries(50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 1, 5)); err != nil {
		return nil, err
	}
	for _, r := range disconnectReasons {
		m.reasonAttrs[r] = metric.WithAttributeSet(attribute.NewSet(attribute.String("reason", r)))
		m.disconnects.Add(m.ctx, 0, m.reasonAttrs[r]) // every series exists from the start, at 0
	}
	// Rate-limit waits are counted by transport: each Transport view starts
	// its own series.
	for _, c := range []metric.Int64Counter{m.sendErrors, m.receiveErrors, m.replayed, m.evictions, m.historyEvictions} {
		c.Add(m.ctx, 0)
	}
	for c := range m.codeAttrs {
		m.codeAttrs[c] = metric.WithAttributeSet(attribute.NewSet(attribute.String("code", codes.Code(c).String())))
	}

	conns, err := meter.Int64ObservableGauge(ConnectionsActive, metric.WithDescription("Open streams."))
	if err != nil {
		return nil, err
	}
	sessions, err := meter.Int64ObservableGauge(SessionsActive, metric.WithDescription("Sessions that exist."))
	if err != nil {
		return nil, err
	}
	budget, err := meter.Int64ObservableGauge(MemoryBudget, metric.WithUnit("By"),
		metric.WithDescription("The memory budget: what the server may hold on clients' behalf."))
	if err != nil {
		return nil, err
	}
	used, err := meter.Int64ObservableGauge(MemoryUsed, metric.WithUnit("By"),
		metric.WithDescription("What the server holds on clients' behalf: history payloads and pending deliveries."))
	if err != nil {
		return nil, err
	}
	perMessage := []struct {
		name, desc string
		v          *atomic.Int64
	}{
		{MessagesReceived, "Messages read from clients.", &m.received},
		{MessagesSent, "Messages written to clients: deliveries, controls, heartbeats.", &m.sent},
		{BytesReceived, "Encoded bytes of the messages read from clients.", &m.bytesReceived},
		{BytesSent, "Encoded bytes of the messages written to clients.", &m.bytesSent},
	}
	counts := make([]metric.Observable, len(perMessage))
	for i, c := range perMessage {
		if counts[i], err = meter.Int64ObservableCounter(c.name, metric.WithDescription(c.desc)); err != nil {
			return nil, err
		}
	}
	if _, err := meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for i, c := range perMessage {
			o.ObserveInt64(counts[i].(metric.Int64Observable), c.v.Load())
		}
		return nil
	}, counts...); err != nil {
		return nil, err
	}
	if _, err := meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		v := gauges()
		o.ObserveInt64(conns, int64(v.Connections))
		o.ObserveInt64(sessions, int64(v.Sessions))
		o.ObserveInt64(budget, v.MemoryBudget)
		o.ObserveInt64(used, v.MemoryUsed)
		return nil
	}, conns, sessions, budget, used); err != nil {
		return nil, err
	}
	return m, nil
}

// MessageReceived counts a message read from a client and its encoded size.
func (m *Metrics) MessageReceived(bytes int) {
	m.received.Add(1)
	m.bytesReceived.Add(int64(bytes))
}

// MessageSent counts a message written to a client and its encoded size.
func (m *Metrics) MessageSent(bytes int) {
	m.sent.Add(1)
	m.bytesSent.Add(int64(bytes))
}

// StreamEnded records a stream's lifetime with its final status code as
// attribute "code".
func (m *Metrics) StreamEnded(code codes.Code, lifetime time.Duration) {
	if int(code) < len(m.codeAttrs) {
		m.duration.Record(m.ctx, lifetime.Seconds(), m.codeAttrs[code])
		return
	}
	m.duration.Record(m.ctx, lifetime.Seconds(), metric.WithAttributes(attribute.String("code", code.String())))
}

// Disconnected counts a stream the server ended, by reason.
func (m *Metrics) Disconnected(reason string) {
	attrs, ok := m.reasonAttrs[reason]
	if !ok {
		attrs = metric.WithAttributes(attribute.String("reason", reason))
	}
	m.disconnects.Add(m.ctx, 1, attrs)
}

// Delivered records the latency of one live delivery.
func (m *Metrics) Delivered(latency time.Duration) {
	m.latency.Record(m.ctx, latency.Seconds())
}

// Replayed counts n messages sent from history.
func (m *Metrics) Replayed(n int) { m.replayed.Add(m.ctx, int64(n)) }

// RetainedEvicted counts retained state dropped to make room.
func (m *Metrics) RetainedEvicted() { m.evictions.Add(m.ctx, 1) }

// HistoryEvicted counts n history entries evicted to keep within the
// memory budget.
func (m *Metrics) HistoryEvicted(n int) { m.historyEvictions.Add(m.ctx, int64(n)) }

// SendFailed counts a failed send.
func (m *Metrics) SendFailed() { m.sendErrors.Add(m.ctx, 1) }

// ReceiveFailed counts a failed receive.
func (m *Metrics) ReceiveFailed() { m.receiveErrors.Add(m.ctx, 1) }

// RateLimitWait counts a received message that waited for a token.
func (m *Metrics) RateLimitWait() { m.waits.Add(m.ctx, 1) }
