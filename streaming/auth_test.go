package streaming

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef")

// token signs claims with HS256 and testSecret.
func token(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func startJWTServer(t *testing.T) *testServer {
	t.Helper()
	auth, err := NewJWTSecret(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	return startServerWith(t, Config{}, []Option{WithAuthenticator(auth)})
}

func (ts *testServer) openToken(t *testing.T, clientID, tok string) *testClient {
	t.Helper()
	p := &streamsvc.StreamDataPayload{}
	if clientID != "" {
		p.ClientID = &clientID
	}
	if tok != "" {
		p.Token = &tok
	}
	return ts.openPayload(t, ts.dial(t), p, true)
}

func TestJWTRefusesBadTokens(t *testing.T) {
	ts := startJWTServer(t)
	hour := time.Now().Add(time.Hour).Unix()
	wrongKey, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "exp": hour}).
		SignedString([]byte("another secret, 32 bytes at least!"))
	if err != nil {
		t.Fatal(err)
	}
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "alice"}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, token, reason string
	}{
		{"missing", "", "missing bearer token"},
		{"malformed", "not.a.jwt", "invalid token"},
		{"wrong key", wrongKey, "signature is invalid"},
		{"unsigned", none, "invalid token"},
		{"expired", token(t, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(-time.Minute).Unix()}), "expired"},
		{"no subject", token(t, jwt.MapClaims{"exp": hour}), "sub"},
		{"bad subject", token(t, jwt.MapClaims{"sub": "al ice", "exp": hour}), "sub"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ts.openToken(t, "alice", tc.token)
			err := c.end()
			if errorName(err) != "unauthenticated" || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("stream ended with %v, want unauthenticated mentioning %q", err, tc.reason)
			}
		})
	}
	if n := ts.metrics.disconnected("unauthenticated"); n != 7 {
		t.Fatalf("%d unauthenticated disconnects, want 7", n)
	}
}

func TestJWTSubjectIsTheClientID(t *testing.T) {
	ts := startJWTServer(t)
	c := ts.openToken(t, "mallory", token(t, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}))
	if w := c.welcome(); str(w.ClientID) != "alice" {
		t.Fatalf("welcome names %q, want the token's subject", str(w.ClientID))
	}
	c.publish("room", "hi")
	c.expect(typeControl, actJoined)
	if m := c.expect(typeData, ""); str(m.ClientID) != "alice" {
		t.Fatalf("delivery from %q", str(m.ClientID))
	}
}

func TestJWTExpiringMidStreamEndsIt(t *testing.T) {
	ts := startJWTServer(t)
	exp := time.Now().Add(1500 * time.Millisecond) // exp has second precision
	c := ts.openToken(t, "", token(t, jwt.MapClaims{"sub": "alice", "exp": exp.Unix()}))
	c.welcome()
	c.join("room")
	err := c.end()
	if errorName(err) != "unauthenticated" || !strings.Contains(err.Error(), "token expired") {
		t.Fatalf("stream ended with %v, want unauthenticated: token expired", err)
	}
	if time.Now().Before(time.Unix(exp.Unix(), 0)) {
		t.Fatal("stream ended before the token expired")
	}
	eventually(t, "expiry counted", func() bool { return ts.metrics.disconnected("unauthenticated") == 1 })
}

func TestJWTSessionsClaim(t *testing.T) {
	ts := startJWTServer(t)
	c := ts.openToken(t, "", token(t, jwt.MapClaims{
		"sub": "alice", "exp": time.Now().Add(time.Hour).Unix(), "sessions": []string{"lobby", "team-*"},
	}))
	c.welcome()
	c.join("lobby")
	c.join("team-red")
	for _, msg := range []*streamsvc.DataMessage{
		joinMsg("secret", nil, nil),
		{Type: typeData, SessionID: ptr("team"), Data: []byte("x"), ID: ptr("m1")},
		{Type: typeData, SessionID: ptr("lobby2"), Data: []byte("x")},
	} {
		c.send(msg)
		e := c.expect(typeControl, actError)
		if str(e.Reason) != "permission denied" || str(e.SessionID) != str(msg.SessionID) || str(e.ID) != str(msg.ID) {
			t.Fatalf("got %s", describe(e))
		}
	}
	c.publish("team-red", "allowed")
	if m := c.expect(typeData, ""); str(m.SessionID) != "team-red" {
		t.Fatalf("got %s", describe(m))
	}
	if ts.members("secret") != -1 {
		t.Fatal("a forbidden session was created")
	}
}

func TestJWTReconnectWithNarrowerTokenDropsForbiddenMemberships(t *testing.T) {
	ts := startJWTServer(t)
	hour := time.Now().Add(time.Hour).Unix()
	c := ts.openToken(t, "", token(t, jwt.MapClaims{"sub": "alice", "exp": hour}))
	c.welcome()
	c.join("lobby")
	c.join("secret")
	c.cancel()
	ts.gone(t, "alice")
	again := ts.openToken(t, "", token(t, jwt.MapClaims{"sub": "alice", "exp": hour, "sessions": []string{"lobby"}}))
	again.welcome()
	got := map[string]string{}
	for range 2 {
		m := again.expect(typeControl, "")
		got[str(m.SessionID)] = str(m.Action) + " " + str(m.Reason)
	}
	if got["lobby"] != "joined -" || got["secret"] != "error permission denied" {
		t.Fatalf("restore: %v", got)
	}
	if n := ts.members("secret"); n > 0 { // -1: the session went with its last member
		t.Fatal("forbidden membership kept")
	}
}

func TestJWTPublicKeys(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherEC, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pemOf := func(pub any) []byte {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}
	claims := jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}
	sign := func(m jwt.SigningMethod, key any) string {
		s, err := jwt.NewWithClaims(m, claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, tc := range []struct {
		name  string
		pem   []byte
		token string
		ok    bool
	}{
		{"RS256", pemOf(&rsaKey.PublicKey), sign(jwt.SigningMethodRS256, rsaKey), true},
		{"ES256", pemOf(&ecKey.PublicKey), sign(jwt.SigningMethodES256, ecKey), true},
		{"ES256 other key", pemOf(&ecKey.PublicKey), sign(jwt.SigningMethodES256, otherEC), false},
		{"HS256 with the public key as secret", pemOf(&rsaKey.PublicKey), func() string {
			s, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(pemOf(&rsaKey.PublicKey))
			return s
		}(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := NewJWTPublicKey(tc.pem)
			if err != nil {
				t.Fatal(err)
			}
			id, err := a.Authenticate(tc.token)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok %v", err, tc.ok)
			}
			if tc.ok && id.ClientID != "alice" {
				t.Fatalf("client %q", id.ClientID)
			}
		})
	}
	if _, err := NewJWTPublicKey([]byte("not pem")); err == nil {
		t.Fatal("garbage accepted as a key")
	}
	if _, err := NewJWTSecret([]byte("short")); err == nil {
		t.Fatal("short secret accepted")
	}
}
