package main

import (
	"crypto/tls"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/streamhub/streamhub/internal/testpki"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestGlobalFlagsTLS checks how -url's scheme and the -tls flags turn into
// the connection's TLS settings.
func TestGlobalFlagsTLS(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantTarget string
		want       tlsSettings
	}{
		{
			name:       "plaintext by default",
			wantTarget: "localhost:50051",
		},
		{
			name:       "grpcs URL",
			args:       []string{"-url", "grpcs://hub.example.com:443"},
			wantTarget: "hub.example.com:443",
			want:       tlsSettings{enabled: true},
		},
		{
			name:       "-tls",
			args:       []string{"-url", "hub.example.com:4000", "-tls"},
			wantTarget: "hub.example.com:4000",
			want:       tlsSettings{enabled: true},
		},
		{
			// The default -url is grpc://: a TLS flag must still win.
			name:       "-tls-ca implies TLS",
			args:       []string{"-tls-ca", "ca.pem"},
			wantTarget: "localhost:50051",
			want:       tlsSettings{enabled: true, caFile: "ca.pem"},
		},
		{
			name:       "client certificate implies TLS",
			args:       []string{"-url", "grpc://10.0.0.7:50051", "-tls-cert", "me.pem", "-tls-key", "me-key.pem"},
			wantTarget: "10.0.0.7:50051",
			want:       tlsSettings{enabled: true, certFile: "me.pem", keyFile: "me-key.pem"},
		},
		{
			name:       "-tls-server-name implies TLS",
			args:       []string{"-url", "10.0.0.7", "-tls-server-name", "hub.example.com"},
			wantTarget: "10.0.0.7:50051",
			want:       tlsSettings{enabled: true, serverName: "hub.example.com"},
		},
		{
			name: "all TLS flags",
			args: []string{"-url", "grpcs://10.0.0.7:4000", "-tls", "-tls-ca", "ca.pem", "-tls-cert", "me.pem",
				"-tls-key", "me-key.pem", "-tls-server-name", "hub.example.com"},
			wantTarget: "10.0.0.7:4000",
			want: tlsSettings{enabled: true, caFile: "ca.pem", certFile: "me.pem", keyFile: "me-key.pem",
				serverName: "hub.example.com"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs, g := newGlobalFlags("streamhub-cli", io.Discard)
			if err := fs.Parse(append(tt.args, "stream-service", "stream-data")); err != nil {
				t.Fatalf("Parse: %v", err)
			}
			got, err := g.config()
			if err != nil {
				t.Fatalf("config: %v", err)
			}
			if got.target != tt.wantTarget || got.tls != tt.want {
				t.Errorf("config target %q, TLS %+v; want %q, %+v", got.target, got.tls, tt.wantTarget, tt.want)
			}
		})
	}
}

// TestRunTLSUsageErrors checks that TLS flags that cannot work are usage
// errors, reported before any connection with the flag and file at fault.
func TestRunTLSUsageErrors(t *testing.T) {
	pki := testpki.New(t)
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not PEM at all\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		args       []string
		wantStderr []string
	}{
		{name: "cert without key", args: []string{"-tls-cert", pki.ClientCertFile}, wantStderr: []string{"-tls-cert and -tls-key go together"}},
		{name: "key without cert", args: []string{"-tls-key", pki.ClientKeyFile}, wantStderr: []string{"-tls-cert and -tls-key go together"}},
		{name: "unreadable CA", args: []string{"-tls-ca", missing}, wantStderr: []string{"-tls-ca", missing, "no such file"}},
		{name: "CA file without PEM", args: []string{"-tls-ca", garbage}, wantStderr: []string{"-tls-ca " + garbage, "no PEM certificate"}},
		// A private key is PEM, but no certificate.
		{name: "CA file holding a key", args: []string{"-tls-ca", pki.ClientKeyFile}, wantStderr: []string{"-tls-ca " + pki.ClientKeyFile, "no PEM certificate"}},
		{
			name:       "unreadable client certificate",
			args:       []string{"-tls-cert", missing, "-tls-key", pki.ClientKeyFile},
			wantStderr: []string{"-tls-cert " + missing, "no such file"},
		},
		{
			name:       "unreadable client key",
			args:       []string{"-tls-cert", pki.ClientCertFile, "-tls-key", missing},
			wantStderr: []string{"-tls-key " + missing, "no such file"},
		},
		{
			name:       "key of another certificate",
			args:       []string{"-tls-cert", pki.ClientCertFile, "-tls-key", pki.ServerKeyFile},
			wantStderr: []string{"-tls-cert", "private key does not match public key"},
		},
		{name: "bad scheme", args: []string{"-url", "https://localhost:443"}, wantStderr: []string{"scheme must be grpc or grpcs"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Port 1 has no server: a usage error must come first.
			args := append([]string{"-url", "grpc://127.0.0.1:1"}, tt.args...)
			code, stdout, stderr := runCLI(t, append(args, "stream-service", "stream-data")...)
			if code != exitUsage {
				t.Errorf("exit status %d, want %d; stderr:\n%s", code, exitUsage, stderr)
			}
			if stdout != "" {
				t.Errorf("stdout = %q, want nothing", stdout)
			}
			for _, want := range tt.wantStderr {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr does not mention %q:\n%s", want, stderr)
				}
			}
		})
	}
}

