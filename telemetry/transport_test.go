package telemetry

import (
	"context"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/grpc/codes"
)

// TestTransport: each transport's stream durations and rate-limit waits
// carry its name; messages and bytes count in the shared series.
func TestTransport(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	m, err := New(mp, func() GaugeValues { return GaugeValues{} })
	if err != nil {
		t.Fatal(err)
	}
	grpcSide, wsSide := m.Transport("grpc"), m.Transport("websocket")
	grpcSide.MessageReceived(10)
	wsSide.MessageReceived(5)
	wsSide.MessageSent(7)
	wsSide.RateLimitWait()
	grpcSide.StreamEnded(codes.OK, 2*time.Second)
	wsSide.StreamEnded(codes.Code(99), time.Second)

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	durations := map[string]uint64{}
	waits := map[string]int64{}
	bytesReceived := int64(0)
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			switch d := mt.Data.(type) {
			case metricdata.Histogram[float64]:
				if mt.Name != StreamDuration {
					continue
				}
				for _, p := range d.DataPoints {
					tr, _ := p.Attributes.Value("transport")
					code, _ := p.Attributes.Value("code")
					durations[tr.AsString()+"/"+code.AsString()] += p.Count
				}
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					switch mt.Name {
					case RateLimitWaits:
						tr, _ := p.Attributes.Value("transport")
						waits[tr.AsString()] += p.Value
					case BytesReceived:
						if p.Attributes.Len() != 0 {
							t.Errorf("bytes received with attributes %v", p.Attributes)
						}
						bytesReceived += p.Value
					}
				}
			}
		}
	}
	if durations["grpc/OK"] != 1 || durations["websocket/Code(99)"] != 1 || len(durations) != 2 {
		t.Errorf("stream durations: %v", durations)
	}
	if w, ok := waits["grpc"]; !ok || w != 0 || waits["websocket"] != 1 || len(waits) != 2 {
		t.Errorf("rate-limit waits: %v (every transport's series from the start, no unlabelled one)", waits)
	}
	if bytesReceived != 15 {
		t.Errorf("bytes received %d, want 15", bytesReceived)
	}
}
