package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	streamsvcc "github.com/streamhub/streamhub/gen/grpc/stream_service/client"
	streampb "github.com/streamhub/streamhub/gen/grpc/stream_service/pb"
	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	"github.com/streamhub/streamhub/internal/testpki"
	goa "goa.design/goa/v3/pkg"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// startMain runs the server as main does with args until the test ends.
func startMain(t *testing.T, args ...string) *server {
	t.Helper()
	s, _ := startLogged(t, args...)
	return s
}

// tryStream opens a stream with creds and returns the welcome's client ID
// or the error that ended the stream.
func tryStream(t *testing.T, addr string, creds credentials.TransportCredentials, p *streamsvc.StreamDataPayload) (string, error) {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	res, err := streamsvcc.NewClient(cc).StreamData()(ctx, p)
	if err != nil {
		return "", err
	}
	m, err := res.(*streamsvcc.StreamDataClientStream).Recv()
	if err != nil {
		return "", err
	}
	return *m.ClientID, nil
}

func TestTLS(t *testing.T) {
	p := testpki.New(t)
	alice := &streamsvc.StreamDataPayload{ClientID: ptr("alice")}
	tlsOnly := startMain(t, "--tls-cert", p.ServerCertFile, "--tls-key", p.ServerKeyFile)
	mutual := startMain(t, "--tls-cert", p.ServerCertFile, "--tls-key", p.ServerKeyFile, "--tls-client-ca", p.CAFile)
	for _, tc := range []struct {
		name  string
		addr  string
		creds credentials.TransportCredentials
		ok    bool
	}{
		{"TLS", tlsOnly.grpcAddr(), credentials.NewTLS(&tls.Config{RootCAs: p.CAPool}), true},
		{"plaintext to TLS", tlsOnly.grpcAddr(), insecure.NewCredentials(), false},
		{"untrusted server", tlsOnly.grpcAddr(), credentials.NewTLS(&tls.Config{RootCAs: x509.NewCertPool()}), false},
		{"TLS 1.1", tlsOnly.grpcAddr(), credentials.NewTLS(&tls.Config{RootCAs: p.CAPool, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}), false},
		{"TLS 1.2", tlsOnly.grpcAddr(), credentials.NewTLS(&tls.Config{RootCAs: p.CAPool, MaxVersion: tls.VersionTLS12}), true},
		{"mutual TLS", mutual.grpcAddr(), credentials.NewTLS(&tls.Config{RootCAs: p.CAPool, Certificates: []tls.Certificate{p.Client}}), true},
		{"mutual TLS without a client certificate", mutual.grpcAddr(), credentials.NewTLS(&tls.Config{RootCAs: p.CAPool}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := tryStream(t, tc.addr, tc.creds, alice)
			if tc.ok && (err != nil || id != "alice") {
				t.Fatalf("welcome %q, err %v", id, err)
			}
			if !tc.ok && err == nil {
				t.Fatal("stream opened")
			}
		})
	}
}

func TestJWTFlags(t *testing.T) {
	secretFile := filepath.Join(t.TempDir(), "secret")
	secret := []byte("a secret of at least thirty-two bytes")
	if err := os.WriteFile(secretFile, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	s := startMain(t, "--auth", "jwt", "--jwt-secret-file", secretFile)
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "bob", "exp": time.Now().Add(time.Hour).Unix()}).SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := tryStream(t, s.grpcAddr(), insecure.NewCredentials(), &streamsvc.StreamDataPayload{Token: &tok}); err != nil || id != "bob" {
		t.Fatalf("welcome %q, err %v", id, err)
	}
	_, err = tryStream(t, s.grpcAddr(), insecure.NewCredentials(), &streamsvc.StreamDataPayload{ClientID: ptr("bob")})
	if se, ok := err.(*goa.ServiceError); !ok || se.Name != "unauthenticated" {
		t.Fatalf("stream without a token ended with %v", err)
	}
}

func TestSecurityOptions(t *testing.T) {
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"--auth", "basic"}, "--auth must be none or jwt"},
		{[]string{"--auth", "jwt"}, "exactly one of"},
		{[]string{"--auth", "jwt", "--jwt-secret-file", "a", "--jwt-public-key-file", "b"}, "exactly one of"},
		{[]string{"--jwt-secret-file", "a"}, "need --auth jwt"},
		{[]string{"--tls-cert", "a"}, "go together"},
		{[]string{"--tls-client-ca", "a"}, "needs --tls-cert"},
	} {
		if _, err := parseOptions(tc.args, func(string) (string, bool) { return "", false }); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%v: err = %v, want %q", tc.args, err, tc.err)
		}
	}
	o := testOptions(t, "--tls-cert", "/nonexistent", "--tls-key", "/nonexistent")
	if _, err := newServer(context.Background(), o); err == nil || !strings.Contains(err.Error(), "TLS certificate") {
		t.Errorf("missing certificate: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }

// TestMalformedPathIsNotRouted sends StreamData under :path values that are
// not exactly the method's: none may reach the service around the
// interceptors, which match the exact full method name.
func TestMalformedPathIsNotRouted(t *testing.T) {
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte("a secret of at least thirty-two bytes"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startMain(t, "--auth", "jwt", "--jwt-secret-file", secretFile)
	cc, err := grpc.NewClient(s.grpcAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	for _, path := range []string{
		"stream_service.StreamService/StreamData",
		"//stream_service.StreamService/StreamData",
		"/stream_service.StreamService/StreamData/",
		"/stream_service.StreamService//StreamData",
		"/Stream_service.StreamService/StreamData",
	} {
		t.Run(path, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			stream, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, path)
			if err == nil {
				var reply streampb.StreamDataResponse
				err = stream.RecvMsg(&reply)
				if err == nil {
					t.Fatalf("served: got %v", &reply)
				}
			}
			if code := status.Code(err); code != codes.Unimplemented {
				t.Fatalf("err = %v, want Unimplemented", err)
			}
		})
	}
}
