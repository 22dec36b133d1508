package telemetry

import (
	"context"
	"time"

	"github.com/streamhub/streamhub/engine"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// The engine's instrument names (SPEC §9). The Prometheus exporter names
// them streamhub_engine_operations_total{op,result} and
// streamhub_engine_latency_seconds{op}.
const (
	EngineOperations = "streamhub.engine.operations"
	EngineLatency    = "streamhub.engine.latency"
)

// engineOps are the operations an engine reports (engine.Op*), and
// engineResults the outcomes engine.Result names: their attribute sets are
// built once. An operation or result not listed is still recorded, at the
// cost of building its set on every call.
var (
	engineOps = []string{
		engine.OpPublish, engine.OpHistory, engine.OpSubscribe, engine.OpUnsubscribe, engine.OpRemove,
		engine.OpSaveMemberships, engine.OpLoadMemberships, engine.OpRetainMemberships,
		engine.OpKeepMemberships, engine.OpDropMemberships,
		engine.OpClaim, engine.OpRelease, engine.OpOwner, engine.OpHeartbeat, engine.OpAlive, engine.OpNotify,
	}
	engineResults = []string{"ok", "unavailable", "canceled", "closed", "fenced", "error"}
)

// engineSeriesAtStart are the results whose series exist from the start, at
// 0, for every operation: what a success rate and an "engine unavailable"
// alert are computed from. The rarer outcomes appear when they first occur.
var engineSeriesAtStart = []string{"ok", "unavailable"}

// engineMetrics records engine operations.
type engineMetrics struct {
	ctx        context.Context
	operations metric.Int64Counter
	latency    metric.Float64Histogram
	// Read-only once built, so safe for concurrent Observe calls.
	opResult map[[2]string]metric.AddOption // by {op, result}
	op       map[string]metric.RecordOption
}

// NewEngineObserver creates the engine's instruments on mp's meter and
// returns the engine.Observer that feeds them: each operation is counted by
// op and result (engine.Result of its error) and its duration recorded by
// op. The counter's series for every operation with results "ok" and
// "unavailable" exist from this call on, at 0.
func NewEngineObserver(mp metric.MeterProvider) (engine.Observer, error) {
	meter := mp.Meter("github.com/streamhub/streamhub")
	m := &engineMetrics{
		ctx:      context.Background(),
		opResult: make(map[[2]string]metric.AddOption, len(engineOps)*len(engineResults)),
		op:       make(map[string]metric.RecordOption, len(engineOps)),
	}
	var err error
	if m.operations, err = meter.Int64Counter(EngineOperations,
		metric.WithDescription("Engine operations (Redis round trips), by operation and result: ok, unavailable, canceled, closed, fenced, error.")); err != nil {
		return nil, err
	}
	// Redis answers in well under a millisecond nearby; the engine gives up
	// after its 2s timeout.
	if m.latency, err = meter.Float64Histogram(EngineLatency, metric.WithUnit("s"),
		metric.WithDescription("Duration of engine operations, by operation, failed ones included."),
		metric.WithExplicitBucketBoundaries(100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5, 5)); err != nil {
		return nil, err
	}
	for _, op := range engineOps {
		m.op[op] = metric.WithAttributeSet(attribute.NewSet(attribute.String("op", op)))
		for _, r := range engineResults {
			m.opResult[[2]string{op, r}] = metric.WithAttributeSet(attribute.NewSet(attribute.String("op", op), attribute.String("result", r)))
		}
		for _, r := range engineSeriesAtStart {
			m.operations.Add(m.ctx, 0, m.opResult[[2]string{op, r}])
		}
	}
	return m.observe, nil
}

// observe is the engine.Observer.
func (m *engineMetrics) observe(op string, err error, took time.Duration) {
	result := engine.Result(err)
	add, ok := m.opResult[[2]string{op, result}]
	if !ok {
		add = metric.WithAttributes(attribute.String("op", op), attribute.String("result", result))
	}
	m.operations.Add(m.ctx, 1, add)
	rec, ok := m.op[op]
	if !ok {
		rec = metric.WithAttributes(attribute.String("op", op))
	}
	m.latency.Record(m.ctx, took.Seconds(), rec)
}
