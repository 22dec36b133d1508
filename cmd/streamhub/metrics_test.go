package main

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	"goa.design/clue/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// scrape returns the value of every sample at url by series name and
// reason label (if any), summed over other labels; histograms give _count.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	return scrapeLabel(t, url, "reason")
}

// scrapeLabel is scrape keyed by other labels, as PromQL writes them:
// series{label="value",other="value"}, in the order given.
func scrapeLabel(t *testing.T, url string, labels ...string) map[string]float64 {
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
			var pairs []string
			for _, label := range labels {
				for _, l := range m.GetLabel() {
					if l.GetName() == label {
						pairs = append(pairs, label+`="`+l.GetValue()+`"`)
					}
				}
			}
			key := name
			if len(pairs) > 0 {
				key += "{" + strings.Join(pairs, ",") + "}"
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				v[key] += m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				v[key] += m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				count := name + "_count" + strings.TrimPrefix(key, name)
				v[count] += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return v
}

// syncBuffer is a log output safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestMetricsAfterTraffic drives a publisher over its rate limit and a
// client that never reads into a slow-consumer disconnect, then reads
// /metrics and the summary log line.
func TestMetricsAfterTraffic(t *testing.T) {
	o := testOptions(t, "--rate-limit", "50", "--rate-burst", "5", "--queue-size", "4", "--send-timeout", "300ms", "--metrics-log-interval", "20ms")
	logs := &syncBuffer{}
	ctx, stop := context.WithCancel(log.Context(context.Background(), log.WithOutput(logs), log.WithFormat(log.FormatText)))
	defer stop()
	s, err := newServer(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.serve(ctx) }()
	defer func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	metricsURL := "http://" + s.adminAddr() + "/metrics"
	streamCtx, cancelStreams := context.WithCancel(context.Background())
	defer cancelStreams()

	stuckConn, err := grpc.NewClient(s.grpcAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer stuckConn.Close()
	stuck := openStream(t, streamCtx, stuckConn, "stuck")
	join, room := "join", "room"
	if err := stuck.Send(&streamsvc.DataMessage{Type: "control", Action: &join, SessionID: &room}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "stuck joined", func() bool { return scrape(t, metricsURL)["streamhub_sessions_active"] == 1 })

	pubConn, err := grpc.NewClient(s.grpcAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer pubConn.Close()
	pub := openStream(t, streamCtx, pubConn, "pub")
	const n = 20
	payload := []byte(strings.Repeat("x", 32<<10))
	for range n { // in step with its own deliveries, so only stuck falls behind
		if err := pub.Send(&streamsvc.DataMessage{Type: "data", SessionID: &room, Data: payload}); err != nil {
			t.Fatal(err)
		}
		for {
			m, err := pub.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if m.Type == "data" {
				break
			}
		}
	}
	eventually(t, "slow consumer counted", func() bool {
		return scrape(t, metricsURL)[`streamhub_disconnects_total{reason="slow_consumer"}`] == 1
	})
	eventually(t, "stuck stream ended", func() bool { return scrape(t, metricsURL)["streamhub_connections_active"] == 1 })

	// A burst well over --rate-burst, already buffered when the server reads
	// it: the reads past the burst wait for tokens.
	const burst = 20
	for range burst {
		if err := pub.Send(&streamsvc.DataMessage{Type: "heartbeat"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Send(&streamsvc.DataMessage{Type: "health_check"}); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := pub.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if m.Type == "health_check" {
			break
		}
	}

	v := scrape(t, metricsURL)
	has := func(series string) bool { _, ok := v[series]; return ok }
	for _, c := range []struct {
		series string
		ok     bool
	}{
		{"streamhub_connections_active", v["streamhub_connections_active"] == 1},
		{"streamhub_sessions_active", v["streamhub_sessions_active"] == 1},
		{"streamhub_messages_received_total", v["streamhub_messages_received_total"] == n+1+burst+1},
		{"streamhub_bytes_received_total", v["streamhub_bytes_received_total"] > n*32<<10},
		// pub: welcome, joined, n deliveries, health_check; stuck: welcome, joined, a delivery at least.
		{"streamhub_messages_sent_total", v["streamhub_messages_sent_total"] >= n+6},
		{"streamhub_bytes_sent_total", v["streamhub_bytes_sent_total"] > n*32<<10},
		{`streamhub_disconnects_total{reason="slow_consumer"}`, v[`streamhub_disconnects_total{reason="slow_consumer"}`] == 1},
		{"streamhub_rate_limit_waits_total", v["streamhub_rate_limit_waits_total"] >= 1},
		{"streamhub_stream_duration_seconds_count", v["streamhub_stream_duration_seconds_count"] == 1},
		{"streamhub_delivery_latency_seconds_count", v["streamhub_delivery_latency_seconds_count"] >= n+1},
		{"streamhub_replayed_messages_total", has("streamhub_replayed_messages_total")},
		{"streamhub_retained_evictions_total", has("streamhub_retained_evictions_total")},
		{"streamhub_send_errors_total", v["streamhub_send_errors_total"] == 0},
		{"streamhub_receive_errors_total", v["streamhub_receive_errors_total"] == 0},
		{"rpc_server_call_duration_seconds_count (otelgrpc)", v["rpc_server_call_duration_seconds_count"] >= 1},
	} {
		if !c.ok {
			t.Errorf("%s: unexpected value; scraped %v", c.series, v)
		}
	}
	eventually(t, "summary line", func() bool {
		return strings.Contains(logs.String(), "METRICS: conns=1, sessions=1, recv=42/")
	})
	cancelStreams()
}
