package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/streamhub/streamhub/engine"
	streampb "github.com/streamhub/streamhub/gen/grpc/stream_service/pb"
	streamsvr "github.com/streamhub/streamhub/gen/grpc/stream_service/server"
	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	"github.com/streamhub/streamhub/interceptors"
	"github.com/streamhub/streamhub/internal/buildinfo"
	"github.com/streamhub/streamhub/internal/wire"
	"github.com/streamhub/streamhub/streaming"
	"github.com/streamhub/streamhub/telemetry"
	"github.com/streamhub/streamhub/web"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"goa.design/clue/debug"
	"goa.design/clue/health"
	"goa.design/clue/log"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
)

// streamMethod is the full name of the one method the interceptors apply to.
const streamMethod = streampb.StreamService_StreamData_FullMethodName

const (
	// streamHeadroom is how many streams one HTTP/2 connection may open
	// beyond --max-connections (health checks, refused streams).
	streamHeadroom = 100
	// deliveryOverhead bounds what a delivery adds to the message it
	// delivers: three identifiers of at most 128 bytes, an epoch, varints.
	deliveryOverhead = 1 << 10
)

// grpcServiceName is the service name the gRPC health service reports on,
// besides the server as a whole ("").
const grpcServiceName = "stream_service.StreamService"

// server is a running StreamHub: the gRPC server, the streaming service
// behind it, the browser transport and the admin HTTP server.
type server struct {
	opts     *options
	build    buildinfo.Info
	obs      *observability
	svc      *streaming.Service
	grpc     *grpc.Server
	health   *grpchealth.Server
	admin    *http.Server
	web      *web.Server  // nil when the HTTP server is disabled
	http     *http.Server // the WebSocket transport and the demo page
	grpcLis  net.Listener
	adminLis net.Listener // nil when the admin server is disabled
	httpLis  net.Listener // nil when the HTTP server is disabled
	draining atomic.Bool
	// eng is the engine the service shares sessions through: nil with
	// --engine memory, where the service's own history is the engine.
	eng engine.Engine
	// instance names this process to the engine; empty without one.
	instance string
	// engineHealth says whether the engine answers: the service.
	engineHealth engineHealth
}

