package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	streamsvcc "github.com/streamhub/streamhub/gen/grpc/stream_service/client"
	streampb "github.com/streamhub/streamhub/gen/grpc/stream_service/pb"
	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	goa "goa.design/goa/v3/pkg"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// pki is a CA with a server and a client certificate, as PEM files.
type pki struct {
	caFile, serverCert, serverKey, clientCert, clientKey string
	pool                                                 *x509.CertPool
	client                                               tls.Certificate
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey := key()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "StreamHub test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	p := &pki{caFile: write("ca.pem", "CERTIFICATE", caDER), pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (certFile, keyFile string) {
		k := key()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return write(name+".pem", "CERTIFICATE", der), write(name+"-key.pem", "EC PRIVATE KEY", kder)
	}
	p.serverCert, p.serverKey = leaf("server", 2, x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = leaf("client", 3, x509.ExtKeyUsageClientAuth)
	if p.client, err = tls.LoadX509KeyPair(p.clientCert, p.clientKey); err != nil {
		t.Fatal(err)
	}
	return p
}

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
	p := newPKI(t)
	alice := &streamsvc.StreamDataPayload{ClientID: ptr("alice")}
	tlsOnly := startMain(t, "--tls-cert", p.serverCert, "--tls-key", p.serverKey)
	mutual := startMain(t, "--tls-cert", p.serverCert, "--tls-key", p.serverKey, "--tls-client-ca", p.caFile)
	for _, tc := range []struct {
		name  string
		addr  string
		creds credentials.TransportCredentials
		ok    bool
	}{
		{"TLS", tlsOnly.grpcAddr(), credentials.NewTLS(&tls.Config{RootCAs: p.pool}), true},
		{"plaintext to TLS", tlsOnly.grpcAddr(), insecure.NewCredentials(), false},
		{"untrusted server", tlsOnly.grpcAddr(), credentials.NewTLS(&tls.Config{RootCAs: x509.NewCertPool()}), false},
		{"TLS 1.1", tlsOnly.grpcAddr(), credentials.NewTLS(&tls.Config{RootCAs: p.pool, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}), false},
		{"TLS 1.2", tlsOnly.grpcAddr(), credentials.NewTLS(&tls.Config{RootCAs: p.pool, MaxVersion: tls.VersionTLS12}), true},
		{"mutual TLS", mutual.grpcAddr(), credentials.NewTLS(&tls.Config{RootCAs: p.pool, Certificates: []tls.Certificate{p.client}}), true},
		{"mutual TLS without a client certificate", mutual.grpcAddr(), credentials.NewTLS(&tls.Config{RootCAs: p.pool}), false},
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
