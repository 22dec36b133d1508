// Package streaming is StreamHub's service behind the generated StreamData
// endpoint: the connection pool, sessions with history and resume, the
// bounded outbound path of each stream, heartbeats and health probes.
package streaming

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"time"

	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	"google.golang.org/grpc/peer"
)

// Service implements the generated stream_service service.
type Service struct {
	cfg      Config
	metrics  Metrics
	logCtx   context.Context // for logs not about one stream
	auth     Authenticator   // nil: identity is x-client-id
	annotate func(ctx context.Context, key string, value any)
	pool     *pool
	sessions *sessions
	budget   *budget
	shared   *shared // nil: sessions are this process's own

	stop         chan struct{} // closed by Shutdown to stop the housekeeper
	wg           sync.WaitGroup
	shutdownOnce sync.Once
}

var (
	_ streamsvc.Service = (*Service)(nil)
	_ streamsvc.Auther  = (*Service)(nil)
)

// Option configures a Service.
type Option func(*Service)

// WithMetrics sends the service's events to m.
func WithMetrics(m Metrics) Option {
	return func(s *Service) { s.metrics = m }
}

// WithLogContext logs what is not about one stream (housekeeping) with
// ctx's Clue logger.
func WithLogContext(ctx context.Context) Option {
	return func(s *Service) { s.logCtx = ctx }
}

// WithAnnotator has the service describe each stream through annotate
// (who the client is), e.g. for the end-of-stream log line.
func WithAnnotator(annotate func(ctx context.Context, key string, value any)) Option {
	return func(s *Service) { s.annotate = annotate }
}

// New returns a running service. Shutdown stops it.
func New(cfg Config, opts ...Option) *Service {
	cfg = cfg.withDefaults()
	s := &Service{
		cfg:      cfg,
		metrics:  nopMetrics{},
		logCtx:   context.Background(),
		annotate: func(context.Context, string, any) {},
		pool:     newPool(cfg.MaxConnections, cfg.MaxRetainedClients),
		budget:   &budget{limit: cfg.MemoryBudget},
		stop:     make(chan struct{}),
	}
	s.sessions = newSessions(cfg, s.budget)
	for _, o := range opts {
		o(s)
	}
	s.budget.metrics, s.budget.logCtx = s.metrics, s.logCtx
	s.wg.Add(1)
	go s.housekeep()
	if s.shared != nil {
		s.sessions.shared = s.shared
		s.wg.Add(3)
		go s.syncLoop()
		go s.keepLoop()
		go s.aliveLoop()
	}
	return s
}

// Config returns the configuration in effect, defaults applied.
func (s *Service) Config() Config { return s.cfg }

// Connections is the number of open streams.
func (s *Service) Connections() int { return s.pool.count() }

// Sessions is the number of sessions that exist.
func (s *Service) Sessions() int { return s.sessions.count() }

// Memory returns the memory budget and what of it is used, in bytes.
func (s *Service) Memory() (budget, used int64) {
	return s.budget.limit, s.budget.used.Load()
}

// RetainedClients is the number of clients kept for their memberships
// while they have no stream.
func (s *Service) RetainedClients() int { return s.pool.retainedCount() }

// makeRoom makes room for a session when the session limit would refuse a
// live client: the session no live stream has been attached to for the
// longest goes, with its history and retained memberships. It reports
// false when every session has a live member.
func (s *Service) makeRoom() bool {
	retained, ok := s.sessions.evictIdle()
	if !ok {
		return false
	}
	for _, m := range retained {
		s.pool.dropRetained(m)
	}
	s.metrics.RetainedEvicted()
	return true
}

// StreamData serves one stream from its opening to its end.
func (s *Service) StreamData(ctx context.Context, p *streamsvc.StreamDataPayload, stream streamsvc.StreamDataServerStream) error {
	ident := identityFrom(ctx)
	var id string
	switch {
	case ident != nil:
		id = ident.ClientID
	case p.ClientID != nil:
		id = *p.ClientID
	default:
		id = anonymousID()
	}
	s.annotate(ctx, "client", id)
	var addr string
	if pr, ok := peer.FromContext(ctx); ok && pr.Addr != nil {
		addr = pr.Addr.String()
	}
	c := newConn(s, id, stream, ctx, addr, time.Now())
	c.ident = ident
	old, err := s.pool.register(c)
	if err != nil {
		return err
	}
	c.running.Store(1)
	defer c.exit()
	if s.shared != nil {
		if err := s.claim(c); err != nil {
			c.close(reasonClientGone, err)
			if old != nil {
				s.replace(c, old) // it was replaced all the same
			}
			return err
		}
	}
	c.start() // the welcome goes out now, whatever the old stream does
	switch {
	case old != nil:
		s.replace(c, old)
	case s.shared != nil:
		s.restore(c)
	}
	return c.serve()
}

// replace ends old, the stream c replaces, before c takes its memberships
// over at the positions old was actually handed. old gets a goaway if it
// can take one within the replace grace; a stream stuck behind a client
// that does not read is cut off then.
func (s *Service) replace(c, old *conn) {
	old.close(reasonReplaced, nil)
	grace := time.NewTimer(s.cfg.replaceGrace())
	defer grace.Stop()
	select {
	case <-old.finished:
		return
	case <-grace.C:
	case <-c.killed: // shutdown ran out of time, or a newer stream replaced this one
	case <-c.ctx.Done():
	}
	old.kill()
	<-old.finished
}

// Shutdown drains the service: new streams are refused, every stream gets a
// goaway and its queued messages are flushed until ctx ends, then the
// streams end. It returns when every goroutine of the service has ended.
func (s *Service) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() {
		conns := s.pool.drain()
		for _, c := range conns {
			c.close(reasonShutdown, nil)
		}
		for _, c := range conns {
			select {
			case <-c.finished:
			case <-ctx.Done():
				c.kill()
				<-c.finished
			}
		}
		close(s.stop)
	})
	s.wg.Wait()
	return ctx.Err()
}

func anonymousID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return "anon-" + hex.EncodeToString(b[:])
}
