package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/streamhub/streamhub/engine"
	"github.com/streamhub/streamhub/internal/buildinfo"
	"github.com/streamhub/streamhub/telemetry"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/exemplar"
	"go.opentelemetry.io/otel/sdk/resource"
	"goa.design/clue/clue"
	"goa.design/clue/log"
)

// observability is the server's telemetry: the meter provider with its
// readers (Prometheus, the summary, OTLP when configured) and the
// instruments.
type observability struct {
	provider *sdkmetric.MeterProvider
	metrics  *telemetry.Metrics
	summary  *telemetry.Summary
	scrape   http.Handler // GET /metrics
	// engine feeds the engine's series; nil with --engine memory, which
	// has no engine operations to report.
	engine engine.Observer
}

// newObservability configures Clue and OpenTelemetry once for the process.
// The build is the service version of the telemetry resource and the
// streamhub_build_info gauge.
func newObservability(ctx context.Context, o *options, gauges telemetry.Gauges, build buildinfo.Info) (*observability, error) {
	registry := prometheus.NewRegistry()
	prom, err := otelprom.New(otelprom.WithRegisterer(registry))
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	ob := &observability{summary: telemetry.NewSummary(), scrape: promhttp.HandlerFor(registry, promhttp.HandlerOpts{})}
	readers := []sdkmetric.Option{sdkmetric.WithReader(prom), sdkmetric.WithReader(ob.summary.Reader())}
	if o.otlpEndpoint != "" {
		exp, err := otlpmetricgrpc.New(ctx, otlpmetricgrpc.WithEndpoint(o.otlpEndpoint), otlpmetricgrpc.WithInsecure())
		if err != nil {
			return nil, fmt.Errorf("OTLP exporter: %w", err)
		}
		readers = append(readers, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp)))
	}
	// Clue builds the propagators and error handler; the meter provider is
	// ours, with the readers above and the service's resource.
	cfg, err := clue.NewConfig(ctx, "streamhub", build.Version, nil, nil)
	if err != nil {
		return nil, err
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		attribute.String("service.name", "streamhub"), attribute.String("service.version", build.Version)))
	if err != nil {
		return nil, err
	}
	readers = append(readers, sdkmetric.WithResource(res))
	// No exemplars: StreamHub records no traces to link them to, and the
	// filter sits on the per-message path.
	readers = append(readers, sdkmetric.WithExemplarFilter(exemplar.AlwaysOffFilter))
	ob.provider = sdkmetric.NewMeterProvider(readers...)
	cfg.MeterProvider = ob.provider
	clue.ConfigureOpenTelemetry(ctx, cfg)
	if ob.metrics, err = telemetry.New(ob.provider, gauges); err != nil {
		return nil, errors.Join(err, ob.provider.Shutdown(ctx))
	}
	if err := telemetry.RegisterBuildInfo(ob.provider, build); err != nil {
		return nil, errors.Join(err, ob.provider.Shutdown(ctx))
	}
	if o.engine == engineRedis {
		if ob.engine, err = telemetry.NewEngineObserver(ob.provider); err != nil {
			return nil, errors.Join(err, ob.provider.Shutdown(ctx))
		}
	}
	return ob, nil
}

// shutdown flushes the exporters.
func (ob *observability) shutdown(ctx context.Context) {
	if err := ob.provider.Shutdown(ctx); err != nil {
		log.Error(ctx, err, log.KV{K: "msg", V: "metrics shutdown"})
	}
}
