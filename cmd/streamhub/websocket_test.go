package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	streamsvcc "github.com/streamhub/streamhub/gen/grpc/stream_service/client"
	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	"github.com/streamhub/streamhub/internal/testpki"
	"github.com/streamhub/streamhub/web"
	"goa.design/clue/log"
	"google.golang.org/grpc/credentials/insecure"
)

// wsMsg is a DataMessage as a WebSocket client reads and writes it: JSON
// with the wire names, data in base64.
type wsMsg struct {
	Type      string  `json:"type"`
	SessionID string  `json:"session_id,omitempty"`
	Data      []byte  `json:"data,omitempty"`
	Timestamp int64   `json:"timestamp,omitempty"`
	Seq       *uint64 `json:"seq,omitempty"`
	Action    string  `json:"action,omitempty"`
	ClientID  string  `json:"client_id,omitempty"`
	ID        string  `json:"id,omitempty"`
	Reason    string  `json:"reason,omitempty"`
	Recovered *bool   `json:"recovered,omitempty"`
	Epoch     string  `json:"epoch,omitempty"`
}

func (m *wsMsg) is(typ, action string) bool { return m.Type == typ && m.Action == action }

// wsClient is a test's WebSocket client of a running server.
type wsClient struct {
	t    *testing.T
	conn *websocket.Conn
}

// wsURL is the stream URL of s with the query parameters in kv (name,
// value, ...).
func wsURL(s *server, kv ...string) string {
	q := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	return (&url.URL{Scheme: "ws", Host: s.httpAddr(), Path: web.StreamPath, RawQuery: q.Encode()}).String()
}

// tryWS opens a WebSocket; it returns the handshake's response when the
// server refused it.
func tryWS(t *testing.T, u string, header http.Header) (*wsClient, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	conn, resp, err := websocket.DefaultDialer.DialContext(ctx, u, header)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		return nil, resp, err
	}
	c := &wsClient{t: t, conn: conn}
	t.Cleanup(func() { conn.Close() })
	return c, resp, nil
}

// dialWS opens a WebSocket as client id ("" for none) and reads the welcome.
func dialWS(t *testing.T, s *server, id string) *wsClient {
	t.Helper()
	var kv []string
	if id != "" {
		kv = []string{"client_id", id}
	}
	c, _, err := tryWS(t, wsURL(s, kv...), nil)
	if err != nil {
		t.Fatal(err)
	}
	if m := c.read(); !m.is("control", "welcome") || (id != "" && m.ClientID != id) {
		t.Fatalf("first message %+v, want welcome for %q", m, id)
	}
	return c
}

func (c *wsClient) send(m wsMsg) {
	c.t.Helper()
	if err := c.conn.WriteJSON(m); err != nil {
		c.t.Fatal(err)
	}
}

func (c *wsClient) sendRaw(text string) {
	c.t.Helper()
	if err := c.conn.WriteMessage(websocket.TextMessage, []byte(text)); err != nil {
		c.t.Fatal(err)
	}
}

