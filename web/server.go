// Package web serves StreamHub to browsers: the stream_data method over
// WebSocket, through the HTTP transport generated from the design, and the
// demo chat page.
//
// The gRPC interceptors do not apply to this transport, so it applies
// their rules itself where they fit: the inbound rate limit with
// backpressure (the same token bucket, interceptors.Throttle), the message
// size limit (gorilla's read limit), and the measurements and end-of-stream
// log line (interceptors.Monitoring). Everything else — the connection
// limit, sessions, slow consumers, heartbeats and probes, token expiry,
// the drain — is the streaming service's, shared with the gRPC transport.
package web

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	rdebug "runtime/debug"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/gorilla/websocket"
	streamsvr "github.com/streamhub/streamhub/gen/http/stream_service/server"
	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	"github.com/streamhub/streamhub/interceptors"
	"goa.design/clue/debug"
	"goa.design/clue/log"
	goahttp "goa.design/goa/v3/http"
	goa "goa.design/goa/v3/pkg"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// StreamPath is where the WebSocket is served.
const StreamPath = "/v1/stream"

// Server is the browser transport: New builds it, Handler serves it, Drain
// and Wait end it.
type Server struct {
	cfg        Config
	monitoring interceptors.Monitoring
	upgrader   *websocket.Upgrader
	handler    http.Handler
	draining   atomic.Bool
	handlers   tracker // stream requests being served
}

// New returns a Server for cfg.
func New(cfg Config) *Server {
	cfg = cfg.withDefaults()
	s := &Server{
		cfg:        cfg,
		monitoring: interceptors.Monitoring{Method: http.MethodGet + " " + StreamPath, Metrics: cfg.Metrics},
	}
	s.upgrader = &websocket.Upgrader{
		CheckOrigin: s.originAllowed,
		// Idle sockets hold no write buffer.
		WriteBufferPool: &sync.Pool{},
	}

	eps := &streamsvc.Endpoints{StreamData: s.endpoint(cfg.Endpoints.StreamData)}
	mux := goahttp.NewMuxer()
	gen := streamsvr.New(eps, mux, goahttp.RequestDecoder, goahttp.ResponseEncoder, s.errorHandler, nil, upgrader{s}, nil)
	gen.Use(s.admit)
	streamsvr.Mount(mux, gen)
	mountPage(mux)
	// Clue's middleware: the request logs, the logger of every stream, and
	// the debug switch of /debug?debug-logs=on. No request IDs: an ID makes
	// a per-request logger, which shares its options (the debug switch
	// debug.HTTP sets) with the server's logger but not its lock.
	s.handler = log.HTTP(cfg.LogContext, log.WithRequestLogFunc(logRequest), log.WithDisableRequestID())(debug.HTTP()(mux))
	return s
}

// Handler serves GET /v1/stream and the demo page.
func (s *Server) Handler() http.Handler { return s.handler }

// logRequest writes Clue's request log lines without the token a stream
// request carries in its query string.
func logRequest(ctx context.Context, kvs ...log.Fielder) {
	for i, f := range kvs {
		if kv, ok := f.(log.KV); ok && kv.K == log.HTTPURLKey {
			if u, ok := kv.V.(string); ok {
				kvs[i] = log.KV{K: kv.K, V: redactToken(u)}
			}
		}
	}
	log.Print(ctx, kvs...)
}

// redactToken replaces the value of a token query parameter in u.
func redactToken(u string) string {
	parsed, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	q := parsed.Query()
	if !q.Has("token") {
		return u
	}
	q.Set("token", "REDACTED")
	parsed.RawQuery = q.Encode()
	return parsed.String()
}

// Drain says the server is shutting down: streams the service ends from
// now on with UNAVAILABLE close with 1001 (going away). Call it before
// draining the service.
func (s *Server) Drain() { s.draining.Store(true) }

// Wait returns when every stream request has been served and every socket
// closed, or when ctx ends. The HTTP server does not track the sockets it
// handed over: call Wait after its Shutdown.
func (s *Server) Wait(ctx context.Context) error { return s.handlers.wait(ctx) }

// tracker counts requests in progress; unlike a WaitGroup, it may be
// waited for while requests still start.
type tracker struct {
	mu   sync.Mutex    // guards n and idle
	n    int           // requests in progress
	idle chan struct{} // closed when n drops to 0; made by a waiter
}

func (t *tracker) add() {
	t.mu.Lock()
	t.n++
	t.mu.Unlock()
}

