package telemetry

import (
	"context"
	"testing"

	"github.com/streamhub/streamhub/internal/buildinfo"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

func TestBuildInfo(t *testing.T) {
	for _, tc := range []struct {
		name         string
		build        buildinfo.Info
		wantRevision string
	}{
		{"stamped", buildinfo.Info{Version: "v1.2.0", Revision: "4f2a9c1e", GoVersion: "go1.27.3"}, "4f2a9c1e"},
		{"unstamped", buildinfo.Info{Version: "(devel)", GoVersion: "go1.27.3"}, "unknown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reader := sdkmetric.NewManualReader()
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
			defer mp.Shutdown(context.Background())
			if err := RegisterBuildInfo(mp, tc.build); err != nil {
				t.Fatal(err)
			}
			var rm metricdata.ResourceMetrics
			if err := reader.Collect(context.Background(), &rm); err != nil {
				t.Fatal(err)
			}
			var points []metricdata.DataPoint[int64]
			for _, sm := range rm.ScopeMetrics {
				for _, m := range sm.Metrics {
					if m.Name == BuildInfo {
						points = append(points, m.Data.(metricdata.Gauge[int64]).DataPoints...)
					}
				}
			}
			if len(points) != 1 || points[0].Value != 1 {
				t.Fatalf("%s points = %+v, want one of value 1", BuildInfo, points)
			}
			want := attribute.NewSet(attribute.String("version", tc.build.Version),
				attribute.String("revision", tc.wantRevision), attribute.String("go_version", "go1.27.3"))
			if !points[0].Attributes.Equals(&want) {
				t.Errorf("attributes = %v, want %v", points[0].Attributes.ToSlice(), want.ToSlice())
			}
		})
	}
}