// TestTLSClientConfig checks the TLS configuration the settings build.
func TestTLSClientConfig(t *testing.T) {
	pki := testpki.New(t)

	t.Run("system roots", func(t *testing.T) {
		cfg, err := tlsSettings{enabled: true}.clientConfig()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.MinVersion != tls.VersionTLS12 {
			t.Errorf("MinVersion = %#x, want TLS 1.2 (%#x)", cfg.MinVersion, tls.VersionTLS12)
		}
		// nil RootCAs is how crypto/tls uses the system's roots.
		if cfg.RootCAs != nil || len(cfg.Certificates) != 0 || cfg.ServerName != "" || cfg.InsecureSkipVerify {
			t.Errorf("config = %+v, want the system roots, no client certificate, verifying the -url host", cfg)
		}
	})

	t.Run("everything set", func(t *testing.T) {
		cfg, err := tlsSettings{
			enabled:    true,
			caFile:     pki.CAFile,
			certFile:   pki.ClientCertFile,
			keyFile:    pki.ClientKeyFile,
			serverName: "hub.example.com",
		}.clientConfig()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.MinVersion != tls.VersionTLS12 {
			t.Errorf("MinVersion = %#x, want TLS 1.2 (%#x)", cfg.MinVersion, tls.VersionTLS12)
		}
		if cfg.RootCAs == nil || !cfg.RootCAs.Equal(pki.CAPool) {
			t.Error("RootCAs is not the -tls-ca file's CA")
		}
		if len(cfg.Certificates) != 1 || cfg.Certificates[0].Leaf == nil || cfg.Certificates[0].Leaf.Subject.CommonName != "alice" {
			t.Errorf("Certificates = %v, want the -tls-cert client certificate", cfg.Certificates)
		}
		if cfg.ServerName != "hub.example.com" {
			t.Errorf("ServerName = %q, want hub.example.com", cfg.ServerName)
		}
		if cfg.InsecureSkipVerify {
			t.Error("InsecureSkipVerify is set")
		}
	})
}

func TestOpenHint(t *testing.T) {
	plain, tlsOnly := tlsSettings{}, tlsSettings{enabled: true}
	mutual := tlsSettings{enabled: true, certFile: "me.pem", keyFile: "me-key.pem"}
	unavailable := func(msg string) error { return status.Error(codes.Unavailable, msg) }
	const (
		wantTLS  = "the server may require TLS"
		wantCert = "the server may require a client certificate"
	)
	tests := []struct {
		name string
		sec  tlsSettings
		err  error
		want string // a prefix of the hint; "" for none
	}{
		{"plaintext to TLS", plain, unavailable(`connection error: desc = "error reading server preface: EOF"`), wantTLS},
		{"plaintext, refused", plain, unavailable("connection error: desc = \"transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused\""), ""},
		{"plaintext, other code", plain, status.Error(codes.ResourceExhausted, "maximum connections reached"), ""},
		{"TLS 1.3 refusal seen", tlsOnly, unavailable(`connection error: desc = "error reading server preface: remote error: tls: certificate required"`), wantCert},
		{"TLS 1.3 refusal lost", tlsOnly, unavailable("write tcp 127.0.0.1:1->127.0.0.1:2: write: broken pipe"), wantCert},
		{"TLS 1.2 refusal", tlsOnly, unavailable(`connection error: desc = "transport: authentication handshake failed: remote error: tls: bad certificate"`), wantCert},
		{"TLS, unknown authority", tlsOnly, unavailable(`connection error: desc = "transport: authentication handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority"`), ""},
		// With a client certificate given, the server refusing it is not
		// for want of one: the error says why.
		{"mutual TLS refused", mutual, unavailable("write tcp 127.0.0.1:1->127.0.0.1:2: write: broken pipe"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := openHint(tt.sec, tt.err)
			if (tt.want == "") != (got == "") || !strings.HasPrefix(got, tt.want) {
				t.Errorf("openHint = %q, want %q", got, tt.want)
			}
		})
	}
}
