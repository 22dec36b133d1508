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
				c.MaxPendingBytes == 8<<20 && o.logFormat == "auto" && !o.debug && o.metricsLogInterval == time.Minute
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