// newServer loads the keys and certificates, listens on the configured
// addresses and wires everything; serve starts serving.
func newServer(ctx context.Context, o *options) (*server, error) {
	auth, err := o.security.authenticator()
	if err != nil {
		return nil, err
	}
	creds, err := o.security.credentials()
	if err != nil {
		return nil, err
	}
	tlsCfg, err := o.security.tlsConfig()
	if err != nil {
		return nil, err
	}
	s := &server{opts: o, build: buildinfo.Read()}
	if err := s.listen(); err != nil {
		return nil, err
	}
	var svc atomic.Pointer[streaming.Service] // the gauges may be collected before the service exists
	s.obs, err = newObservability(ctx, o, func() telemetry.GaugeValues {
		v := svc.Load()
		if v == nil {
			return telemetry.GaugeValues{MemoryBudget: o.stream.MemoryBudget}
		}
		budget, used := v.Memory()
		return telemetry.GaugeValues{Connections: v.Connections(), Sessions: v.Sessions(), MemoryBudget: budget, MemoryUsed: used}
	}, s.build)
	if err != nil {
		s.closeListeners()
		return nil, err
	}

	svcOpts := []streaming.Option{
		streaming.WithMetrics(s.obs.metrics),
		streaming.WithLogContext(ctx),
		streaming.WithAnnotator(interceptors.Annotate),
	}
	if auth != nil {
		svcOpts = append(svcOpts, streaming.WithAuthenticator(auth))
	}
	// The engine comes first and hands what it receives to the service
	// through the relay, once the service exists.
	relay := new(engine.Relay)
	switch o.engine {
	case engineRedis:
		s.instance = instanceName()
		if s.eng, err = newRedisEngine(ctx, o, s.instance, relay, s.obs.engine); err != nil {
			s.closeListeners()
			s.obs.shutdown(ctx)
			return nil, err
		}
		svcOpts = append(svcOpts, streaming.WithEngine(s.eng, s.instance))
	default:
		if o.redisAddr != "" {
			log.Print(ctx, log.KV{K: "msg", V: "--redis-addr is ignored: --engine is memory, so sessions are not shared with other instances"})
		}
	}
	s.svc = streaming.New(o.stream, svcOpts...)
	relay.Set(s.svc)
	s.engineHealth = s.svc
	svc.Store(s.svc)
	grpcOpts := s.grpcOptions(ctx)
	if creds != nil {
		grpcOpts = append(grpcOpts, grpc.Creds(creds))
	}
	s.grpc = grpc.NewServer(grpcOpts...)
	streampb.RegisterStreamServiceServer(s.grpc, streamsvr.New(streamsvc.NewEndpoints(s.svc), nil))
	s.health = grpchealth.NewServer()
	s.health.SetServingStatus(grpcServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)

	mux := http.NewServeMux()
	mux.Handle("/livez", health.Handler(health.NewChecker()))
	mux.Handle("/readyz", health.Handler(health.NewChecker(readiness{s})))
	mux.Handle("GET /metrics", s.obs.scrape)
	debug.MountPprofHandlers(mux)
	debug.MountDebugLogEnabler(mux)
	if o.debug {
		// Clue's debug interceptor sets each stream's debug logging from
		// Clue's switch, which only its HTTP handler turns: turn it on
		// through the handler, before anything is served.
		on, err := http.NewRequestWithContext(ctx, http.MethodGet, "/debug?debug-logs=on", nil)
		if err != nil {
			return nil, err
		}
		mux.ServeHTTP(discardResponse{}, on)
	}
	if s.adminLis != nil {
		s.admin = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	}
	if s.httpLis != nil {
		s.web = web.New(web.Config{
			Endpoints:      streamsvc.NewEndpoints(s.svc), // the same service: one pool, one set of sessions
			LogContext:     ctx,
			AllowedOrigins: o.allowedOrigins(),
			MaxMessageSize: s.svc.Config().MaxMessageSize,
			RateLimit:      rate.Limit(o.rateLimit),
			RateBurst:      o.rateBurst,
			Metrics:        s.obs.metrics.Transport("websocket"),
		})
		s.http = &http.Server{
			Handler:           otelhttp.NewHandler(s.web.Handler(), "streamhub", otelhttp.WithMeterProvider(s.obs.provider)),
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
		}
		if tlsCfg != nil {
			// WebSockets need HTTP/1.1: an HTTP/2 response cannot be hijacked.
			tlsCfg = tlsCfg.Clone()
			tlsCfg.NextProtos = []string{"http/1.1"}
			s.httpLis = tls.NewListener(s.httpLis, tlsCfg)
		}
	}
	return s, nil
}

// listen opens the configured listeners.
func (s *server) listen() error {
	o := s.opts
	var err error
	if s.grpcLis, err = net.Listen("tcp", o.grpcAddr); err != nil {
		return fmt.Errorf("gRPC listener: %w", err)
	}
	if o.adminAddr != "" {
		if s.adminLis, err = net.Listen("tcp", o.adminAddr); err != nil {
			s.closeListeners()
			return fmt.Errorf("admin listener: %w", err)
		}
	}
	if o.httpAddr != "" {
		if s.httpLis, err = net.Listen("tcp", o.httpAddr); err != nil {
			s.closeListeners()
			return fmt.Errorf("HTTP listener: %w", err)
		}
	}
	return nil
}

func (s *server) closeListeners() {
	for _, l := range []net.Listener{s.grpcLis, s.adminLis, s.httpLis} {
		if l != nil {
			l.Close()
		}
	}
}

