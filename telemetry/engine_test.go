package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/streamhub/streamhub/engine"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// TestEngineObserverSeries feeds the engine observer as an engine would and
// scrapes the Prometheus text the server serves on /metrics: the series
// carry the names dashboards use (SPEC §9), each operation is counted by op
// and result and timed by op, and the ok and unavailable series of every
// operation exist before any operation ran.
func TestEngineObserverSeries(t *testing.T) {
	registry := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(registry))
	if err != nil {
		t.Fatal(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	defer mp.Shutdown(context.Background())
	observe, err := NewEngineObserver(mp)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))
	defer srv.Close()

	before := scrapeEngine(t, srv.URL)
	for _, op := range engineOps {
		for _, r := range []string{"ok", "unavailable"} {
			key := fmt.Sprintf(`streamhub_engine_operations_total{op=%q,result=%q}`, op, r)
			if v, ok := before[key]; !ok || v != 0 {
				t.Errorf("%s = %v (present %v) before any operation, want 0", key, v, ok)
			}
		}
	}

	unavailable := fmt.Errorf("%w: redis 127.0.0.1:6379: connection refused", engine.ErrUnavailable)
	for _, call := range []struct {
		op  string
		err error
	}{
		{engine.OpPublish, nil},
		{engine.OpPublish, nil},
		{engine.OpPublish, unavailable},
		{engine.OpHistory, context.DeadlineExceeded},
		{engine.OpSaveMemberships, engine.ErrFenced},
		{engine.OpClaim, errors.New("ERR something Redis said")},
		{engine.OpNotify, engine.ErrClosed},
		{"rebalance", nil}, // an operation a newer engine may report
	} {
		observe(call.op, call.err, 3*time.Millisecond)
	}

	v := scrapeEngine(t, srv.URL)
	for key, want := range map[string]float64{
		`streamhub_engine_operations_total{op="publish",result="ok"}`:                2,
		`streamhub_engine_operations_total{op="publish",result="unavailable"}`:       1,
		`streamhub_engine_operations_total{op="history",result="canceled"}`:          1,
		`streamhub_engine_operations_total{op="history",result="ok"}`:                0,
		`streamhub_engine_operations_total{op="save_memberships",result="fenced"}`:   1,
		`streamhub_engine_operations_total{op="claim",result="error"}`:               1,
		`streamhub_engine_operations_total{op="notify",result="closed"}`:             1,
		`streamhub_engine_operations_total{op="rebalance",result="ok"}`:              1,
		`streamhub_engine_latency_seconds_count{op="publish"}`:                       3,
		`streamhub_engine_latency_seconds_count{op="history"}`:                       1,
		`streamhub_engine_latency_seconds_count{op="rebalance"}`:                     1,
		`streamhub_engine_latency_seconds_sum{op="publish"}`:                         0.009,
		`streamhub_engine_operations_total{op="subscribe",result="unavailable"}`:     0,
		`streamhub_engine_operations_total{op="keep_memberships",result="ok"}`:       0,
		`streamhub_engine_operations_total{op="retain_memberships",result="fenced"}`: -1, // absent
	} {
		got, ok := v[key]
		switch {
		case want < 0 && ok:
			t.Errorf("%s = %v, want no such series before it occurs", key, got)
		case want >= 0 && (!ok || !near(got, want)):
			t.Errorf("%s = %v (present %v), want %v", key, got, ok, want)
		}
	}
}

func near(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }

// scrapeEngine returns the engine's samples at url, keyed by series name
// and labels as written in PromQL; histograms give _count and _sum.
func scrapeEngine(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	v := map[string]float64{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			labels := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "op" || l.GetName() == "result" {
					if labels != "" {
						labels += ","
					}
					labels += fmt.Sprintf("%s=%q", l.GetName(), l.GetValue())
				}
			}
			if labels != "" {
				labels = "{" + labels + "}"
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				v[name+labels] += m.GetCounter().GetValue()
			case dto.MetricType_HISTOGRAM:
				v[name+"_count"+labels] += float64(m.GetHistogram().GetSampleCount())
				v[name+"_sum"+labels] += m.GetHistogram().GetSampleSum()
			}
		}
	}
	return v
}
