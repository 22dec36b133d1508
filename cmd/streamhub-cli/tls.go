package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc/codes"
)

// tlsSettings is how the CLI secures its connection, from a grpcs:// -url
// and the -tls flags. The zero value is plaintext. It holds file names, not
// their contents, so that parsing the command line reads no files; the
// files are read by clientConfig when the connection is set up.
type tlsSettings struct {
	enabled    bool   // use TLS; set by grpcs:// or by any -tls flag
	caFile     string // -tls-ca: PEM CA certificates to trust; "" trusts the system roots
	certFile   string // -tls-cert: client certificate (PEM) for mutual TLS; set with keyFile or not at all
	keyFile    string // -tls-key: the client certificate's private key (PEM)
	serverName string // -tls-server-name: name to verify in the server's certificate; "" for the -url host
}

// check reports flag combinations that cannot work.
func (s tlsSettings) check() error {
	if (s.certFile == "") != (s.keyFile == "") {
		return errors.New("-tls-cert and -tls-key go together: give both for mutual TLS, or neither")
	}
	return nil
}

// clientConfig returns the TLS configuration the settings ask for, reading
// the CA and client certificate files. Its errors name the flag at fault.
func (s tlsSettings) clientConfig() (*tls.Config, error) {
	// The server accepts nothing older either (cmd/streamhub/security.go);
	// saying so here keeps the CLI safe against any other server.
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: s.serverName}
	if s.caFile != "" {
		pem, err := os.ReadFile(s.caFile)
		if err != nil {
			return nil, fmt.Errorf("-tls-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-tls-ca %s: no PEM certificate found", s.caFile)
		}
		cfg.RootCAs = pool
	}
	if s.certFile != "" {
		cert, err := tls.LoadX509KeyPair(s.certFile, s.keyFile)
		if err != nil {
			return nil, fmt.Errorf("-tls-cert %s, -tls-key %s: %w", s.certFile, s.keyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// openHint guesses, from the error that kept the stream from opening, at a
// TLS setting the server wants and the command line lacks; "" when there is
// nothing to suggest. grpc-go's errors for these cases are accurate but do
// not say TLS: a plaintext client talking to a TLS server sees the
// connection close before the server preface, and under TLS 1.3 a client
// without the certificate the server requires often sees only a broken pipe,
// as the server's refusal comes after the client's handshake has finished.
func openHint(sec tlsSettings, err error) string {
	st := statusOf(err)
	if st.Code() != codes.Unavailable {
		return ""
	}
	msg := st.Message()
	switch {
	case !sec.enabled && strings.Contains(msg, "server preface"):
		return "the server may require TLS: try -tls-ca FILE, -tls or a grpcs:// URL"
	case sec.enabled && sec.certFile == "" && containsAny(msg,
		"certificate required", "bad certificate", "broken pipe", "connection reset", "server preface"):
		return "the server may require a client certificate: try -tls-cert FILE -tls-key FILE"
	}
	return ""
}

// containsAny reports whether s contains any of the substrs.
func containsAny(s string, substrs ...string) bool {
	for _, sub := range substrs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
