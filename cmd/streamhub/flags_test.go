package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseOptions(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		env   map[string]string
		check func(*options) bool
		err   string
	}{
		{name: "defaults", check: func(o *options) bool {
			c := o.stream
			return o.grpcAddr == ":50051" && o.adminAddr == ":8081" && o.httpAddr == ":8080" && o.wsAllowedOrigins == "" && c.MaxConnections == 5000 &&
				c.MaxMessageSize == 5<<20 && c.QueueSize == 512 && c.SendTimeout == 15*time.Second &&
				c.HeartbeatInterval == 20*time.Second && c.MaxInactivity == 2*time.Minute &&
				c.ProbeTimeout == 10*time.Second && o.rateLimit == 1000 && o.rateBurst == 100 &&
				c.HistorySize == 1000 && c.HistoryTTL == 10*time.Minute && c.SessionTTL == 5*time.Minute &&
				c.MaxSessionsPerConnection == 100 && o.drainTimeout == 10*time.Second &&
				c.MaxPendingBytes == 8<<20 && o.logFormat == "auto" && !o.debug && o.metricsLogInterval == time.Minute &&
				o.engine == "memory" && o.redisAddr == "" && o.redisPrefix == "streamhub"
		}},
		{name: "flags", args: []string{"--grpc-addr", "127.0.0.1:1", "--queue-size=7", "--max-message-size", "64KiB", "--debug"},
			check: func(o *options) bool {
				return o.grpcAddr == "127.0.0.1:1" && o.stream.QueueSize == 7 && o.stream.MaxMessageSize == 64<<10 && o.debug
			}},
		{name: "environment", env: map[string]string{"STREAMHUB_QUEUE_SIZE": "9", "STREAMHUB_ADMIN_ADDR": ":9", "STREAMHUB_SEND_TIMEOUT": "3s"},
			check: func(o *options) bool {
				return o.stream.QueueSize == 9 && o.adminAddr == ":9" && o.stream.SendTimeout == 3*time.Second
			}},
		{name: "empty environment value disables the admin server", env: map[string]string{"STREAMHUB_ADMIN_ADDR": ""},
			check: func(o *options) bool { return o.adminAddr == "" }},
		{name: "HTTP address and origins from the environment", env: map[string]string{"STREAMHUB_HTTP_ADDR": "", "STREAMHUB_WS_ALLOWED_ORIGINS": "https://a.example, http://b.example:8000/"},
			check: func(o *options) bool {
				l := o.allowedOrigins()
				return o.httpAddr == "" && len(l) == 2 && l[0] == "https://a.example" && l[1] == "http://b.example:8000"
			}},
		{name: "any origin", args: []string{"--ws-allowed-origins", "*"}, check: func(o *options) bool { return o.allowedOrigins()[0] == "*" }},
		{name: "bad origin", args: []string{"--ws-allowed-origins", "example.com"}, err: "--ws-allowed-origins"},
		{name: "origin with a path", args: []string{"--ws-allowed-origins", "https://example.com/app"}, err: "--ws-allowed-origins"},
		{name: "empty numbers and switches are unset", env: map[string]string{"STREAMHUB_QUEUE_SIZE": "", "STREAMHUB_DEBUG": "", "STREAMHUB_MAX_PENDING_BYTES": ""},
			check: func(o *options) bool { return o.stream.QueueSize == 512 && !o.debug }},
		{name: "flag wins over environment", args: []string{"--queue-size", "7"}, env: map[string]string{"STREAMHUB_QUEUE_SIZE": "9"},
			check: func(o *options) bool { return o.stream.QueueSize == 7 }},
		{name: "rate limit off", args: []string{"--rate-limit", "0"}, check: func(o *options) bool { return o.rateLimit == 0 }},
		{name: "bad number", args: []string{"--queue-size", "many"}, err: "queue-size"},
		{name: "zero", args: []string{"--queue-size", "0"}, err: "--queue-size must be positive"},
		{name: "bad environment", env: map[string]string{"STREAMHUB_HISTORY_TTL": "soon"}, err: "STREAMHUB_HISTORY_TTL"},
		{name: "bad size", args: []string{"--max-pending-bytes", "lots"}, err: "not a positive size"},
		{name: "bad log format", args: []string{"--log-format", "xml"}, err: "--log-format"},
		{name: "stray argument", args: []string{"serve"}, err: "unexpected arguments"},
		{name: "redis engine from flags", args: []string{"--engine", "redis", "--redis-addr", "10.0.0.7:6379", "--redis-prefix", "chat"},
			check: func(o *options) bool {
				return o.engine == "redis" && o.redisAddr == "10.0.0.7:6379" && o.redisPrefix == "chat"
			}},
		{name: "redis engine from the environment", env: map[string]string{"STREAMHUB_ENGINE": "redis",
			"STREAMHUB_REDIS_ADDR": "rediss://default:s3cret@redis.example:6380/2", "STREAMHUB_REDIS_PREFIX": "prod"},
			check: func(o *options) bool {
				return o.engine == "redis" && o.redisAddr == "rediss://default:s3cret@redis.example:6380/2" && o.redisPrefix == "prod"
			}},
		{name: "engine flag wins over environment", args: []string{"--engine", "memory"}, env: map[string]string{"STREAMHUB_ENGINE": "redis"},
			check: func(o *options) bool { return o.engine == "memory" }},
		{name: "memory engine ignores a Redis address", args: []string{"--redis-addr", "10.0.0.7:6379"},
			check: func(o *options) bool { return o.engine == "memory" }},
		{name: "redis engine without an address", args: []string{"--engine", "redis"}, err: "--engine redis needs --redis-addr"},
		{name: "unknown engine", args: []string{"--engine", "etcd"}, err: `--engine must be memory or redis, not "etcd"`},
		{name: "redis address without a port", args: []string{"--engine", "redis", "--redis-addr", "redis.example"}, err: "--redis-addr"},
		{name: "redis URL of another scheme", args: []string{"--engine", "redis", "--redis-addr", "http://redis.example:6379"}, err: "not a redis:// or rediss:// URL"},
		{name: "empty redis prefix", env: map[string]string{"STREAMHUB_ENGINE": "redis", "STREAMHUB_REDIS_ADDR": "r:6379", "STREAMHUB_REDIS_PREFIX": ""},
			err: "--redis-prefix"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseOptions(tc.args, func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok })
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one mentioning %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(o) {
				t.Fatalf("options not as expected: %+v", o)
			}
		})
	}
}

// TestRedisAddressErrorsHideThePassword: a malformed URL is reported
// without the password it may carry (url.Parse's own error quotes it).
func TestRedisAddressErrorsHideThePassword(t *testing.T) {
	for _, addr := range []string{
		"redis://default:s3cret@redis example:6379", // a space in the host
		"rediss://default:s3cret@",                  // no host
		"http://default:s3cret@redis.example:6379",  // another scheme
	} {
		_, err := parseOptions([]string{"--engine", "redis", "--redis-addr", addr}, func(string) (string, bool) { return "", false })
		if err == nil {
			t.Errorf("%s: accepted", addr)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "--redis-addr") {
			t.Errorf("%s: error %q, want one naming --redis-addr without the password", addr, err)
		}
	}
	if got, want := redactRedisAddr("rediss://default:p@ss@redis.example:6380/0"), "rediss://***@redis.example:6380/0"; got != want {
		t.Errorf("redacted %q, want %q", got, want)
	}
	if got := redactRedisAddr("10.0.0.7:6379"); got != "10.0.0.7:6379" {
		t.Errorf("redacted %q, want the address as it is", got)
	}
}
