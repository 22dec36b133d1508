package telemetry

import (
	"context"
	"fmt"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"goa.design/clue/log"
)

// Summary writes the periodic METRICS line from the meter provider's own
// data, read through a manual reader registered on it.
type Summary struct {
	reader *sdkmetric.ManualReader
}

// NewSummary returns a Summary; pass Reader() to the meter provider.
func NewSummary() *Summary {
	return &Summary{reader: sdkmetric.NewManualReader()}
}

// Reader is the reader to register on the meter provider.
func (s *Summary) Reader() sdkmetric.Reader { return s.reader }

// Line collects the current values and formats the summary.
func (s *Summary) Line(ctx context.Context) (string, error) {
	var rm metricdata.ResourceMetrics
	if err := s.reader.Collect(ctx, &rm); err != nil {
		return "", err
	}
	v := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					v[m.Name] += p.Value
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					v[m.Name] += p.Value
				}
			}
		}
	}
	return fmt.Sprintf("METRICS: conns=%d, sessions=%d, recv=%d/%dB, sent=%d/%dB, errs=(send:%d, recv:%d), disconnects=%d, rate_limit_waits=%d",
		v[ConnectionsActive], v[SessionsActive],
		v[MessagesReceived], v[BytesReceived], v[MessagesSent], v[BytesSent],
		v[SendErrors], v[ReceiveErrors], v[Disconnects], v[RateLimitWaits]), nil
}

// Run logs the summary every interval until ctx ends.
func (s *Summary) Run(ctx context.Context, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			line, err := s.Line(ctx)
			if err != nil {
				log.Error(ctx, err, log.KV{K: "msg", V: "metrics summary"})
				continue
			}
			log.Print(ctx, log.KV{K: "msg", V: line})
		}
	}
}