// next reads the next message, or the error that ended the socket.
func (c *wsClient) next() (*wsMsg, error) {
	if err := c.conn.SetReadDeadline(time.Now().Add(waitTimeout)); err != nil {
		return nil, err
	}
	_, b, err := c.conn.ReadMessage()
	if err != nil {
		return nil, err
	}
	var m wsMsg
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

func (c *wsClient) read() *wsMsg {
	c.t.Helper()
	m, err := c.next()
	if err != nil {
		c.t.Fatal(err)
	}
	return m
}

// readUntil reads until a message for which ok is true, and returns it.
func (c *wsClient) readUntil(what string, ok func(*wsMsg) bool) *wsMsg {
	c.t.Helper()
	for {
		m, err := c.next()
		if err != nil {
			c.t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok(m) {
			return m
		}
	}
}

// closeCode reads until the socket ends and returns its close code.
func (c *wsClient) closeCode() (int, string) {
	c.t.Helper()
	for {
		_, err := c.next()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			c.t.Fatalf("socket ended with %v, not a close frame", err)
		}
		return ce.Code, ce.Text
	}
}

func (c *wsClient) join(session string, seq *uint64) *wsMsg {
	c.t.Helper()
	c.send(wsMsg{Type: "control", Action: "join", SessionID: session, Seq: seq})
	return c.readUntil("joined", func(m *wsMsg) bool { return m.is("control", "joined") && m.SessionID == session })
}

func isData(m *wsMsg) bool { return m.Type == "data" }

// grpcData reads a gRPC stream until a data message.
func grpcData(t *testing.T, s *streamsvcc.StreamDataClientStream) *streamsvc.DataMessage {
	t.Helper()
	for {
		m, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if m.Type == "data" {
			return m
		}
	}
}

// TestWebSocketChatWithGRPC: a WebSocket client and a gRPC client share a
// session both ways, and see the same messages with the same seq, epoch,
// sender and id.
func TestWebSocketChatWithGRPC(t *testing.T) {
	s := startMain(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	alice := dialWS(t, s, "alice")
	joined := alice.join("room", ptr(uint64(0)))
	if joined.Seq == nil || *joined.Seq != 0 || joined.Epoch == "" || joined.Recovered == nil || !*joined.Recovered {
		t.Fatalf("joined %+v", joined)
	}

	bob := openStream(t, ctx, dialPlain(t, s), "bob")
	join, room := "join", "room"
	if err := bob.Send(&streamsvc.DataMessage{Type: "control", Action: &join, SessionID: &room}); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := bob.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if m.Type == "control" && *m.Action == "joined" {
			break
		}
	}

	alice.send(wsMsg{Type: "data", SessionID: "room", Data: []byte("hi from the browser"), ID: "a1"})
	fromAlice := alice.readUntil("alice's delivery", isData)
	atBob := grpcData(t, bob)
	bobID := "b1"
	if err := bob.Send(&streamsvc.DataMessage{Type: "data", SessionID: &room, Data: []byte("hi from gRPC"), ID: &bobID}); err != nil {
		t.Fatal(err)
	}
	fromBob := alice.readUntil("bob's delivery", isData)
	atBobToo := grpcData(t, bob)

	for _, c := range []struct {
		ws   *wsMsg
		grpc *streamsvc.DataMessage
		seq  uint64
		from string
		id   string
		text string
	}{
		{fromAlice, atBob, 1, "alice", "a1", "hi from the browser"},
		{fromBob, atBobToo, 2, "bob", "b1", "hi from gRPC"},
	} {
		if *c.ws.Seq != c.seq || *c.grpc.Seq != c.seq {
			t.Errorf("%s's message: seq %d over WebSocket, %d over gRPC, want %d", c.from, *c.ws.Seq, *c.grpc.Seq, c.seq)
		}
		if c.ws.ClientID != c.from || *c.grpc.ClientID != c.from || c.ws.ID != c.id || *c.grpc.ID != c.id {
			t.Errorf("sender or id: %+v / %+v", c.ws, c.grpc)
		}
		if string(c.ws.Data) != c.text || string(c.grpc.Data) != c.text {
			t.Errorf("data %q / %q, want %q", c.ws.Data, c.grpc.Data, c.text)
		}
		if c.ws.Epoch != joined.Epoch || *c.grpc.Epoch != joined.Epoch || c.ws.Timestamp != *c.grpc.Timestamp {
			t.Errorf("epoch or accept time differ: %+v / %+v", c.ws, c.grpc)
		}
	}
}

// TestWebSocketInvalidInput: what is not a valid message gets a control
// error, and the socket serves the next message.
func TestWebSocketInvalidInput(t *testing.T) {
	s := startMain(t)
	c := dialWS(t, s, "alice")
	for _, tc := range []struct {
		name, frame, want string
	}{
		{"not JSON", "hello", "not a DataMessage in JSON"},
		{"empty frame", "", "not a DataMessage in JSON"},
		{"wrong field type", `{"type":"data","seq":"one"}`, "not a DataMessage in JSON"},
		{"bad base64", `{"type":"data","session_id":"room","data":"!!!"}`, "not a DataMessage in JSON"},
		{"unknown type", `{"type":"shout"}`, "type"},
		{"missing type", `{"session_id":"room"}`, "type"},
		{"malformed session", `{"type":"data","session_id":"no spaces please"}`, "session_id"},
		{"data without a session", `{"type":"data","id":"m1"}`, "session"},
		{"client-only action", `{"type":"control","action":"welcome","session_id":"room"}`, "not a client action"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.t = t
			c.sendRaw(tc.frame)
			m := c.read()
			if !m.is("control", "error") || !strings.Contains(m.Reason, tc.want) {
				t.Fatalf("got %+v, want an error mentioning %q", m, tc.want)
			}
			c.send(wsMsg{Type: "health_check"})
			if m := c.read(); m.Type != "health_check" {
				t.Fatalf("after the error: %+v, want the health_check answer", m)
			}
		})
	}
}