func (s *server) grpcOptions(ctx context.Context) []grpc.ServerOption {
	c := s.svc.Config()
	grpcMetrics := s.obs.metrics.Transport("grpc")
	return []grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    30 * time.Second, // ping a client after this much silence
			Timeout: 10 * time.Second, // and drop the connection if the ping is not answered
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             20 * time.Second, // the CLI pings every 30s
			PermitWithoutStream: true,
		}),
		// Above the connection limit, so that the service's own limit
		// refuses the extra stream instead of gRPC queueing it forever.
		grpc.MaxConcurrentStreams(uint32(c.MaxConnections) + streamHeadroom),
		grpc.MaxRecvMsgSize(c.MaxMessageSize),
		// A delivery carries what the client sent plus seq, epoch, sender
		// and timestamp: a message the server accepted must fit going out.
		grpc.MaxSendMsgSize(c.MaxMessageSize + deliveryOverhead),
		grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithMeterProvider(s.obs.provider))),
		grpc.ChainStreamInterceptor(
			// No per-call logger: Clue's debug interceptor sets the debug
			// switch on the logger's shared options, which is only safe
			// when every stream logs through the one logger and its lock.
			log.StreamServerInterceptor(ctx, log.WithDisableCallLogging(), log.WithDisableCallID()),
			debug.StreamServerInterceptor(),
			interceptors.Monitoring{Method: streamMethod, Metrics: grpcMetrics}.Stream(),
			interceptors.Recovery(), // inside Monitoring, which then reports the INTERNAL end
			interceptors.FlowControl{
				Method:    streamMethod,
				Limit:     rate.Limit(s.opts.rateLimit),
				Burst:     s.opts.rateBurst,
				OnWait:    grpcMetrics.RateLimitWait,
				SendLimit: rate.Limit(s.opts.sendRateLimit),
				SendBurst: s.opts.sendRateBurst,
			}.Stream(),
			// Last, so that everything above sees the deliveries it sends
			// encoded once per publish.
			streaming.EncodedDeliveries(streamMethod),
		),
		grpc.ForceServerCodecV2(wire.Codec{}),
	}
}

// discardResponse is an http.ResponseWriter that keeps nothing.
type discardResponse struct{}

func (discardResponse) Header() http.Header         { return http.Header{} }
func (discardResponse) Write(b []byte) (int, error) { return len(b), nil }
func (discardResponse) WriteHeader(int)             {}

// The pieces plugged together here fit.
var (
	_ streaming.Metrics          = (*telemetry.Metrics)(nil)
	_ interceptors.StreamMetrics = (*telemetry.Metrics)(nil)
	_ interceptors.StreamMetrics = (*telemetry.Transport)(nil)
	_ web.Metrics                = (*telemetry.Transport)(nil)
	_ engine.Handler             = (*streaming.Service)(nil)
	_ engine.ReplacedHandler     = (*streaming.Service)(nil)
	_ engineHealth               = (*streaming.Service)(nil)
)

// readiness is the /readyz check: ready until the drain starts, and not
// while the engine does not answer.
type readiness struct{ s *server }

func (readiness) Name() string { return "streamhub" }

func (r readiness) Ping(context.Context) error {
	if r.s.draining.Load() {
		return errors.New("draining")
	}
	return r.s.engineHealth.EngineErr()
}

// grpcAddr and adminAddr are the addresses actually listened on.
func (s *server) grpcAddr() string { return s.grpcLis.Addr().String() }

func (s *server) adminAddr() string {
	if s.adminLis == nil {
		return ""
	}
	return s.adminLis.Addr().String()
}

// httpAddr is the address of the WebSocket transport and the demo page.
func (s *server) httpAddr() string {
	if s.httpLis == nil {
		return ""
	}
	return s.httpLis.Addr().String()
}

