package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/streamhub/streamhub/streaming"
)

// options is everything the command line configures.
type options struct {
	grpcAddr           string
	adminAddr          string
	httpAddr           string
	wsAllowedOrigins   string
	stream             streaming.Config
	maxMessageSize     byteSize
	maxPendingBytes    byteSize
	historyMaxBytes    byteSize
	memoryBudget       byteSize // 0: derived from the machine
	rateLimit          float64
	rateBurst          int
	sendRateLimit      float64
	sendRateBurst      int
	drainTimeout       time.Duration
	logFormat          string
	metricsLogInterval time.Duration
	otlpEndpoint       string
	debug              bool
	engine             string // memory or redis
	redisAddr          string // host:port or a redis:// or rediss:// URL; may hold a password
	redisPrefix        string
	security           security
	version            bool // --version: print the build and exit
}

// commandLineOnly are the flags that no environment variable sets: a
// STREAMHUB_VERSION left in an environment must not turn every start of
// the server into a print-and-exit.
var commandLineOnly = map[string]bool{"version": true}

// parseOptions reads the flags in args, falling back to STREAMHUB_<NAME>
// environment variables for the flags not given, then to the defaults.
func parseOptions(args []string, lookupEnv func(string) (string, bool)) (*options, error) {
	def := streaming.DefaultConfig()
	o := &options{maxMessageSize: byteSize(def.MaxMessageSize), maxPendingBytes: byteSize(def.MaxPendingBytes),
		historyMaxBytes: byteSize(def.HistoryMaxBytes)}
	c := &o.stream
	fs := flag.NewFlagSet("streamhub", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: streamhub [flags]\n\nStreamHub serves the StreamData gRPC stream. "+
			"Every flag but --version can also be set with the environment variable STREAMHUB_<NAME> (upper case, - as _); the flag wins.\n\n")
		fs.PrintDefaults()
	}
	fs.BoolVar(&o.version, "version", false, "print the build's version, VCS revision and time, and Go version, then exit")
	fs.StringVar(&o.grpcAddr, "grpc-addr", ":50051", "gRPC listen address")
	fs.StringVar(&o.adminAddr, "admin-addr", ":8081", "HTTP admin address (/livez, /readyz, /debug/...); empty disables it")
	fs.StringVar(&o.httpAddr, "http-addr", ":8080", "HTTP address of the WebSocket transport (GET /v1/stream) and the demo page (GET /); empty disables it")
	fs.StringVar(&o.wsAllowedOrigins, "ws-allowed-origins", "", "comma-separated origins (scheme://host[:port], or *) whose pages may open a WebSocket; empty: the same host only")
	fs.IntVar(&c.MaxConnections, "max-connections", def.MaxConnections, "concurrent streams")
	fs.Var(&o.maxMessageSize, "max-message-size", "largest message either way (bytes, or with a KiB/MiB suffix)")
	fs.IntVar(&c.QueueSize, "queue-size", def.QueueSize, "outbound messages per connection: replies queued before the client is no longer read from; more deliveries pending than this for a --send-timeout without the backlog going down make a slow consumer")
	fs.DurationVar(&c.SendTimeout, "send-timeout", def.SendTimeout, "longest a single send may block, and longest a backlog beyond --queue-size may last")
	fs.DurationVar(&c.HeartbeatInterval, "heartbeat-interval", def.HeartbeatInterval, "server heartbeat when otherwise idle")
	fs.DurationVar(&c.MaxInactivity, "max-inactivity", def.MaxInactivity, "client silence before a health probe")
	fs.DurationVar(&c.ProbeTimeout, "probe-timeout", def.ProbeTimeout, "time to answer the probe")
	fs.Float64Var(&o.rateLimit, "rate-limit", 1000, "inbound messages per second per stream; 0 disables")
	fs.IntVar(&o.rateBurst, "rate-burst", 100, "inbound burst per stream")
	fs.Float64Var(&o.sendRateLimit, "send-rate-limit", 0, "outbound messages per second per stream; 0 (the default) disables")
	fs.IntVar(&o.sendRateBurst, "send-rate-burst", 100, "outbound burst per stream")
	fs.IntVar(&c.HistorySize, "history-size", def.HistorySize, "messages kept per session")
	fs.DurationVar(&c.HistoryTTL, "history-ttl", def.HistoryTTL, "age after which a message leaves history")
	fs.Var(&o.historyMaxBytes, "history-max-bytes", "payload bytes each session's history may hold")
	fs.IntVar(&c.MaxSessions, "max-sessions", def.MaxSessions, "sessions that may exist at once")
	fs.DurationVar(&c.SessionTTL, "session-ttl", def.SessionTTL, "how long a membership outlives its connection")
	fs.IntVar(&c.MaxSessionsPerConnection, "max-sessions-per-connection", def.MaxSessionsPerConnection, "sessions one client may be a member of")
	fs.IntVar(&c.MaxRetainedClients, "max-retained-clients", def.MaxRetainedClients, "clients without a stream whose memberships are kept; beyond it the oldest are forgotten")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 10*time.Second, "graceful shutdown budget")
	fs.DurationVar(&c.MaxStreamAge, "max-stream-age", 0, "streams older than this get a goaway and end, so clients rebalance; 0 disables")
	fs.Var(&o.memoryBudget, "memory-budget", "everything held for clients, history payloads and pending deliveries (default: half the cgroup memory limit when one is set, else a quarter of physical memory)")
	fs.Var(&o.maxPendingBytes, "max-pending-bytes", "payload bytes of the deliveries pending on a connection beyond which a client that does not read is a slow consumer (one that reads gets --send-timeout to bring its backlog down)")
	fs.StringVar(&o.security.tlsCert, "tls-cert", "", "TLS certificate file (PEM); with --tls-key, serve TLS")
	fs.StringVar(&o.security.tlsKey, "tls-key", "", "TLS private key file (PEM)")
	fs.StringVar(&o.security.tlsClientCA, "tls-client-ca", "", "CA certificates (PEM) that client certificates must chain to: mutual TLS")
	fs.StringVar(&o.security.auth, "auth", "none", "none (identity from x-client-id) or jwt (identity from a bearer JWT)")
	fs.StringVar(&o.security.jwtSecretFile, "jwt-secret-file", "", "HS256 secret for --auth jwt")
	fs.StringVar(&o.security.jwtPublicKeyFile, "jwt-public-key-file", "", "RS256 or ES256 public key (PEM) for --auth jwt")
	fs.StringVar(&o.logFormat, "log-format", "auto", "log format: json, text, terminal or auto")
	fs.BoolVar(&o.debug, "debug", false, "debug logs, including control messages (never data payloads)")
	fs.DurationVar(&o.metricsLogInterval, "metrics-log-interval", 60*time.Second, "periodic summary log line; 0 disables")
	fs.StringVar(&o.otlpEndpoint, "otlp-endpoint", "", "also export metrics over OTLP/gRPC to this collector (host:port)")
	fs.StringVar(&o.engine, "engine", engineMemory, "where sessions live: memory (this process) or redis (shared by every instance on the same Redis)")
	fs.StringVar(&o.redisAddr, "redis-addr", "", "Redis for --engine redis: host:port, or a redis:// or rediss:// (TLS) URL with user, password and db")
	fs.StringVar(&o.redisPrefix, "redis-prefix", "streamhub", "prefix of every Redis key and channel, so that deployments can share a Redis")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if o.version {
		return o, nil // the build is printed and nothing runs: nothing else is read or checked
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if err := applyEnv(fs, lookupEnv); err != nil {
		return nil, err
	}
	c.MaxMessageSize = int(o.maxMessageSize)
	c.MaxPendingBytes = int(o.maxPendingBytes)
	c.HistoryMaxBytes = int(o.historyMaxBytes)
	c.MemoryBudget = int64(o.memoryBudget)
	if c.MemoryBudget == 0 {
		c.MemoryBudget = defaultMemoryBudget(memlimit.FromCgroup, memlimit.FromSystem)
	}
	return o, o.validate()
}

