package client

import (
	"errors"
	"fmt"
	"regexp"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Errors the client's calls return. Refusals by the server are
// *ServerError.
var (
	// ErrClosed: the client was closed.
	ErrClosed = errors.New("streamhub: client closed")
	// ErrReplaced: another stream with the same client ID took over. The
	// client closes itself rather than take the identity back, which would
	// make two processes with one ID replace each other forever.
	ErrReplaced = errors.New("streamhub: replaced by another stream with the same client ID")
	// ErrNotJoined: the session is not joined, or was left while the call
	// waited.
	ErrNotJoined = errors.New("streamhub: not a member of the session")
	// ErrPaused: the session is paused, so the client cannot see a
	// publication's delivery; resume it first.
	ErrPaused = errors.New("streamhub: session is paused")
	// ErrDuplicateID: a publication with this ID to this session is still
	// waiting for its delivery.
	ErrDuplicateID = errors.New("streamhub: a publication with this ID is still in flight")
	// ErrTooLarge: the publication exceeds the server's message size.
	ErrTooLarge = errors.New("streamhub: message too large")
	// errNoAnswer: the server stopped answering (see WithHealthCheck).
	errNoAnswer = errors.New("streamhub: no answer from the server")
	// errNoWelcome: the server did not welcome the client in time.
	errNoWelcome = errors.New("streamhub: no welcome from the server within the connect timeout")
)

// permissionDenied is the reason the server gives for a refusal that
// trying again cannot change: the client may not use the session.
const permissionDenied = "permission denied"

// identifierRE is the wire contract's pattern for session, client and
// message IDs.
var identifierRE = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// checkIdentifier refuses what the server would refuse.
func checkIdentifier(what, v string) error {
	if !identifierRE.MatchString(v) {
		return fmt.Errorf("streamhub: invalid %s %q: want 1-128 characters of A-Z a-z 0-9 . _ : -", what, v)
	}
	return nil
}

// ending says what the client does after a stream ended with err.
type ending uint8

const (
	endRetry     ending = iota // reconnect after a backoff delay
	endImmediate               // reconnect at once: the server asked (goaway)
	endFatal                   // close the client: retrying cannot help
)

// classify decides what follows the end of a stream. goaway is the reason
// of the goaway the server sent first, if any.
func (c *Client) classify(err error, goaway string) ending {
	switch goaway {
	case "replaced":
		return endFatal
	case "shutdown", "max_stream_age":
		return endImmediate
	}
	switch status.Code(err) {
	case codes.Aborted:
		return endFatal // replaced, without the goaway reaching us
	case codes.Unauthenticated, codes.PermissionDenied:
		if c.cfg.tokenRefresh {
			return endRetry
		}
		return endFatal
	}
	return endRetry
}
