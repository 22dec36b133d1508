// Package engine is the seam between StreamHub's sessions and the store that
// orders, keeps and fans out their messages: it assigns each session's seq,
// keeps the session's bounded history and delivers entries to every instance
// that asked for them. It holds the interface and its types only and imports
// nothing beyond the standard library; backends live in engine/memory (one
// process) and engine/redis (several instances through Redis), and
// engine/enginetest is the conformance suite both pass.
package engine

import (
	"context"
	"time"
)

// Publication is what a client publishes to a session: who sent it, the
// client's own message id (echoed in errors and acknowledgements) and the
// payload.
type Publication struct {
	// ClientID is the publishing client.
	ClientID string
	// ID is the client's id for the message; it may be empty.
	ID string
	// Data is the payload. An engine may keep the slice (the memory
	// backend holds it in history): callers must not modify it after
	// Publish.
	Data []byte
}

// Entry is a publication the engine accepted: its place in the session's
// order and the time it was accepted.
type Entry struct {
	// Seq is the entry's number within Epoch: 1 for the first entry, and
	// one more for every entry after it.
	Seq uint64
	// Epoch names the session's current incarnation. A session that was
	// removed, expired or lost by the store starts a new epoch at seq 1.
	Epoch string
	// Accepted is when the engine accepted the entry, in milliseconds. It
	// never goes backwards within an epoch.
	Accepted time.Time
	Publication
}

// Publishing is one publication of a PublishMany: the session and what is
// published to it.
type Publishing struct {
	Session string
	Publication
}

// Position is where a session's order stands: the last seq assigned in
// Epoch (0 when none was).
type Position struct {
	// Seq is the last seq assigned in Epoch.
	Seq uint64
	// Epoch is the session's current epoch.
	Epoch string
}

// Bounds limits each session's history. History keeps the newest entries: at
// most Size of them, at most MaxBytes of Data in total (the newest entry is
// always kept, however large), none older than TTL. The session's meta (epoch
// and seq) outlives its history so that seq stays monotonic, and goes MetaTTL
// after the session's last publish (or later, when Engine.Touch keeps it), so
// that a name used again later starts a new epoch.
type Bounds struct {
	// Size is the number of entries kept; it must be at least 1.
	Size int
	// MaxBytes bounds the Data bytes kept; 0 means no byte bound.
	MaxBytes int
	// TTL is the age after which an entry leaves history; 0 means entries
	// do not age out.
	TTL time.Duration
	// MetaTTL is how long a session's epoch and seq outlive its last
	// publish (or its creation by History), unless Touch keeps them longer.
	// Zero means TTL plus one hour, and never when TTL is 0. A value below
	// TTL is raised to TTL.
	MetaTTL time.Duration
}

// DefaultMetaMargin is how much longer than TTL a session's meta lives by
// default.
const DefaultMetaMargin = time.Hour

// WithDefaults returns b with MetaTTL filled in as documented on Bounds.
func (b Bounds) WithDefaults() Bounds {
	if b.MetaTTL == 0 && b.TTL > 0 {
		b.MetaTTL = b.TTL + DefaultMetaMargin
	}
	if b.MetaTTL > 0 && b.MetaTTL < b.TTL {
		b.MetaTTL = b.TTL
	}
	return b
}

// Validate reports bounds an engine cannot work with.
func (b Bounds) Validate() error {
	switch {
	case b.Size < 1:
		return &BoundsError{"Size must be at least 1"}
	case b.MaxBytes < 0:
		return &BoundsError{"MaxBytes must not be negative"}
	case b.TTL < 0 || b.MetaTTL < 0:
		return &BoundsError{"TTL and MetaTTL must not be negative"}
	}
	return nil
}

// BoundsError is returned by constructors given Bounds they cannot use.
type BoundsError struct{ Reason string }

// Error implements error.
func (e *BoundsError) Error() string { return "engine: invalid bounds: " + e.Reason }

