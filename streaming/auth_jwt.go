package streaming

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"regexp"

	"github.com/golang-jwt/jwt/v5"
)

// jwtAuthenticator verifies JWTs: the signature with one key, exp if
// present, and sub as the client ID.
type jwtAuthenticator struct {
	key    any
	parser *jwt.Parser
}

var _ Authenticator = (*jwtAuthenticator)(nil)

// jwtClaims are the claims StreamHub reads.
type jwtClaims struct {
	jwt.RegisteredClaims
	Sessions []string `json:"sessions"`
}

// identifierRE is the wire contract's identifier syntax.
var identifierRE = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// NewJWTSecret verifies HS256 tokens signed with secret.
func NewJWTSecret(secret []byte) (Authenticator, error) {
	if len(secret) < 32 {
		return nil, errors.New("the JWT secret must be at least 32 bytes")
	}
	return &jwtAuthenticator{key: secret, parser: jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}))}, nil
}

// NewJWTPublicKey verifies RS256 or ES256 tokens with the PEM-encoded
// public key (PKIX, or an X.509 certificate).
func NewJWTPublicKey(pemBytes []byte) (Authenticator, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("no PEM data in the JWT public key")
	}
	var key any
	switch block.Type {
	case "CERTIFICATE":
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("JWT public key certificate: %w", err)
		}
		key = cert.PublicKey
	default:
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("JWT public key: %w", err)
		}
		key = k
	}
	var method string
	switch k := key.(type) {
	case *rsa.PublicKey:
		method = "RS256"
	case *ecdsa.PublicKey:
		if k.Curve.Params().BitSize != 256 {
			return nil, errors.New("ES256 needs a P-256 key")
		}
		method = "ES256"
	default:
		return nil, fmt.Errorf("unsupported JWT public key type %T", key)
	}
	return &jwtAuthenticator{key: key, parser: jwt.NewParser(jwt.WithValidMethods([]string{method}))}, nil
}

func (a *jwtAuthenticator) Authenticate(token string) (*Identity, error) {
	var c jwtClaims
	if _, err := a.parser.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return a.key, nil }); err != nil {
		return nil, err
	}
	if !identifierRE.MatchString(c.Subject) {
		return nil, errors.New("sub must be a client ID: 1-128 characters of A-Z a-z 0-9 . _ : -")
	}
	id := &Identity{ClientID: c.Subject, Sessions: c.Sessions}
	if c.ExpiresAt != nil {
		id.Expires = c.ExpiresAt.Time
	}
	return id, nil
}