// applyEnv sets each flag not given on the command line from its
// environment variable, when set (an empty value counts: it disables the
// admin server, say).
func applyEnv(fs *flag.FlagSet, lookupEnv func(string) (string, bool)) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || commandLineOnly[f.Name] || err != nil {
			return
		}
		name := envName(f.Name)
		if v, ok := lookupEnv(name); ok {
			if v == "" && !isStringFlag(f) {
				return // an empty number, size, duration or switch means unset
			}
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("%s=%q: %w", name, v, e)
			}
		}
	})
	return err
}

// envName is the environment variable of the flag called name.
func envName(name string) string {
	return "STREAMHUB_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

func isStringFlag(f *flag.Flag) bool {
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return false
	}
	_, isString := g.Get().(string)
	return isString
}

func (o *options) validate() error {
	c := o.stream
	for _, v := range []struct {
		name string
		ok   bool
	}{
		{"max-connections", c.MaxConnections > 0},
		{"max-message-size", c.MaxMessageSize > 0},
		{"queue-size", c.QueueSize > 0},
		{"send-timeout", c.SendTimeout > 0},
		{"heartbeat-interval", c.HeartbeatInterval > 0},
		{"max-inactivity", c.MaxInactivity > 0},
		{"probe-timeout", c.ProbeTimeout > 0},
		{"rate-limit", o.rateLimit >= 0},
		{"rate-burst", o.rateBurst > 0 || o.rateLimit == 0},
		{"send-rate-limit", o.sendRateLimit >= 0},
		{"send-rate-burst", o.sendRateBurst > 0 || o.sendRateLimit == 0},
		{"history-size", c.HistorySize > 0},
		{"history-ttl", c.HistoryTTL > 0},
		{"max-sessions", c.MaxSessions > 0},
		{"session-ttl", c.SessionTTL > 0},
		{"max-sessions-per-connection", c.MaxSessionsPerConnection > 0},
		{"max-retained-clients", c.MaxRetainedClients > 0},
		{"drain-timeout", o.drainTimeout > 0},
		{"max-pending-bytes", c.MaxPendingBytes > 0},
		{"metrics-log-interval", o.metricsLogInterval >= 0},
		{"max-stream-age", c.MaxStreamAge >= 0},
	} {
		if !v.ok {
			return fmt.Errorf("--%s must be positive (or 0 where 0 disables it)", v.name)
		}
	}
	for _, origin := range o.allowedOrigins() {
		if u, err := url.Parse(origin); origin != "*" && (err != nil || u.Scheme == "" || u.Host == "" || u.Path != "" || u.RawQuery != "") {
			return fmt.Errorf("--ws-allowed-origins: %q is not scheme://host[:port] or *", origin)
		}
	}
	if err := o.security.validate(); err != nil {
		return err
	}
	switch o.logFormat {
	case "auto", "json", "text", "terminal":
	default:
		return fmt.Errorf("--log-format must be json, text, terminal or auto, not %q", o.logFormat)
	}
	return o.validateEngine()
}

