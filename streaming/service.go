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
	"github.com/streamhub/streamhub/interceptors"
	"google.golang.org/grpc/peer"
)

// Service implements the generated stream_service service.
type Service struct {
	cfg      Config
	metrics  Metrics
	logCtx   context.Context // for logs not about one stream
	auth     Authenticator   // nil: identity is x-client-id
	pool     *pool
	sessions *sessions

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

// WithHistory stores session history with f instead of in memory.
func WithHistory(f HistoryFactory) Option {
	return func(s *Service) { s.sessions.newHistory = f }
}

// New returns a running service. Shutdown stops it.
func New(cfg Config, opts ...Option) *Service {
	cfg = cfg.withDefaults()
	s := &Service{
		cfg:      cfg,
		metrics:  nopMetrics{},
		logCtx:   context.Background(),
		pool:     newPool(cfg.MaxConnections),
		sessions: newSessions(NewMemoryHistory(cfg.HistorySize, cfg.HistoryMaxBytes), cfg.MaxSessions),
		stop:     make(chan struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	s.wg.Add(1)
	go s.housekeep()
	return s
}

// Config returns the configuration in effect, defaults applied.
func (s *Service) Config() Config { return s.cfg }

// Connections is the number of open streams.
func (s *Service) Connections() int { return s.pool.count() }

// Sessions is the number of sessions that exist.
func (s *Service) Sessions() int { return s.sessions.count() }

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
	interceptors.Annotate(ctx, "client", id)
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
	if old != nil {
		// The old stream must be gone before this one takes its memberships.
		// Its goaway may be stuck behind a client that does not read, so it
		// gets the send timeout and is then cut off.
		old.close(reasonReplaced, nil)
		cutoff := time.AfterFunc(s.cfg.SendTimeout, old.kill)
		select {
		case <-old.finished:
		case <-c.killed: // shutdown ran out of time, or a newer stream replaced this one
			old.kill()
			<-old.finished
		case <-ctx.Done():
			old.kill()
			<-old.finished
		}
		cutoff.Stop()
	}
	if c.isClosing() { // shut down while waiting
		return c.status()
	}
	return c.serve()
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
