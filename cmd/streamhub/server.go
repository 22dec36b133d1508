package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	streampb "github.com/streamhub/streamhub/gen/grpc/stream_service/pb"
	streamsvr "github.com/streamhub/streamhub/gen/grpc/stream_service/server"
	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	"github.com/streamhub/streamhub/interceptors"
	"github.com/streamhub/streamhub/streaming"
	"github.com/streamhub/streamhub/telemetry"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
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
// behind it and the admin HTTP server.
type server struct {
	opts     *options
	obs      *observability
	svc      *streaming.Service
	grpc     *grpc.Server
	health   *grpchealth.Server
	admin    *http.Server
	grpcLis  net.Listener
	adminLis net.Listener // nil when the admin server is disabled
	draining atomic.Bool
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
	s := &server{opts: o}
	if s.grpcLis, err = net.Listen("tcp", o.grpcAddr); err != nil {
		return nil, fmt.Errorf("gRPC listener: %w", err)
	}
	if o.adminAddr != "" {
		if s.adminLis, err = net.Listen("tcp", o.adminAddr); err != nil {
			s.grpcLis.Close()
			return nil, fmt.Errorf("admin listener: %w", err)
		}
	}
	var svc atomic.Pointer[streaming.Service] // the gauges may be collected before the service exists
	s.obs, err = newObservability(ctx, o, func() telemetry.GaugeValues {
		v := svc.Load()
		if v == nil {
			return telemetry.GaugeValues{MemoryBudget: o.stream.MemoryBudget}
		}
		budget, used := v.Memory()
		return telemetry.GaugeValues{Connections: v.Connections(), Sessions: v.Sessions(), MemoryBudget: budget, MemoryUsed: used}
	})
	if err != nil {
		s.grpcLis.Close()
		if s.adminLis != nil {
			s.adminLis.Close()
		}
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
	s.svc = streaming.New(o.stream, svcOpts...)
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
	return s, nil
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
		),
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
)

// readiness is the /readyz check: ready until the drain starts.
type readiness struct{ s *server }

func (readiness) Name() string { return "streamhub" }

func (r readiness) Ping(context.Context) error {
	if r.s.draining.Load() {
		return errors.New("draining")
	}
	return nil
}

// grpcAddr and adminAddr are the addresses actually listened on.
func (s *server) grpcAddr() string { return s.grpcLis.Addr().String() }

func (s *server) adminAddr() string {
	if s.adminLis == nil {
		return ""
	}
	return s.adminLis.Addr().String()
}

// serve serves until ctx ends or a server fails, then drains and stops.
// It returns once nothing of the server runs any more.
func (s *server) serve(ctx context.Context) error {
	errc := make(chan error, 2)
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
	summaryCtx, stopSummary := context.WithCancel(ctx)
	defer stopSummary()
	if s.opts.metricsLogInterval > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.obs.summary.Run(summaryCtx, s.opts.metricsLogInterval)
		}()
	}
	log.Print(ctx, log.KV{K: "msg", V: "serving"}, log.KV{K: "grpc", V: s.grpcAddr()}, log.KV{K: "admin", V: s.adminAddr()})

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
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
	if s.admin != nil {
		if err := s.admin.Shutdown(graceCtx); err != nil {
			s.admin.Close() // a long /debug/pprof/profile, say
		}
	}
	log.Print(ctx, log.KV{K: "msg", V: "stopped"})
}