// The engines --engine names.
const (
	engineMemory = "memory"
	engineRedis  = "redis"
)

// validateEngine checks --engine and, for Redis, the address and prefix.
// The address is checked for its shape only: whether Redis answers there
// is for startup to find out.
func (o *options) validateEngine() error {
	switch o.engine {
	case engineMemory:
		return nil
	case engineRedis:
	default:
		return fmt.Errorf("--engine must be memory or redis, not %q", o.engine)
	}
	if o.redisAddr == "" {
		return errors.New("--engine redis needs --redis-addr (host:port, or a redis:// or rediss:// URL)")
	}
	if o.redisPrefix == "" {
		return errors.New("--redis-prefix must not be empty")
	}
	if strings.Contains(o.redisAddr, "://") {
		// Not url.Parse's error: it quotes the whole URL, password included.
		u, err := url.Parse(o.redisAddr)
		if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
			return fmt.Errorf("--redis-addr %s: not a redis:// or rediss:// URL with a host", redactRedisAddr(o.redisAddr))
		}
		return nil
	}
	if host, port, err := net.SplitHostPort(o.redisAddr); err != nil || host == "" || port == "" {
		return fmt.Errorf("--redis-addr %q: not host:port, or a redis:// or rediss:// URL", o.redisAddr)
	}
	return nil
}

// redactRedisAddr is a Redis address fit for logs and errors: a URL's
// user information (which may hold a password) is masked.
func redactRedisAddr(addr string) string {
	scheme, rest, ok := strings.Cut(addr, "://")
	if !ok {
		return addr
	}
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		rest = "***@" + rest[at+1:]
	}
	return scheme + "://" + rest
}

// allowedOrigins is --ws-allowed-origins as a list.
func (o *options) allowedOrigins() []string {
	var list []string
	for _, origin := range strings.Split(o.wsAllowedOrigins, ",") {
		if origin = strings.TrimSpace(origin); origin != "" {
			list = append(list, strings.TrimSuffix(origin, "/"))
		}
	}
	return list
}

// byteSize is a flag of a number of bytes, with an optional KiB, MiB or GiB
// suffix.
type byteSize int

func (b *byteSize) String() string { return strconv.Itoa(int(*b)) }

// Get implements flag.Getter.
func (b *byteSize) Get() any { return int(*b) }

func (b *byteSize) Set(s string) error {
	mult := 1
	for _, u := range []struct {
		suffix string
		mult   int
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return fmt.Errorf("not a positive size: %q", s)
	}
	*b = byteSize(n * mult)
	return nil
}