// TestWebSocketAdmission: a request that cannot become a socket, or comes
// from a page of another origin, is refused before the service sees it —
// it does not replace the stream of the client it names.
func TestWebSocketAdmission(t *testing.T) {
	s := startMain(t, "--ws-allowed-origins", "https://chat.example")
	alice := dialWS(t, s, "alice")

	for _, tc := range []struct {
		name   string
		origin string
		code   int
	}{
		{"foreign origin", "https://evil.example", http.StatusForbidden},
		{"same host, not in the list", "http://" + s.httpAddr(), http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, resp, err := tryWS(t, wsURL(s, "client_id", "alice"), http.Header{"Origin": {tc.origin}})
			if err == nil || resp == nil || resp.StatusCode != tc.code {
				t.Fatalf("err %v, response %v; want %d", err, resp, tc.code)
			}
		})
	}
	resp, err := http.Get("http://" + s.httpAddr() + web.StreamPath + "?client_id=alice")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired {
		t.Fatalf("plain GET: %d, want 426", resp.StatusCode)
	}
	// alice was never replaced.
	alice.send(wsMsg{Type: "health_check"})
	if m := alice.read(); m.Type != "health_check" {
		t.Fatalf("alice got %+v", m)
	}

	bob, _, err := tryWS(t, wsURL(s, "client_id", "bob"), http.Header{"Origin": {"https://chat.example"}})
	if err != nil {
		t.Fatalf("allowed origin refused: %v", err)
	}
	if m := bob.read(); !m.is("control", "welcome") {
		t.Fatalf("got %+v", m)
	}
}

// TestWebSocketSameHostOrigin: by default only pages of the same host may
// connect.
func TestWebSocketSameHostOrigin(t *testing.T) {
	s := startMain(t)
	if _, _, err := tryWS(t, wsURL(s), http.Header{"Origin": {"http://" + s.httpAddr()}}); err != nil {
		t.Fatalf("same host: %v", err)
	}
	if _, resp, err := tryWS(t, wsURL(s), http.Header{"Origin": {"http://elsewhere.example"}}); err == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("other host: %v", err)
	}
}

