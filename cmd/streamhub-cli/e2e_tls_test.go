package main

import (
	"crypto/tls"
	"slices"
	"strings"
	"testing"

	"github.com/streamhub/streamhub/internal/testpki"
	"github.com/streamhub/streamhub/streaming"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// startTLSStreamHub serves a real StreamHub over TLS with the PKI's server
// certificate; with mutual, it requires client certificates signed by the
// PKI's CA, as `streamhub --tls-client-ca` does. It returns the server's
// host:port.
func startTLSStreamHub(t *testing.T, pki *testpki.PKI, mutual bool) string {
	t.Helper()
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pki.Server}}
	if mutual {
		cfg.ClientCAs, cfg.ClientAuth = pki.CAPool, tls.RequireAndVerifyClientCert
	}
	return strings.TrimPrefix(startStreamHub(t, streaming.Config{}, grpc.Creds(credentials.NewTLS(cfg))), "grpc://")
}

// TestE2ETLS runs the CLI against real TLS servers: it must verify the
// server's certificate against -tls-ca (or the system roots), for the -url
// host or -tls-server-name, and present -tls-cert when the server asks.
func TestE2ETLS(t *testing.T) {
	pki := testpki.New(t)
	addr := startTLSStreamHub(t, pki, false)
	mutualAddr := startTLSStreamHub(t, pki, true)
	_, port, _ := strings.Cut(addr, ":")
	clientCert := []string{"-tls-cert", pki.ClientCertFile, "-tls-key", pki.ClientKeyFile}

	tests := []struct {
		name string
		args []string
		// wantStderr, when set, says the stream must fail to open with
		// these on stderr; otherwise the round trip must succeed.
		wantStderr []string
	}{
		{name: "-tls-ca", args: []string{"-url", "grpc://" + addr, "-tls-ca", pki.CAFile}},
		{name: "grpcs URL", args: []string{"-url", "grpcs://" + addr, "-tls-ca", pki.CAFile}},
		{name: "localhost", args: []string{"-url", "grpcs://localhost:" + port, "-tls-ca", pki.CAFile}},
		{
			// The server certificate names localhost: the override is
			// what gets verified, not the -url host.
			name: "-tls-server-name",
			args: []string{"-url", "grpcs://" + addr, "-tls-ca", pki.CAFile, "-tls-server-name", "localhost"},
		},
		{
			name:       "-tls-server-name not in the certificate",
			args:       []string{"-url", "grpcs://" + addr, "-tls-ca", pki.CAFile, "-tls-server-name", "hub.example.com"},
			wantStderr: []string{"code = Unavailable", "certificate is valid for", "not hub.example.com"},
		},
		{
			name:       "plaintext to a TLS server",
			args:       []string{"-url", "grpc://" + addr},
			wantStderr: []string{"code = Unavailable", "the server may require TLS: try -tls-ca FILE"},
		},
		{
			// The test CA is not among the system's roots.
			name:       "system roots",
			args:       []string{"-url", "grpc://" + addr, "-tls"},
			wantStderr: []string{"code = Unavailable", "certificate signed by unknown authority"},
		},
		{name: "mutual TLS", args: slices.Concat([]string{"-url", "grpcs://" + mutualAddr, "-tls-ca", pki.CAFile}, clientCert)},
		{
			name: "mutual TLS without a client certificate",
			args: []string{"-url", "grpcs://" + mutualAddr, "-tls-ca", pki.CAFile},
			// The server's refusal itself ("tls: certificate required")
			// often loses the race with the client's first write.
			wantStderr: []string{"code = Unavailable", "the server may require a client certificate: try -tls-cert FILE -tls-key FILE"},
		},
		{
			// A client certificate the server does not ask for is harmless.
			name: "client certificate to a server-only TLS server",
			args: slices.Concat([]string{"-url", "grpcs://" + addr, "-tls-ca", pki.CAFile}, clientCert),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := slices.Concat(tt.args, []string{"stream-service", "stream-data", "--client-id", "alice"})
			alice := startCLI(t, strings.NewReader(joinLobby+"\n"+publishHiM1+"\n"), args...)
			code := alice.wait(t, "alice")
			stdout, stderr := alice.stdout.String(), alice.stderr.String()

			if len(tt.wantStderr) > 0 {
				if code != exitStream {
					t.Errorf("exit status %d, want %d; stderr:\n%s", code, exitStream, stderr)
				}
				for _, want := range append([]string{"could not open the stream to"}, tt.wantStderr...) {
					if !strings.Contains(stderr, want) {
						t.Errorf("stderr does not mention %q:\n%s", want, stderr)
					}
				}
				if stdout != "" {
					t.Errorf("stdout = %q, want nothing", stdout)
				}
				return
			}

			if code != exitOK {
				t.Fatalf("exit status %d, want %d; stderr:\n%s", code, exitOK, stderr)
			}
			// Each run is a fresh lobby member, but the session lives on in
			// the server, so only the delivery's sender is checked.
			m := alice.waitOutput(t, "the delivery of m1", isData("lobby", "m1", []byte("hi")))
			if got := deref(m.ClientID); got != "alice" {
				t.Errorf("delivery client_id = %q, want alice", got)
			}
			if stderr != "" {
				t.Errorf("stderr = %q, want nothing", stderr)
			}
		})
	}
}
