package main

import (
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
	"testing"
	"time"
)

// testPKI is a throwaway CA with a server certificate for 127.0.0.1, ::1
// and localhost and a client certificate, all written as PEM files to the
// test's temporary directory.
type testPKI struct {
	caFile                        string // the CA certificate
	clientCertFile, clientKeyFile string // signed by the CA, for client auth
	serverCertFile, serverKeyFile string // signed by the CA, for server auth
	caPool                        *x509.CertPool
	server                        tls.Certificate // the server certificate and key, for a test server
}

// newTestPKI makes a fresh CA and certificates under t.TempDir().
func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	p := &testPKI{caPool: x509.NewCertPool()}

	caKey := newTestKey(t)
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "StreamHub test CA"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caCert := signTestCert(t, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	p.caPool.AddCert(caCert)
	p.caFile = writePEM(t, dir, "ca.pem", "CERTIFICATE", caCert.Raw)

	serverKey := newTestKey(t)
	serverCert := signTestCert(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "streamhub test server"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, caCert, &serverKey.PublicKey, caKey)
	p.serverCertFile = writePEM(t, dir, "server.pem", "CERTIFICATE", serverCert.Raw)
	p.serverKeyFile = writePEM(t, dir, "server-key.pem", "PRIVATE KEY", marshalTestKey(t, serverKey))
	p.server = tls.Certificate{Certificate: [][]byte{serverCert.Raw}, PrivateKey: serverKey, Leaf: serverCert}

	clientKey := newTestKey(t)
	clientCert := signTestCert(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "alice"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, caCert, &clientKey.PublicKey, caKey)
	p.clientCertFile = writePEM(t, dir, "client.pem", "CERTIFICATE", clientCert.Raw)
	p.clientKeyFile = writePEM(t, dir, "client-key.pem", "PRIVATE KEY", marshalTestKey(t, clientKey))
	return p
}

func newTestKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func marshalTestKey(t *testing.T, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// signTestCert completes tmpl with a serial number and a validity around
// now, and signs it with parent's key.
func signTestCert(t *testing.T, tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, parentKey *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// writePEM writes one PEM block to dir/name and returns the file's path.
func writePEM(t *testing.T, dir, name, blockType string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