func (t *tracker) done() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n--; t.n == 0 && t.idle != nil {
		close(t.idle)
		t.idle = nil
	}
}

func (t *tracker) wait(ctx context.Context) error {
	t.mu.Lock()
	if t.n == 0 {
		t.mu.Unlock()
		return nil
	}
	if t.idle == nil {
		t.idle = make(chan struct{})
	}
	idle := t.idle
	t.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// admit refuses, before the service sees it, a request that could never
// become a socket: not a WebSocket handshake, or from a page of a foreign
// origin. Otherwise the stream would take the client ID (and replace its
// stream) before the upgrade failed. Admitted requests get their socket
// state and the peer address in their context.
func (s *Server) admit(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !websocket.IsWebSocketUpgrade(r) || r.Header.Get("Sec-Websocket-Version") != "13" || r.Header.Get("Sec-Websocket-Key") == "" {
			w.Header().Set("Upgrade", "websocket")
			http.Error(w, "this endpoint speaks WebSocket (version 13) only", http.StatusUpgradeRequired)
			return
		}
		if !s.originAllowed(r) {
			http.Error(w, "origin not allowed", http.StatusForbidden)
			return
		}
		s.handlers.add()
		defer s.handlers.done()
		sock := &socket{pingInterval: s.cfg.PingInterval, pongTimeout: s.cfg.PongTimeout}
		ctx := context.WithValue(r.Context(), socketKey{}, sock)
		ctx = peer.NewContext(ctx, &peer.Peer{Addr: remoteAddr(r.RemoteAddr)})
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// originAllowed is the origin check of SPEC §10: --ws-allowed-origins, or
// the same host by default.
func (s *Server) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if len(s.cfg.AllowedOrigins) == 0 {
		u, err := url.Parse(origin)
		return err == nil && strings.EqualFold(u.Host, r.Host)
	}
	for _, o := range s.cfg.AllowedOrigins {
		if o == "*" || strings.EqualFold(strings.TrimSuffix(o, "/"), origin) {
			return true
		}
	}
	return false
}

// endpoint wraps the generated endpoint: the stream the service gets is
// rate limited and measured, and when the service is done the socket is
// closed with a code that says why.
func (s *Server) endpoint(next goa.Endpoint) goa.Endpoint {
	return func(ctx context.Context, req any) (any, error) {
		in := req.(*streamsvc.StreamDataEndpointInput)
		sock, _ := ctx.Value(socketKey{}).(*socket)
		if sock == nil {
			return nil, errors.New("web: stream request not admitted")
		}
		ctx, tally := s.monitoring.Start(ctx)
		st := newStream(s, in.Stream, sock, tally)
		in.Stream = st
		res, err := s.call(ctx, next, in)
		return res, st.finish(ctx, err)
	}
}

// call runs the endpoint; a panic ends only this stream, INTERNAL.
func (s *Server) call(ctx context.Context, next goa.Endpoint, in any) (res any, err error) {
	defer func() {
		if r := recover(); r != nil {
			log.Error(ctx, fmt.Errorf("panic: %v", r), log.KV{K: "method", V: s.monitoring.Method}, log.KV{K: "stack", V: string(rdebug.Stack())})
			res, err = nil, status.Error(codes.Internal, "internal error")
		}
	}()
	return next(ctx, in)
}

// errorHandler logs what the generated handler could not write.
func (s *Server) errorHandler(ctx context.Context, _ http.ResponseWriter, err error) {
	log.Error(ctx, err, log.KV{K: "msg", V: "stream request"})
}

// upgrader is the Upgrader the generated stream calls on its first Send or
// Recv, that is once the service has accepted the stream.
type upgrader struct{ s *Server }

// Upgrade upgrades the request's connection, unless the stream has already
// ended (the generated handler then owns the response) — and configures
// the socket.
func (u upgrader) Upgrade(w http.ResponseWriter, r *http.Request, h http.Header) (*websocket.Conn, error) {
	sock := r.Context().Value(socketKey{}).(*socket)
	return sock.upgrade(func() (*websocket.Conn, error) {
		conn, err := u.s.upgrader.Upgrade(w, r, h)
		if err != nil {
			return nil, err
		}
		conn.SetReadLimit(int64(u.s.cfg.MaxMessageSize))
		return conn, nil
	})
}

// remoteAddr is a peer's address as net/http reports it.
type remoteAddr string

func (a remoteAddr) Network() string { return "tcp" }
func (a remoteAddr) String() string  { return string(a) }

var _ net.Addr = remoteAddr("")