// TestWebSocketJWT: the token travels in the query string, the generated
// endpoint verifies it with the service's JWTAuth, it is never logged, and
// its expiry ends the socket (4401).
func TestWebSocketJWT(t *testing.T) {
	secretFile := filepath.Join(t.TempDir(), "secret")
	secret := []byte("a secret of at least thirty-two bytes")
	if err := os.WriteFile(secretFile, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	s, logs := startLogged(t, "--auth", "jwt", "--jwt-secret-file", secretFile)
	token := func(sub string, exp time.Time) string {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": sub, "exp": exp.Unix()}).SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	good := token("carol", time.Now().Add(time.Hour))

	c, _, err := tryWS(t, wsURL(s, "token", good, "client_id", "mallory"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if m := c.read(); !m.is("control", "welcome") || m.ClientID != "carol" {
		t.Fatalf("welcome %+v, want carol from the token", m)
	}
	for _, tc := range []struct{ name, token string }{
		{"no token", ""},
		{"bad signature", good[:len(good)-4] + "AAAA"},
		{"expired", token("carol", time.Now().Add(-time.Minute))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, resp, err := tryWS(t, wsURL(s, "token", tc.token, "client_id", "carol"), nil)
			if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("err %v, response %v; want 401", err, resp)
			}
		})
	}

	// exp has a one-second granularity: a token valid for two or three more
	// seconds, time enough to open the socket on a busy machine.
	short, _, err := tryWS(t, wsURL(s, "token", token("dave", time.Now().Add(3*time.Second))), nil)
	if err != nil {
		t.Fatal(err)
	}
	if code, text := short.closeCode(); code != web.CloseUnauthenticated || text != "token expired" {
		t.Fatalf("expired stream closed %d %q, want %d", code, text, web.CloseUnauthenticated)
	}
	eventually(t, "the request logs", func() bool { return strings.Contains(logs.String(), "token=REDACTED") })
	eventually(t, "the end-of-stream line", func() bool {
		return strings.Contains(logs.String(), `msg="stream ended" method="GET /v1/stream" client=dave`)
	})
	if strings.Contains(logs.String(), good) {
		t.Fatal("a token was logged")
	}
}

// TestWebSocketDrain: on shutdown a socket gets goaway shutdown, then the
// close code 1001, and serve returns.
func TestWebSocketDrain(t *testing.T) {
	o := testOptions(t)
	ctx, stop := context.WithCancel(log.Context(context.Background(), log.WithOutput(io.Discard)))
	defer stop()
	s, err := newServer(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.serve(ctx) }()

	c := dialWS(t, s, "alice")
	c.join("room", nil)
	c.send(wsMsg{Type: "data", SessionID: "room", Data: []byte("before the drain")})
	c.readUntil("the delivery", isData)

	stop()
	c.readUntil("goaway", func(m *wsMsg) bool { return m.is("control", "goaway") && m.Reason == "shutdown" })
	if code, _ := c.closeCode(); code != websocket.CloseGoingAway {
		t.Fatalf("close code %d, want 1001", code)
	}
	if _, resp, err := tryWS(t, wsURL(s, "client_id", "late"), nil); err == nil {
		t.Fatalf("a socket opened during the drain (%v)", resp)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("serve did not return")
	}
}

// TestWebSocketResume: a client whose connection dropped reconnects,
// rejoins with the last seq it saw and the epoch, and gets what it missed,
// recovered.
func TestWebSocketResume(t *testing.T) {
	s := startMain(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bob := openStream(t, ctx, dialPlain(t, s), "bob")
	room := "room"
	publish := func(text string) {
		if err := bob.Send(&streamsvc.DataMessage{Type: "data", SessionID: &room, Data: []byte(text)}); err != nil {
			t.Fatal(err)
		}
		grpcData(t, bob)
	}

	alice := dialWS(t, s, "alice")
	joined := alice.join("room", nil)
	publish("one")
	publish("two")
	var last uint64
	for last < 2 {
		last = *alice.readUntil("a delivery", isData).Seq
	}
	// The network drops: no close frame.
	alice.conn.UnderlyingConn().Close()
	publish("three")
	publish("four")

	again := dialWS(t, s, "alice")
	again.send(wsMsg{Type: "control", Action: "join", SessionID: "room", Seq: &last, Epoch: joined.Epoch})
	// The server also restores the membership by itself; a client drops
	// what it already has by seq.
	// It may resume from further on (from what was handed to the dropped
	// connection), until the explicit join takes over: a client takes only
	// the next seq.
	var got []string
	for len(got) < 2 {
		m := again.read()
		switch {
		case m.is("control", "joined"):
			if m.Recovered == nil || !*m.Recovered || m.Epoch != joined.Epoch {
				t.Fatalf("rejoin: %+v", m)
			}
		case isData(m) && *m.Seq == last+1:
			last = *m.Seq
			got = append(got, string(m.Data))
		}
	}
	if got[0] != "three" || got[1] != "four" {
		t.Fatalf("replayed %q", got)
	}
}

// TestWebSocketLimits: the connection limit refuses the upgrade (429), a
// frame over --max-message-size closes the socket with 1009 and counts as
// a resource_exhausted disconnect.
func TestWebSocketLimits(t *testing.T) {
	s := startMain(t, "--max-connections", "2", "--max-message-size", "1KiB")
	metricsURL := "http://" + s.adminAddr() + "/metrics"
	a := dialWS(t, s, "a")
	dialWS(t, s, "b")
	if _, resp, err := tryWS(t, wsURL(s, "client_id", "c"), nil); err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third socket: %v, %v; want 429", err, resp)
	}

	a.send(wsMsg{Type: "data", SessionID: "room", Data: make([]byte, 512)})
	a.readUntil("the delivery under the limit", isData)
	a.send(wsMsg{Type: "data", SessionID: "room", Data: make([]byte, 2<<10)})
	if code, _ := a.closeCode(); code != websocket.CloseMessageTooBig {
		t.Fatalf("close code %d, want 1009", code)
	}
	eventually(t, "the disconnect counted", func() bool {
		return scrape(t, metricsURL)[`streamhub_disconnects_total{reason="resource_exhausted"}`] == 1
	})
}

// TestWebSocketRateLimit: a client sending faster than --rate-limit is
// read more slowly, nothing is dropped, and the waits are counted for the
// WebSocket transport.
func TestWebSocketRateLimit(t *testing.T) {
	s := startMain(t, "--rate-limit", "50", "--rate-burst", "2")
	metricsURL := "http://" + s.adminAddr() + "/metrics"
	c := dialWS(t, s, "eager")
	c.join("room", nil)
	const n = 20
	for i := range n {
		c.send(wsMsg{Type: "data", SessionID: "room", Data: []byte{byte(i)}})
	}
	for i := range n {
		m := c.readUntil("a delivery", isData)
		if *m.Seq != uint64(i+1) || m.Data[0] != byte(i) {
			t.Fatalf("delivery %d: %+v", i, m)
		}
	}
	v := scrapeLabel(t, metricsURL, "transport")
	if v[`streamhub_rate_limit_waits_total{transport="websocket"}`] < 1 {
		t.Fatalf("no rate-limit wait counted for the WebSocket: %v", v)
	}
	if v[`streamhub_rate_limit_waits_total{transport="grpc"}`] != 0 {
		t.Fatalf("waits counted for gRPC: %v", v)
	}
}

// TestWebSocketMetrics: both transports feed StreamHub's series, stream
// durations by transport, and otelhttp's series cover the HTTP server.
func TestWebSocketMetrics(t *testing.T) {
	s := startMain(t)
	metricsURL := "http://" + s.adminAddr() + "/metrics"
	c := dialWS(t, s, "alice")
	c.join("room", nil)
	c.send(wsMsg{Type: "data", SessionID: "room", Data: []byte("hello")})
	c.readUntil("the delivery", isData)
	if err := c.conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")); err != nil {
		t.Fatal(err)
	}
	if code, _ := c.closeCode(); code != websocket.CloseNormalClosure {
		t.Fatalf("close answered with %d", code)
	}
	eventually(t, "the stream's end recorded", func() bool {
		return scrapeLabel(t, metricsURL, "transport")[`streamhub_stream_duration_seconds_count{transport="websocket"}`] == 1
	})
	v := scrape(t, metricsURL)
	if v["streamhub_messages_received_total"] != 2 || v["streamhub_messages_sent_total"] != 3 {
		t.Errorf("messages: received %v (want join, data), sent %v (want welcome, joined, delivery)",
			v["streamhub_messages_received_total"], v["streamhub_messages_sent_total"])
	}
	if v["streamhub_bytes_received_total"] == 0 || v["streamhub_bytes_sent_total"] == 0 {
		t.Errorf("bytes not counted: %v", v)
	}
	if v["http_server_request_duration_seconds_count"] < 1 {
		t.Errorf("no otelhttp series: %v", v)
	}
	// A client's normal close is a normal end.
	if codes := scrapeLabel(t, metricsURL, "code"); codes[`streamhub_stream_duration_seconds_count{code="OK"}`] != 1 {
		t.Errorf("stream end by code: %v", codes)
	}
}

// TestWebSocketReplaced: a second socket with the same client ID takes
// over; the first gets goaway replaced and closes with 4409.
func TestWebSocketReplaced(t *testing.T) {
	s := startMain(t)
	first := dialWS(t, s, "alice")
	dialWS(t, s, "alice")
	first.readUntil("goaway", func(m *wsMsg) bool { return m.is("control", "goaway") && m.Reason == "replaced" })
	if code, _ := first.closeCode(); code != web.CloseReplaced {
		t.Fatalf("close code %d, want %d", code, web.CloseReplaced)
	}
}

// TestWebSocketHalfClose: a null frame ends the client's side (as Goa's
// generated client does); what is queued is delivered, then 1000.
func TestWebSocketHalfClose(t *testing.T) {
	s := startMain(t)
	c := dialWS(t, s, "alice")
	c.join("room", nil)
	c.send(wsMsg{Type: "data", SessionID: "room", Data: []byte("last words")})
	c.sendRaw("null")
	c.readUntil("the delivery", isData)
	if code, _ := c.closeCode(); code != websocket.CloseNormalClosure {
		t.Fatalf("close code %d, want 1000", code)
	}
}

// TestPageIsServed: GET / is the demo page, with its script and style.
func TestPageIsServed(t *testing.T) {
	s := startMain(t)
	for path, want := range map[string]string{"/": "text/html", "/app.js": "text/javascript", "/app.css": "text/css"} {
		resp, err := http.Get("http://" + s.httpAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), want) || len(body) == 0 {
			t.Errorf("%s: %d %q, %d bytes", path, resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
		}
	}
}

// TestHTTPDisabled: an empty --http-addr serves no WebSocket and no page.
func TestHTTPDisabled(t *testing.T) {
	s := startMain(t, "--http-addr", "")
	if s.httpAddr() != "" || s.web != nil {
		t.Fatal("HTTP server running")
	}
	if _, err := tryStream(t, s.grpcAddr(), insecure.NewCredentials(), &streamsvc.StreamDataPayload{}); err != nil {
		t.Fatalf("gRPC without the HTTP server: %v", err)
	}
}

// TestWebSocketTLS: with --tls-cert and --tls-key the page and the socket
// are served over TLS too (wss://), on HTTP/1.1.
func TestWebSocketTLS(t *testing.T) {
	p := testpki.New(t)
	s := startMain(t, "--tls-cert", p.ServerCertFile, "--tls-key", p.ServerKeyFile)
	dialer := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: p.CAPool}}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	conn, _, err := dialer.DialContext(ctx, "wss://"+s.httpAddr()+web.StreamPath+"?client_id=alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &wsClient{t: t, conn: conn}
	defer conn.Close()
	if m := c.read(); !m.is("control", "welcome") || m.ClientID != "alice" {
		t.Fatalf("got %+v", m)
	}
	if _, _, err := tryWS(t, wsURL(s, "client_id", "plain"), nil); err == nil {
		t.Fatal("a plaintext socket opened on the TLS port")
	}
}

