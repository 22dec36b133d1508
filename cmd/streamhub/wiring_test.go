package main

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"

	streamsvcc "github.com/streamhub/streamhub/gen/grpc/stream_service/client"
	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	"goa.design/clue/log"
	goa "goa.design/goa/v3/pkg"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// startLogged runs the server as main does, logging into the returned
// buffer, until the test ends.
func startLogged(t *testing.T, args ...string) (*server, *syncBuffer) {
	t.Helper()
	return startServer(t, testOptions(t, args...), nil)
}

// startServer is startLogged with parsed options; before, when not nil, is
// given the server between newServer and serve.
func startServer(t *testing.T, o *options, before func(*server)) (*server, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	opts := []log.LogOption{log.WithOutput(logs), log.WithFormat(log.FormatText)}
	if o.debug {
		opts = append(opts, log.WithDebug())
	}
	ctx, stop := context.WithCancel(log.Context(context.Background(), opts...))
	s, err := newServer(ctx, o)
	if err != nil {
		stop()
		t.Fatal(err)
	}
	if before != nil {
		before(s)
	}
	served := make(chan error, 1)
	go func() { served <- s.serve(ctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return s, logs
}

func dialPlain(t *testing.T, s *server) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(s.grpcAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// TestEverySeriesFromTheStart: dashboards see 0, not a missing series.
func TestEverySeriesFromTheStart(t *testing.T) {
	s := startMain(t)
	v := scrape(t, "http://"+s.adminAddr()+"/metrics")
	for _, series := range []string{
		"streamhub_connections_active", "streamhub_sessions_active",
		"streamhub_messages_received_total", "streamhub_messages_sent_total",
		"streamhub_bytes_received_total", "streamhub_bytes_sent_total",
		"streamhub_send_errors_total", "streamhub_receive_errors_total", "streamhub_rate_limit_waits_total",
		`streamhub_disconnects_total{reason="slow_consumer"}`, `streamhub_disconnects_total{reason="inactive"}`,
		`streamhub_disconnects_total{reason="replaced"}`, `streamhub_disconnects_total{reason="shutdown"}`,
		`streamhub_disconnects_total{reason="unauthenticated"}`, `streamhub_disconnects_total{reason="resource_exhausted"}`,
	} {
		if value, ok := v[series]; !ok || value != 0 {
			t.Errorf("%s = %v (present %v), want 0", series, value, ok)
		}
	}
}

// TestMessageAtTheSizeLimitIsDelivered: a message the server accepted fits
// going out, although the delivery adds seq, epoch, sender and timestamp.
func TestMessageAtTheSizeLimitIsDelivered(t *testing.T) {
	const limit = 64 << 10
	s := startMain(t, "--max-message-size", "64KiB")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cc := dialPlain(t, s)
	a := openStream(t, ctx, cc, strings.Repeat("a", 128))
	b := openStream(t, ctx, cc, strings.Repeat("b", 128))
	room := strings.Repeat("r", 128)
	join := "join"
	if err := b.Send(&streamsvc.DataMessage{Type: "control", Action: &join, SessionID: &room}); err != nil {
		t.Fatal(err)
	}
	if m, err := b.Recv(); err != nil || *m.Action != "joined" {
		t.Fatalf("join: %v", err)
	}
	id := strings.Repeat("i", 128)
	// The request's encoding is just under the limit.
	data := make([]byte, limit-len(room)-len(id)-30)
	if err := a.Send(&streamsvc.DataMessage{Type: "data", SessionID: &room, ID: &id, Data: data}); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := b.Recv()
		if err != nil {
			t.Fatalf("member's stream ended: %v", err)
		}
		if m.Type == "data" {
			if len(m.Data) != len(data) {
				t.Fatalf("delivered %d bytes, want %d", len(m.Data), len(data))
			}
			return
		}
	}
}

// TestConnectionLimitOnOneClientConn: streams sharing one HTTP/2
// connection meet the service's limit, not gRPC's stream quota.
func TestConnectionLimitOnOneClientConn(t *testing.T) {
	s := startMain(t, "--max-connections", "2")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout) // gRPC would queue the third forever
	defer cancel()
	cc := dialPlain(t, s)
	openStream(t, ctx, cc, "a")
	openStream(t, ctx, cc, "b")
	_, err := tryStreamOn(ctx, cc, "c")
	if se, ok := err.(*goa.ServiceError); !ok || se.Name != "resource_exhausted" {
		t.Fatalf("third stream: %v, want resource_exhausted", err)
	}
}

// TestLogs: --debug logs control messages, never data payloads or tokens,
// and the stream's end names the client the server settled on.
func TestLogs(t *testing.T) {
	s, logs := startLogged(t, "--debug")
	ctx, cancel := context.WithCancel(context.Background())
	cc := dialPlain(t, s)
	st := openStream(t, ctx, cc, "alice")
	join, room := "join", "room"
	secret := []byte("top secret payload")
	if err := st.Send(&streamsvc.DataMessage{Type: "control", Action: &join, SessionID: &room}); err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&streamsvc.DataMessage{Type: "data", SessionID: &room, Data: secret}); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if m.Type == "data" {
			break
		}
	}
	anon, err := tryStreamOn(ctx, cc, "")
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	eventually(t, "both stream ends logged", func() bool {
		l := logs.String()
		return strings.Contains(l, "client=alice") && strings.Contains(l, "client="+anon)
	})
	l := logs.String()
	if !strings.Contains(l, "action=join") {
		t.Errorf("no debug line for the join:\n%s", l)
	}
	if strings.Contains(l, string(secret)) || strings.Contains(l, base64.StdEncoding.EncodeToString(secret)) {
		t.Errorf("a data payload was logged:\n%s", l)
	}
}

// tryStreamOn opens a stream on cc and returns the welcome's client ID.
func tryStreamOn(ctx context.Context, cc *grpc.ClientConn, id string) (string, error) {
	p := &streamsvc.StreamDataPayload{}
	if id != "" {
		p.ClientID = &id
	}
	res, err := streamsvcc.NewClient(cc).StreamData()(ctx, p)
	if err != nil {
		return "", err
	}
	m, err := res.(*streamsvcc.StreamDataClientStream).Recv()
	if err != nil {
		return "", err
	}
	return *m.ClientID, nil
}
