// Package testpki makes throwaway certificates for StreamHub's TLS tests.
package testpki

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

// PKI is a throwaway CA with a server certificate for 127.0.0.1, ::1 and
// localhost and a client certificate, all written as PEM files to the
// test's temporary directory.
type PKI struct {
	CAFile                        string // the CA certificate
	ClientCertFile, ClientKeyFile string // signed by the CA, for client auth
	ServerCertFile, ServerKeyFile string // signed by the CA, for server auth
	CAPool                        *x509.CertPool
	Server                        tls.Certificate // the server certificate and key, for a test server
	Client                        tls.Certificate // the client certificate and key, for a test client
}

// New makes a fresh CA and certificates under t.TempDir().
func New(t testing.TB) *PKI {
	t.Helper()
	dir := t.TempDir()
	p := &PKI{CAPool: x509.NewCertPool()}

	caKey := newTestKey(t)
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "StreamHub test CA"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caCert := signTestCert(t, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	p.CAPool.AddCert(caCert)
	p.CAFile = writePEM(t, dir, "ca.pem", "CERTIFICATE", caCert.Raw)

	serverKey := newTestKey(t)
	serverCert := signTestCert(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "streamhub test server"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, caCert, &serverKey.PublicKey, caKey)
	p.ServerCertFile = writePEM(t, dir, "server.pem", "CERTIFICATE", serverCert.Raw)
	p.ServerKeyFile = writePEM(t, dir, "server-key.pem", "PRIVATE KEY", marshalTestKey(t, serverKey))
	p.Server = tls.Certificate{Certificate: [][]byte{serverCert.Raw}, PrivateKey: serverKey, Leaf: serverCert}

	clientKey := newTestKey(t)
	clientCert := signTestCert(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "alice"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, caCert, &clientKey.PublicKey, caKey)
	p.ClientCertFile = writePEM(t, dir, "client.pem", "CERTIFICATE", clientCert.Raw)
	p.ClientKeyFile = writePEM(t, dir, "client-key.pem", "PRIVATE KEY", marshalTestKey(t, clientKey))
	p.Client = tls.Certificate{Certificate: [][]byte{clientCert.Raw}, PrivateKey: clientKey, Leaf: clientCert}
	return p
}

func newTestKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func marshalTestKey(t testing.TB, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// signTestCert completes tmpl with a serial number and a validity around
// now, and signs it with parent's key.
func signTestCert(t testing.TB, tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, parentKey *ecdsa.PrivateKey) *x509.Certificate {
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
func writePEM(t testing.TB, dir, name, blockType string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