// serve serves until ctx ends or a server fails, then drains and stops.
// It returns once nothing of the server runs any more.
func (s *server) serve(ctx context.Context) error {
	errc := make(chan error, 3)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := s.grpc.Serve(s.grpcLis); err != nil {
			errc <- fmt.Errorf("gRPC server: %w", err)
		}
	}()
	if s.admin != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.admin.Serve(s.adminLis); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("admin server: %w", err)
			}
		}()
	}
	if s.http != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.http.Serve(s.httpLis); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("HTTP server: %w", err)
			}
		}()
	}
	summaryCtx, stopSummary := context.WithCancel(ctx)
	defer stopSummary()
	if s.opts.metricsLogInterval > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.obs.summary.Run(summaryCtx, s.opts.metricsLogInterval)
		}()
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	if s.eng != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.watchEngine(watchCtx)
		}()
	}
	kvs := []log.Fielder{log.KV{K: "msg", V: "serving"}, log.KV{K: "grpc", V: s.grpcAddr()}, log.KV{K: "http", V: s.httpAddr()},
		log.KV{K: "admin", V: s.adminAddr()}, log.KV{K: "engine", V: s.opts.engine}}
	if s.eng != nil {
		kvs = append(kvs, log.KV{K: "redis", V: redactRedisAddr(s.opts.redisAddr)}, log.KV{K: "redis_prefix", V: s.opts.redisPrefix},
			log.KV{K: "instance", V: s.instance})
	}
	kvs = append(kvs, log.KV{K: "version", V: s.build.Version}, log.KV{K: "revision", V: s.build.RevisionOrUnknown()},
		log.KV{K: "vcs_time", V: s.build.TimeOrUnknown()}, log.KV{K: "modified", V: s.build.Modified},
		log.KV{K: "go_version", V: s.build.GoVersion})
	log.Print(ctx, kvs...)

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	stopWatch() // the drain's NOT_SERVING is final
	s.shutdown(context.WithoutCancel(ctx))
	stopSummary()
	wg.Wait()
	flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	s.obs.shutdown(flushCtx) // an unreachable collector must not hold the exit
	return err
}

// shutdown drains as SPEC §4 says: not ready, no new streams, goaway to
// every client, queued messages flushed within the drain timeout.
func (s *server) shutdown(ctx context.Context) {
	log.Print(ctx, log.KV{K: "msg", V: "draining"}, log.KV{K: "timeout", V: s.opts.drainTimeout.String()})
	s.draining.Store(true)
	s.health.Shutdown()
	if s.web != nil {
		s.web.Drain() // WebSockets the drain ends close with 1001
	}
	drainCtx, cancel := context.WithTimeout(ctx, s.opts.drainTimeout)
	defer cancel()
	if err := s.svc.Shutdown(drainCtx); err != nil {
		log.Print(ctx, log.KV{K: "msg", V: "drain timed out; remaining streams ended"})
	}
	// Every stream has ended; what remains are health and reflection calls,
	// which get a moment to finish (a health Watch never does).
	graceCtx, cancelGrace := context.WithTimeout(ctx, time.Second) // not drainCtx: a full drain leaves it none
	defer cancelGrace()
	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-graceCtx.Done():
		s.grpc.Stop()
		<-stopped
	}
	if s.http != nil {
		// Page requests get the grace; the sockets, which the HTTP server no
		// longer tracks, are ending their closing handshakes.
		if err := s.http.Shutdown(graceCtx); err != nil {
			s.http.Close()
		}
		if err := s.web.Wait(graceCtx); err != nil {
			log.Print(ctx, log.KV{K: "msg", V: "WebSocket closing handshakes cut short"})
		}
	}
	if s.admin != nil {
		if err := s.admin.Shutdown(graceCtx); err != nil {
			s.admin.Close() // a long /debug/pprof/profile, say
		}
	}
	// Last: the service uses the engine until its Shutdown returns.
	if s.eng != nil {
		if err := s.eng.Close(); err != nil {
			log.Error(ctx, err, log.KV{K: "msg", V: "closing the engine"})
		}
	}
	log.Print(ctx, log.KV{K: "msg", V: "stopped"})
}
