package client

import (
	"context"
	"crypto/tls"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// Option configures a Client at Dial.
type Option func(*config)

// config holds every setting of a Client. A zero field means "use the
// default"; withDefaults applies them once, in Dial.
type config struct {
	// clientID is sent as x-client-id. Default: none, so the server
	// assigns one; the client keeps it for its reconnects.
	clientID string
	// token returns the bearer token for each new stream. Default: none.
	token func(ctx context.Context) (string, error)
	// tokenRefresh says token may return a fresh token, so that a stream
	// ended UNAUTHENTICATED is worth a reconnect.
	tokenRefresh bool
	// creds secure the connection. Default: plaintext.
	creds credentials.TransportCredentials
	// backoffMin and backoffMax bound the delay between reconnect
	// attempts. Defaults 200ms and 20s.
	backoffMin, backoffMax time.Duration
	// dialOpts are added after the client's own, so they win.
	dialOpts []grpc.DialOption
	// eventBuffer is the capacity of the Events channel. Default 256.
	eventBuffer int
	// maxInflight is how many publications may wait for their delivery
	// at once. Default 1024.
	maxInflight int
	// heartbeat is how long the client may go without sending before it
	// sends a heartbeat. Default 30s, under the server's default
	// inactivity limit of 2m.
	heartbeat time.Duration
	// probeAfter is how long the server may stay silent before the client
	// sends a health_check; probeTimeout is how long it then waits for
	// anything from the server before it gives the connection up.
	// Defaults 30s and 10s.
	probeAfter, probeTimeout time.Duration
	// connectTimeout bounds the time from dialing to the server's welcome.
	// Default 10s.
	connectTimeout time.Duration
	// maxMessageSize is the largest message the server accepts; larger
	// publications are refused before they are sent. Default 5 MiB, the
	// server's default.
	maxMessageSize int
}

func (c config) withDefaults() config {
	setDefault(&c.backoffMin, 200*time.Millisecond)
	setDefault(&c.backoffMax, 20*time.Second)
	c.backoffMax = max(c.backoffMax, c.backoffMin)
	setDefault(&c.eventBuffer, 256)
	setDefault(&c.maxInflight, 1024)
	setDefault(&c.heartbeat, 30*time.Second)
	setDefault(&c.probeAfter, 30*time.Second)
	setDefault(&c.probeTimeout, 10*time.Second)
	setDefault(&c.connectTimeout, 10*time.Second)
	setDefault(&c.maxMessageSize, 5<<20)
	if c.creds == nil {
		c.creds = insecure.NewCredentials()
	}
	return c
}

func setDefault[T int | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// tick is the period at which the client checks heartbeats and the
// server's liveness: a quarter of the shortest of those settings.
func (c config) tick() time.Duration {
	return max(min(c.heartbeat, c.probeAfter, c.probeTimeout, c.connectTimeout)/4, time.Millisecond)
}

// WithClientID sets the client's identity, sent as x-client-id (the
// server's development mode). Without it the server assigns one, and the
// client keeps that one for its reconnects, so its memberships are found
// again. With JWT authentication the token's subject is the identity.
func WithClientID(id string) Option {
	return func(c *config) { c.clientID = id }
}

// WithToken authenticates every stream with this bearer JWT. A stream the
// server ends UNAUTHENTICATED (the token expired) closes the client; use
// WithTokenFunc to refresh tokens instead.
func WithToken(token string) Option {
	return func(c *config) {
		c.token = func(context.Context) (string, error) { return token, nil }
		c.tokenRefresh = false
	}
}

// WithTokenFunc has the client ask f for a bearer JWT before each new
// stream, so that it can refresh an expiring token. A stream ended
// UNAUTHENTICATED is then retried with a fresh token like any other
// failure; an error from f counts as a failed attempt.
func WithTokenFunc(f func(ctx context.Context) (string, error)) Option {
	return func(c *config) {
		c.token = f
		c.tokenRefresh = true
	}
}

// WithTLS connects over TLS with cfg (nil: the system's roots and
// defaults).
func WithTLS(cfg *tls.Config) Option {
	return func(c *config) { c.creds = credentials.NewTLS(cfg) }
}

// WithTransportCredentials connects with creds, for credentials other than
// a plain tls.Config.
func WithTransportCredentials(creds credentials.TransportCredentials) Option {
	return func(c *config) { c.creds = creds }
}

// WithBackoff bounds the delay between reconnect attempts: it starts at
// minDelay and doubles per failed attempt up to maxDelay, each delay drawn
// at random from its upper half so that clients cut off together do not
// come back together. Defaults 200ms and 20s. A goaway (server shutdown,
// maximum stream age) is followed by a reconnect at once.
func WithBackoff(minDelay, maxDelay time.Duration) Option {
	return func(c *config) { c.backoffMin, c.backoffMax = minDelay, maxDelay }
}

// WithDialOptions adds gRPC dial options, after the client's own (which
// set the credentials, keepalive, message sizes and user agent), so these
// win.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(c *config) { c.dialOpts = append(c.dialOpts, opts...) }
}

// WithEventBuffer sets the capacity of the Events channel. Default 256.
// When it is full the client stops reading the stream until the user reads
// on; see Client.Events.
func WithEventBuffer(n int) Option {
	return func(c *config) { c.eventBuffer = n }
}

// WithMaxInflight bounds the publications waiting for their delivery;
// Publish and PublishAsync wait for room beyond it. Default 1024.
func WithMaxInflight(n int) Option {
	return func(c *config) { c.maxInflight = n }
}

// WithHeartbeat sets how long the client may go without sending anything
// before it sends a heartbeat, which keeps the server from probing it.
// Default 30s; keep it under the server's --max-inactivity (2m).
func WithHeartbeat(interval time.Duration) Option {
	return func(c *config) { c.heartbeat = interval }
}

// WithHealthCheck sets how the client finds a dead or stalled connection
// that TCP has not reported: after the server has been silent for after,
// it sends a health_check (which the server answers), and if nothing at
// all arrives within timeout more, it drops the connection and reconnects.
// Defaults 30s and 10s; the server sends heartbeats every 20s when idle.
// Time the client spends waiting for its user to read Events does not
// count as silence.
func WithHealthCheck(after, timeout time.Duration) Option {
	return func(c *config) { c.probeAfter, c.probeTimeout = after, timeout }
}

// WithConnectTimeout bounds each connection attempt, from dialing to the
// server's welcome. Default 10s.
func WithConnectTimeout(d time.Duration) Option {
	return func(c *config) { c.connectTimeout = d }
}

// WithMaxMessageSize sets the largest message the server accepts (its
// --max-message-size, default 5 MiB). A publication that would exceed it
// is refused with ErrTooLarge instead of being sent, since the server
// would end the stream over it.
func WithMaxMessageSize(n int) Option {
	return func(c *config) { c.maxMessageSize = n }
}
