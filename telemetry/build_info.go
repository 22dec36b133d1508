package telemetry

import (
	"context"

	"github.com/streamhub/streamhub/internal/buildinfo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// BuildInfo is the name of the gauge that reports the running build: always
// 1, with the build's version, revision and go_version as attributes, so a
// dashboard can show which builds a fleet runs and join them to other
// series. The Prometheus exporter names it streamhub_build_info.
const BuildInfo = "streamhub.build_info"

// RegisterBuildInfo adds the BuildInfo gauge for build b to mp's meter.
func RegisterBuildInfo(mp metric.MeterProvider, b buildinfo.Info) error {
	meter := mp.Meter("github.com/streamhub/streamhub")
	g, err := meter.Int64ObservableGauge(BuildInfo, metric.WithDescription("The running build: always 1, described by its attributes."))
	if err != nil {
		return err
	}
	attrs := metric.WithAttributeSet(attribute.NewSet(
		attribute.String("version", b.Version),
		attribute.String("revision", b.RevisionOrUnknown()),
		attribute.String("go_version", b.GoVersion),
	))
	_, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(g, 1, attrs)
		return nil
	}, g)
	return err
}
