package streaming

import (
	"math"
	"time"
)

// Config holds every setting of the streaming service. A zero field means
// "use the default"; New applies the defaults once.
type Config struct {
	// MaxConnections is the number of concurrent streams. Default 5000.
	MaxConnections int
	// MaxMessageSize is the largest message in either direction, in bytes.
	// The gRPC server enforces it; the service uses it to size nothing but
	// keeps it for reference. Default 5 MiB.
	MaxMessageSize int
	// QueueSize bounds what waits to be sent on one connection, in
	// messages: replies and errors queue up to it, then the client is not
	// read from until it reads; deliveries may exceed it during a burst,
	// but a client with more than this many pending for SendTimeout is a
	// slow consumer. Default 512.
	QueueSize int
	// MaxPendingBytes is the payload of the deliveries pending on one
	// connection beyond which the client is a slow consumer. Default 8 MiB.
	MaxPendingBytes int
	// SendTimeout is the longest a single send may block, and the longest
	// more than QueueSize deliveries may stay pending, before the client
	// counts as a slow consumer. Default 15s.
	SendTimeout time.Duration
	// HeartbeatInterval is how long a stream may go without the server
	// sending anything before it sends a heartbeat. Default 20s.
	HeartbeatInterval time.Duration
	// MaxInactivity is how long a client may stay silent before the server
	// probes it with a health_check. Default 2m.
	MaxInactivity time.Duration
	// ProbeTimeout is how long a probed client has to send anything.
	// Default 10s.
	ProbeTimeout time.Duration
	// HistorySize is the number of messages each session keeps. Default 1000.
	HistorySize int
	// HistoryTTL is the age after which a message leaves history. Default 10m.
	HistoryTTL time.Duration
	// HistoryMaxBytes is the payload bytes each session's history may hold;
	// the oldest messages leave first. Default 64 MiB.
	HistoryMaxBytes int
	// MaxSessions is the number of sessions that may exist at once; a join
	// that would create one more is refused. Default 100000.
	MaxSessions int
	// SessionTTL is how long a membership outlives its connection. Default 5m.
	SessionTTL time.Duration
	// MaxRetainedClients is the number of clients without a stream whose
	// memberships are kept; beyond it, the client retained longest is
	// forgotten. Default 100000.
	MaxRetainedClients int
	// MaxSessionsPerConnection is the number of sessions one client may be a
	// member of. Default 100.
	MaxSessionsPerConnection int
	// MemoryBudget bounds everything the server holds on clients' behalf,
	// in bytes: history payloads and the payload of pending deliveries.
	// Default: no bound (the server sets it from the machine's memory).
	MemoryBudget int64
	// MaxStreamAge, when positive, ends streams older than this with a
	// goaway (reason max_stream_age), a flush and RESOURCE_EXHAUSTED, so
	// that clients reconnect and spread over servers. Default off.
	MaxStreamAge time.Duration
}

// DefaultConfig returns the configuration a developer on one machine needs.
func DefaultConfig() Config {
	return Config{}.withDefaults()
}

func (c Config) withDefaults() Config {
	setDefault(&c.MaxConnections, 5000)
	setDefault(&c.MaxMessageSize, 5<<20)
	setDefault(&c.QueueSize, 512)
	setDefault(&c.MaxPendingBytes, 8<<20)
	setDefault(&c.SendTimeout, 15*time.Second)
	setDefault(&c.HeartbeatInterval, 20*time.Second)
	setDefault(&c.MaxInactivity, 2*time.Minute)
	setDefault(&c.ProbeTimeout, 10*time.Second)
	setDefault(&c.HistorySize, 1000)
	setDefault(&c.HistoryTTL, 10*time.Minute)
	setDefault(&c.HistoryMaxBytes, 64<<20)
	setDefault(&c.MaxSessions, 100000)
	setDefault(&c.SessionTTL, 5*time.Minute)
	setDefault(&c.MaxSessionsPerConnection, 100)
	setDefault(&c.MaxRetainedClients, 100000)
	if c.MemoryBudget <= 0 {
		c.MemoryBudget = math.MaxInt64 / 2 // room to add to without overflowing
	}
	return c
}

func setDefault[T int | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// replaceGrace is how long a replaced stream may take to send its goaway
// and end before it is cut off: short, because its successor's memberships
// wait for it, and a stream that cannot take a goaway at once is most
// likely a connection that is already gone.
func (c Config) replaceGrace() time.Duration {
	return min(c.SendTimeout, 250*time.Millisecond)
}

// tick is the period of the service's housekeeping loop: fine enough to
// honour the shortest timing setting within a quarter of it.
func (c Config) tick() time.Duration {
	d := min(c.SendTimeout, c.HeartbeatInterval, c.MaxInactivity, c.ProbeTimeout, c.SessionTTL, c.HistoryTTL) / 4
	if c.MaxStreamAge > 0 {
		d = min(d, c.MaxStreamAge/4)
	}
	return max(min(d, time.Second), 5*time.Millisecond)
}