// TestWebSocketProbe: a client that stays silent gets the service's
// health_check probe, and when it does not answer the socket closes with
// 4503 "inactive".
func TestWebSocketProbe(t *testing.T) {
	s := startMain(t, "--max-inactivity", "100ms", "--probe-timeout", "100ms")
	c := dialWS(t, s, "quiet")
	c.readUntil("the probe", func(m *wsMsg) bool { return m.Type == "health_check" })
	if code, text := c.closeCode(); code != web.CloseUnavailable || text != "inactive" {
		t.Fatalf("close %d %q, want %d inactive", code, text, web.CloseUnavailable)
	}
}

// TestWebSocketSlowConsumer: a socket whose client does not read is cut
// off as a slow consumer, and the publisher never waits for it.
func TestWebSocketSlowConsumer(t *testing.T) {
	s := startMain(t, "--queue-size", "4", "--send-timeout", "500ms")
	metricsURL := "http://" + s.adminAddr() + "/metrics"
	dialer := websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(4 << 10) // fills soon
		}
		return c, err
	}}
	conn, _, err := dialer.Dial(wsURL(s, "client_id", "stuck"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stuck := &wsClient{t: t, conn: conn}
	stuck.read() // welcome
	stuck.join("room", nil)
	// From here on stuck reads nothing.

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pub := openStream(t, ctx, dialPlain(t, s), "pub")
	room := "room"
	payload := make([]byte, 64<<10)
	for i := 0; scrape(t, metricsURL)[`streamhub_disconnects_total{reason="slow_consumer"}`] == 0; i++ {
		if i == 1000 {
			t.Fatal("no slow-consumer disconnect after 1000 messages")
		}
		if err := pub.Send(&streamsvc.DataMessage{Type: "data", SessionID: &room, Data: payload}); err != nil {
			t.Fatal(err)
		}
		grpcData(t, pub) // in step with its own deliveries: only stuck falls behind
	}
	eventually(t, "the stuck socket gone", func() bool { return scrape(t, metricsURL)["streamhub_connections_active"] == 1 })
}
