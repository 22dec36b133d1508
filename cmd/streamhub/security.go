package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/streamhub/streamhub/streaming"
	"google.golang.org/grpc/credentials"
)

// security is the identity and transport configuration (SPEC §6).
type security struct {
	auth             string // none or jwt
	jwtSecretFile    string
	jwtPublicKeyFile string
	tlsCert          string
	tlsKey           string
	tlsClientCA      string
}

func (s *security) validate() error {
	switch s.auth {
	case "none":
		if s.jwtSecretFile != "" || s.jwtPublicKeyFile != "" {
			return errors.New("--jwt-secret-file and --jwt-public-key-file need --auth jwt")
		}
	case "jwt":
		if (s.jwtSecretFile == "") == (s.jwtPublicKeyFile == "") {
			return errors.New("--auth jwt needs exactly one of --jwt-secret-file and --jwt-public-key-file")
		}
	default:
		return fmt.Errorf("--auth must be none or jwt, not %q", s.auth)
	}
	if (s.tlsCert == "") != (s.tlsKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if s.tlsClientCA != "" && s.tlsCert == "" {
		return errors.New("--tls-client-ca needs --tls-cert and --tls-key")
	}
	return nil
}

// authenticator returns the token verifier, or nil with --auth none.
func (s *security) authenticator() (streaming.Authenticator, error) {
	switch {
	case s.auth != "jwt":
		return nil, nil
	case s.jwtSecretFile != "":
		secret, err := os.ReadFile(s.jwtSecretFile)
		if err != nil {
			return nil, fmt.Errorf("JWT secret: %w", err)
		}
		return streaming.NewJWTSecret(secret)
	default:
		key, err := os.ReadFile(s.jwtPublicKeyFile)
		if err != nil {
			return nil, fmt.Errorf("JWT public key: %w", err)
		}
		return streaming.NewJWTPublicKey(key)
	}
}

// tlsConfig returns the servers' TLS configuration, or nil without TLS.
func (s *security) tlsConfig() (*tls.Config, error) {
	if s.tlsCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(s.tlsCert, s.tlsKey)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if s.tlsClientCA != "" {
		pem, err := os.ReadFile(s.tlsClientCA)
		if err != nil {
			return nil, fmt.Errorf("TLS client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("TLS client CA %s: no certificate found", s.tlsClientCA)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// credentials returns the gRPC server's TLS credentials, or nil without TLS.
func (s *security) credentials() (credentials.TransportCredentials, error) {
	cfg, err := s.tlsConfig()
	if cfg == nil || err != nil {
		return nil, err
	}
	return credentials.NewTLS(cfg), nil
}
