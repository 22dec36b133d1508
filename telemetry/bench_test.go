package telemetry

import (
	"context"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// BenchmarkPerMessage measures what the per-message path pays for metrics:
// one received and one sent message, and one delivery.
func BenchmarkPerMessage(b *testing.B) {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	defer mp.Shutdown(context.Background())
	m, err := New(mp, func() GaugeValues { return GaugeValues{} })
	if err != nil {
		b.Fatal(err)
	}
	tr := m.Transport("grpc")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tr.MessageReceived(64)
			tr.MessageSent(64)
			m.Delivered(100 * time.Microsecond)
		}
	})
}

func TestPerMessagePathDoesNotAllocate(t *testing.T) {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	defer mp.Shutdown(context.Background())
	m, err := New(mp, func() GaugeValues { return GaugeValues{} })
	if err != nil {
		t.Fatal(err)
	}
	tr := m.Transport("grpc")
	allocs := testing.AllocsPerRun(1000, func() {
		tr.MessageReceived(64)
		tr.MessageSent(64)
		m.Delivered(100 * time.Microsecond)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per message", allocs)
	}
}
