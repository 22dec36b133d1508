package engine

import (
	"time"
)

// Operation names, as passed to an Observer.
const (
	OpPublish     = "publish"
	OpHistory     = "history"
	OpSubscribe   = "subscribe"
	OpUnsubscribe = "unsubscribe"
	OpRemove      = "remove"
	OpTouch       = "touch"

	OpSaveMemberships   = "save_memberships"
	OpLoadMemberships   = "load_memberships"
	OpRetainMemberships = "retain_memberships"
	OpKeepMemberships   = "keep_memberships"
	OpDropMemberships   = "drop_memberships"
	OpClaim             = "claim"
	OpRelease           = "release"
	OpOwner             = "owner"
	OpHeartbeat         = "heartbeat"
	OpAlive             = "alive"
	OpNotify            = "notify"
)

// Observer is told about every engine operation once it ends: its name (one
// of the Op constants), its error (nil on success; Result turns it into a
// label) and how long it took. The server exports
// streamhub_engine_operations_total{op,result} and
// streamhub_engine_latency_seconds{op} from it. It must be quick and safe
// for concurrent use; a nil Observer is not called.
type Observer func(op string, err error, took time.Duration)

// Done reports op, begun at start, with the error *err holds now; it is
// meant for a defer at the top of an operation with a named error result:
// defer obs.Done(engine.OpPublish, time.Now(), &err). A nil Observer is not
// called.
func (o Observer) Done(op string, start time.Time, err *error) {
	if o != nil {
		o(op, *err, time.Since(start))
	}
}