// Handler receives what the engine delivers for the sessions this instance
// subscribed to. Its methods may be called from engine goroutines, and
// concurrently for different sessions; for one session HandleEntry calls do
// not overlap and come in seq order as far as the backend can ensure it (the
// Redis backend's Pub/Sub may lose entries: a caller that sees a seq beyond
// the one it expected repairs the gap with History). A handler must return
// quickly and must not call back into the engine for the same session from
// HandleEntry (see each backend).
type Handler interface {
	// HandleEntry is called for each entry published, on any instance, to
	// a subscribed session.
	HandleEntry(session string, e Entry)
	// HandleResync is called after the live feed was lost and regained:
	// every subscribed session may have missed entries, and the caller
	// should compare its positions with History.
	HandleResync()
}

// Engine orders, keeps and fans out sessions' entries. Every method is safe
// for concurrent use, takes a context that bounds it, and returns an error
// wrapping ErrUnavailable when the store cannot be reached, ErrClosed after
// Close, or the context's error when the context ended first.
type Engine interface {
	// Publish accepts p as the session's next entry: it assigns the next
	// seq atomically (creating the epoch when the session has none),
	// appends it to history within the Bounds and delivers it to every
	// instance subscribed to the session, this one included. It is all or
	// nothing, with one caveat: when the error is a timeout, the store may
	// have accepted the entry, and it then arrives through HandleEntry.
	//
	// A publication with an ID that the session accepted from the same
	// client before, in its epoch and within its history's TTL (or the
	// meta's, or ten minutes, when history does not age), is not accepted
	// again: Publish returns the entry it got then. A client that sends a
	// publication again, not knowing whether the first attempt landed, so
	// never doubles it.
	Publish(ctx context.Context, session string, p Publication) (Entry, error)
	// PublishMany publishes each of ps as Publish would, in order — a
	// session's entries get their seqs in the order of ps — and in one
	// round trip to the store where it allows, so that one publisher's
	// stream of publications is pipelined, not one round trip each. Each
	// has its own result: entries[i], or errs[i] when it failed.
	PublishMany(ctx context.Context, ps []Publishing) (entries []Entry, errs []error)
	// History returns the entries after seq after that history still
	// holds, oldest first, at most limit of them (limit < 0: all, 0: none),
	// and the session's position. A session without meta gets one: seq 0
	// and a fresh epoch, which the next Publish keeps.
	History(ctx context.Context, session string, after uint64, limit int) ([]Entry, Position, error)
	// Subscribe asks for the sessions' entries to be delivered to the
	// Handler. When it returns nil, every entry published afterwards is
	// delivered (subject to the backend's guarantees); on error none of
	// the sessions it newly added is subscribed. Subscribing twice is the
	// same as once.
	Subscribe(ctx context.Context, sessions ...string) error
	// Unsubscribe stops deliveries for the sessions. Entries already on
	// their way are dropped.
	Unsubscribe(ctx context.Context, sessions ...string) error
	// Remove drops the session's history and meta: its next Publish or
	// History starts a new epoch. Subscriptions stay.
	Remove(ctx context.Context, session string) error
	// Touch keeps the sessions' meta (epoch and seq) for at least ttl from
	// now: a session's meta otherwise goes MetaTTL after its last publish,
	// and an instance whose clients are members of a session (live, or
	// retained for a reconnect) keeps its epoch while they are. It never
	// shortens what a publish or an earlier Touch gave, creates no meta for
	// a session that has none, and touches nothing else. A publish after it
	// does not shorten it either.
	Touch(ctx context.Context, ttl time.Duration, sessions ...string) error
	// Close stops the engine's goroutines and connections. It is
	// idempotent; calls after it fail with ErrClosed.
	Close() error

	// Memberships keeps clients' memberships across streams and instances.
	Memberships
	// Clients decides which instance owns each client's stream.
	Clients
}
