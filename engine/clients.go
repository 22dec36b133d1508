package engine

import (
	"context"
	"time"
)

// Membership is what a client's membership of a session is: the session, the
// last seq handed to the client's stream in Epoch, and whether the client
// paused it. It outlives the client's stream so that a new stream of the same
// client, on any instance, restores it.
type Membership struct {
	// Session is the session's name.
	Session string
	// Seq is the last seq handed to the client's stream (best effort).
	Seq uint64
	// Epoch is the session's epoch Seq belongs to.
	Epoch string
	// Paused is true while the client has paused the membership.
	Paused bool
}

// Memberships is the store of clients' memberships, kept apart from the
// instance that serves a client so that the client's next stream, anywhere,
// finds them. A client's set is one unit: it is saved, retained, kept and
// dropped whole.
//
// Writes are fenced: each takes the fence the writer got from Clients.Claim
// and is refused with ErrFenced when the client's current fence is another
// one, so that an instance that lost the client (its stream was replaced
// elsewhere) cannot overwrite the new owner's memberships. A client nobody
// ever claimed (or whose record expired) has fence 0. Reads are not fenced.
type Memberships interface {
	// SaveMemberships replaces the client's whole set with ms, atomically
	// and in one round trip; an empty ms leaves the client none. When two
	// memberships name one session the last one counts. The set's expiry
	// (see RetainMemberships) stays as it was.
	SaveMemberships(ctx context.Context, clientID string, fence uint64, ms []Membership) error
	// LoadMemberships returns the client's set, ordered by session name;
	// none when it has none or it expired.
	LoadMemberships(ctx context.Context, clientID string) ([]Membership, error)
	// RetainMemberships makes the client's set, and its ownership record,
	// expire ttl from now: it is called when the client's last stream
	// ended. ttl must be positive.
	RetainMemberships(ctx context.Context, clientID string, fence uint64, ttl time.Duration) error
	// KeepMemberships cancels the expiry RetainMemberships set: a live
	// client's set does not expire.
	KeepMemberships(ctx context.Context, clientID string, fence uint64) error
	// DropMemberships removes the client's set.
	DropMemberships(ctx context.Context, clientID string, fence uint64) error
}

// Clients decides which instance owns each client's stream, and lets
// instances find out about each other: a newer stream of a client, on any
// instance, wins; the instance that had it is told to end it.
//
// Fences only grow per client: a new one is greater than the last one the
// store knew, and not less than the store's clock in microseconds, so that
// fences stay unique even after the client's record expired or the store
// lost its data.
type Clients interface {
	// Claim makes instance the client's owner under a new fence and
	// returns it with the previous owner ("" when there was none, or the
	// previous owner released the client). The caller tells the previous
	// owner to end its stream with Notify, unless Alive says it is gone.
	//
	// opened is when the claiming stream opened. Claims reach the store in
	// no particular order — one sent before the store stalled may run after
	// a newer stream's — so a claim for a stream opened before the one that
	// claimed last is stale: it fails with ErrFenced and changes nothing.
	// A zero opened is never stale.
	Claim(ctx context.Context, clientID, instance string, opened time.Time) (fence uint64, previous string, err error)
	// Release clears the client's owner when instance still owns it under
	// fence, and reports whether it did; a stale fence changes nothing. A
	// record left with no owner and no memberships is removed.
	Release(ctx context.Context, clientID, instance string, fence uint64) (bool, error)
	// Owner returns the client's owner ("" when none) and current fence: an
	// instance that may have missed a Notify (after HandleResync) checks
	// its clients with it.
	Owner(ctx context.Context, clientID string) (instance string, fence uint64, err error)
	// Heartbeat marks instance alive for ttl; an instance repeats it well
	// within ttl.
	Heartbeat(ctx context.Context, instance string, ttl time.Duration) error
	// Alive reports whether instance's last Heartbeat has not expired.
	Alive(ctx context.Context, instance string) (bool, error)
	// Notify tells instance that clientID was claimed under fence by
	// another stream: the instance's ReplacedHandler gets HandleReplaced.
	// Delivery is at most once (the Redis backend's Pub/Sub); an owner
	// that missed it learns from ErrFenced on its next write, or from
	// Owner.
	Notify(ctx context.Context, instance, clientID string, fence uint64) error
}

// ReplacedHandler is implemented by a Handler that wants to hear of its
// clients being claimed elsewhere. An engine calls HandleReplaced when
// another instance Notifies this one; the handler ends the client's stream
// if its own fence for the client is below fence. It must return quickly.
type ReplacedHandler interface {
	// HandleReplaced says clientID was claimed under fence.
	HandleReplaced(clientID string, fence uint64)
}

// NextFence is the fence that follows cur at the time now: one more than
// cur, or now in microseconds when that is greater.
func NextFence(cur uint64, now time.Time) uint64 {
	f := cur + 1
	if us := now.UnixMicro(); us > 0 && uint64(us) > f {
		f = uint64(us)
	}
	return f
}
