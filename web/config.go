package web

import (
	"context"
	"time"

	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	"github.com/streamhub/streamhub/interceptors"
	"goa.design/clue/log"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
)

// Config holds every setting of the browser transport. A zero field means
// "use the default" unless its comment says otherwise; New applies the
// defaults once.
type Config struct {
	// Endpoints serve the streams. Pass the endpoints of the service behind
	// the gRPC transport, so that both transports share one pool of
	// connections and one set of sessions. Required.
	Endpoints *streamsvc.Endpoints
	// LogContext carries the Clue logger of the request logs and of every
	// stream's logs. Default: a logger writing JSON to stderr.
	LogContext context.Context
	// AllowedOrigins lists the origins (scheme://host[:port]) whose pages
	// may open a WebSocket; "*" allows every origin. Empty: only pages
	// served by the same host (the Origin's host equals the request's
	// Host). Requests without an Origin header do not come from a browser
	// page and are allowed.
	AllowedOrigins []string
	// MaxMessageSize is the largest frame the server reads, in bytes; a
	// larger one closes the socket with 1009. Default 5 MiB.
	MaxMessageSize int
	// RateLimit is the sustained inbound rate per stream, in messages per
	// second, with a bucket of RateBurst. Zero disables the limit: there is
	// no default.
	RateLimit rate.Limit
	// RateBurst is the inbound bucket size per stream.
	RateBurst int
	// Metrics receives the streams' measurements. Default: none.
	Metrics Metrics
	// PingInterval is how long a socket may go without a WebSocket ping
	// from the server. Default 30s, as the gRPC transport's keepalive.
	PingInterval time.Duration
	// PongTimeout is how long the client has to answer a ping (any frame
	// will do) before the socket counts as dead. Default 10s.
	PongTimeout time.Duration
	// CloseTimeout bounds the closing handshake: how long the server waits
	// to write its close frame and for the client's. Default 1s.
	CloseTimeout time.Duration
}

// Metrics receives what the transport measures. Implementations must be
// cheap and safe for concurrent use: they sit on the per-message path.
type Metrics interface {
	interceptors.StreamMetrics
	// RateLimitWait counts a received message that waited for a token.
	RateLimitWait()
}

func (c Config) withDefaults() Config {
	if c.LogContext == nil {
		c.LogContext = defaultLogContext()
	}
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = 5 << 20
	}
	if c.Metrics == nil {
		c.Metrics = nopMetrics{}
	}
	if c.PingInterval <= 0 {
		c.PingInterval = 30 * time.Second
	}
	if c.PongTimeout <= 0 {
		c.PongTimeout = 10 * time.Second
	}
	if c.CloseTimeout <= 0 {
		c.CloseTimeout = time.Second
	}
	return c
}

type nopMetrics struct{}

func (nopMetrics) MessageReceived(int)                       {}
func (nopMetrics) MessageSent(int)                           {}
func (nopMetrics) StreamEnded(_ codes.Code, _ time.Duration) {}
func (nopMetrics) RateLimitWait()                            {}

func defaultLogContext() context.Context { return log.Context(context.Background()) }
