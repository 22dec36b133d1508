package streaming

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	"goa.design/goa/v3/security"
)

// Identity is who a stream acts as, established when it opens.
type Identity struct {
	// ClientID is the client's identity; it replaces x-client-id.
	ClientID string
	// Sessions lists the sessions the client may join or send to: names, or
	// prefixes ending in "*". nil allows every session.
	Sessions []string
	// Expires, if not zero, is when the stream stops being allowed.
	Expires time.Time
}

// May reports whether the identity may join or send to session.
func (id *Identity) May(session string) bool {
	if id == nil || id.Sessions == nil {
		return true
	}
	for _, p := range id.Sessions {
		if prefix, ok := strings.CutSuffix(p, "*"); ok && strings.HasPrefix(session, prefix) || p == session {
			return true
		}
	}
	return false
}

// Authenticator verifies the bearer token a stream opens with.
type Authenticator interface {
	// Authenticate returns the identity token proves, or why it proves none.
	Authenticate(token string) (*Identity, error)
}

// WithAuthenticator requires every stream to present a token a verifies.
// Without it, streams are identified by their x-client-id.
func WithAuthenticator(a Authenticator) Option {
	return func(s *Service) { s.auth = a }
}

type identityKey struct{}

// JWTAuth implements the generated Auther: with an Authenticator, it
// verifies the stream's token and records the identity for StreamData.
func (s *Service) JWTAuth(ctx context.Context, token string, _ *security.JWTScheme) (context.Context, error) {
	if s.auth == nil {
		return ctx, nil
	}
	if token == "" {
		s.metrics.Disconnected("unauthenticated")
		return ctx, streamsvc.MakeUnauthenticated(errors.New("missing bearer token"))
	}
	id, err := s.auth.Authenticate(token)
	if err != nil {
		s.metrics.Disconnected("unauthenticated")
		return ctx, streamsvc.MakeUnauthenticated(fmt.Errorf("invalid token: %w", err))
	}
	return context.WithValue(ctx, identityKey{}, id), nil
}

func identityFrom(ctx context.Context) *Identity {
	id, _ := ctx.Value(identityKey{}).(*Identity)
	return id
}
