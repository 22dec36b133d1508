package telemetry

import (
	"context"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/grpc/codes"
)

func TestMetricsAndSummary(t *testing.T) {
	summary := NewSummary()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(summary.Reader()))
	defer mp.Shutdown(context.Background())
	m, err := New(mp, func() GaugeValues {
		return GaugeValues{Connections: 3, Sessions: 2, MemoryBudget: 1 << 30, MemoryUsed: 5}
	})
	if err != nil {
		t.Fatal(err)
	}
	m.MessageReceived(10)
	m.MessageReceived(5)
	m.MessageSent(7)
	m.SendFailed()
	m.ReceiveFailed()
	m.ReceiveFailed()
	m.Disconnected("slow_consumer")
	m.Disconnected("something_new")
	m.RateLimitWait()
	m.StreamEnded(codes.OK, 2*time.Second)
	m.Delivered(time.Millisecond)
	m.Replayed(3)
	m.RetainedEvicted()
	m.HistoryEvicted(4)

	line, err := summary.Line(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := "METRICS: conns=3, sessions=2, recv=2/15B, sent=1/7B, errs=(send:1, recv:2), disconnects=2, rate_limit_waits=1"
	if line != want {
		t.Fatalf("summary\n got %s\nwant %s", line, want)
	}

	var rm metricdata.ResourceMetrics
	if err := summary.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	histograms := map[string]uint64{}
	values := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			switch d := mt.Data.(type) {
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					histograms[mt.Name+"/"+mt.Unit] += p.Count
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					values[mt.Name+"/"+mt.Unit] += p.Value
				}
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					values[mt.Name+"/"+mt.Unit] += p.Value
				}
			}
		}
	}
	for name, want := range map[string]int64{
		MemoryBudget + "/By": 1 << 30, MemoryUsed + "/By": 5,
		ReplayedMessages + "/": 3, RetainedEvictions + "/": 1, HistoryEvictions + "/": 4,
	} {
		if values[name] != want {
			t.Errorf("%s = %d, want %d (all: %v)", name, values[name], want, values)
		}
	}
	if histograms[StreamDuration+"/s"] != 1 || histograms[DeliveryLatency+"/s"] != 1 {
		t.Fatalf("histograms: %v", histograms)
	}
}
