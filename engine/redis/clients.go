package redis

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/streamhub/streamhub/engine"
)

//go:embed lua/claim.lua
var claimLua string

//go:embed lua/release.lua
var releaseLua string

//go:embed lua/memberships.lua
var membershipsLua string

var errTTL = errors.New("engine redis: ttl must be positive")

// A client's keys share the hash tag {client:<id>}: its owner hash (fence
// and owning instance) and its memberships hash (session → seq:paused:epoch).
func (e *Engine) ownerKey(clientID string) string {
	return e.prefix + ":own:{client:" + clientID + "}"
}

func (e *Engine) membershipsKey(clientID string) string {
	return e.prefix + ":ms:{client:" + clientID + "}"
}

func (e *Engine) aliveKey(instance string) string {
	return e.prefix + ":alive:{instance:" + instance + "}"
}

func (e *Engine) notifyChannel(instance string) string {
	return e.prefix + ":notify:{instance:" + instance + "}"
}

func encodeMembership(m engine.Membership) string {
	paused := "0"
	if m.Paused {
		paused = "1"
	}
	return strconv.FormatUint(m.Seq, 10) + ":" + paused + ":" + m.Epoch
}

func decodeMembership(session, v string) (engine.Membership, error) {
	seq, rest, ok1 := strings.Cut(v, ":")
	paused, epoch, ok2 := strings.Cut(rest, ":")
	n, err := strconv.ParseUint(seq, 10, 64)
	if !ok1 || !ok2 || err != nil || (paused != "0" && paused != "1") {
		return engine.Membership{}, fmt.Errorf("engine redis: malformed membership of %q", session)
	}
	return engine.Membership{Session: session, Seq: n, Epoch: epoch, Paused: paused == "1"}, nil
}

// fencedWrite runs the memberships script and turns a refusal into
// ErrFenced.
func (e *Engine) fencedWrite(ctx context.Context, op, clientID string, fence uint64, args ...string) error {
	if err := e.check(ctx); err != nil {
		return err
	}
	argv := append([]string{strconv.FormatUint(fence, 10), op}, args...)
	n, err := e.memberships.Exec(ctx, e.client,
		[]string{e.ownerKey(clientID), e.membershipsKey(clientID)}, argv).AsInt64()
	if err != nil {
		return e.fail(ctx, op+" memberships", err)
	}
	if n != 1 {
		return fmt.Errorf("engine redis: %s memberships of %q under fence %d: %w", op, clientID, fence, engine.ErrFenced)
	}
	return nil
}

// SaveMemberships implements engine.Memberships with one script.
func (e *Engine) SaveMemberships(ctx context.Context, clientID string, fence uint64, ms []engine.Membership) (err error) {
	defer e.observer.Done(engine.OpSaveMemberships, time.Now(), &err)
	args := make([]string, 0, 1+2*len(ms))
	args = append(args, "0")
	for _, m := range ms {
		args = append(args, m.Session, encodeMembership(m))
	}
	return e.fencedWrite(ctx, "save", clientID, fence, args...)
}

// LoadMemberships implements engine.Memberships.
func (e *Engine) LoadMemberships(ctx context.Context, clientID string) (ms []engine.Membership, err error) {
	defer e.observer.Done(engine.OpLoadMemberships, time.Now(), &err)
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	all, err := e.client.Do(ctx, e.client.B().Hgetall().Key(e.membershipsKey(clientID)).Build()).AsStrMap()
	if err != nil {
		return nil, e.fail(ctx, "load memberships", err)
	}
	if len(all) == 0 {
		return nil, nil
	}
	ms = make([]engine.Membership, 0, len(all))
	for session, v := range all {
		m, err := decodeMembership(session, v)
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b engine.Membership) int { return strings.Compare(a.Session, b.Session) })
	return ms, nil
}

// RetainMemberships implements engine.Memberships with a key expiry on the
// client's keys (Redis 7.0 has no per-field expiry, and a client's set
// expires whole).
func (e *Engine) RetainMemberships(ctx context.Context, clientID string, fence uint64, ttl time.Duration) (err error) {
	defer e.observer.Done(engine.OpRetainMemberships, time.Now(), &err)
	if ttl <= 0 {
		return errTTL
	}
	return e.fencedWrite(ctx, "retain", clientID, fence, ms(max(ttl, time.Millisecond)))
}

// KeepMemberships implements engine.Memberships (PERSIST).
func (e *Engine) KeepMemberships(ctx context.Context, clientID string, fence uint64) (err error) {
	defer e.observer.Done(engine.OpKeepMemberships, time.Now(), &err)
	return e.fencedWrite(ctx, "keep", clientID, fence, "0")
}

// DropMemberships implements engine.Memberships.
func (e *Engine) DropMemberships(ctx context.Context, clientID string, fence uint64) (err error) {
	defer e.observer.Done(engine.OpDropMemberships, time.Now(), &err)
	return e.fencedWrite(ctx, "drop", clientID, fence, "0")
}

// Claim implements engine.Clients with one script.
func (e *Engine) Claim(ctx context.Context, clientID, instance string, opened time.Time) (fence uint64, previous string, err error) {
	defer e.observer.Done(engine.OpClaim, time.Now(), &err)
	if err := e.check(ctx); err != nil {
		return 0, "", err
	}
	var us int64
	if !opened.IsZero() {
		us = opened.UnixMicro()
	}
	res, err := e.claim.Exec(ctx, e.client, []string{e.ownerKey(clientID)}, []string{instance, strconv.FormatInt(us, 10)}).ToArray()
	if err != nil {
		return 0, "", e.fail(ctx, "claim", err)
	}
	if len(res) == 1 {
		return 0, "", fmt.Errorf("engine redis: claim of a stream opened before the current one's: %w", engine.ErrFenced)
	}
	if len(res) != 2 {
		return 0, "", fmt.Errorf("engine redis: claim returned %d values", len(res))
	}
	fs, err1 := res[0].ToString()
	previous, err2 := res[1].ToString()
	fence, err3 := strconv.ParseUint(fs, 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return 0, "", fmt.Errorf("engine redis: claim reply: %w", err)
	}
	return fence, previous, nil
}

// Release implements engine.Clients with one script.
func (e *Engine) Release(ctx context.Context, clientID, instance string, fence uint64) (ok bool, err error) {
	defer e.observer.Done(engine.OpRelease, time.Now(), &err)
	if err := e.check(ctx); err != nil {
		return false, err
	}
	n, err := e.release.Exec(ctx, e.client,
		[]string{e.ownerKey(clientID), e.membershipsKey(clientID)},
		[]string{instance, strconv.FormatUint(fence, 10)}).AsInt64()
	if err != nil {
		return false, e.fail(ctx, "release", err)
	}
	return n == 1, nil
}

// Owner implements engine.Clients.
func (e *Engine) Owner(ctx context.Context, clientID string) (instance string, fence uint64, err error) {
	defer e.observer.Done(engine.OpOwner, time.Now(), &err)
	if err := e.check(ctx); err != nil {
		return "", 0, err
	}
	vals, err := e.client.Do(ctx, e.client.B().Hmget().Key(e.ownerKey(clientID)).Field("f", "o").Build()).ToArray()
	if err != nil {
		return "", 0, e.fail(ctx, "owner", err)
	}
	if len(vals) != 2 {
		return "", 0, fmt.Errorf("engine redis: owner returned %d values", len(vals))
	}
	if fs, err := vals[0].ToString(); err == nil {
		if fence, err = strconv.ParseUint(fs, 10, 64); err != nil {
			return "", 0, fmt.Errorf("engine redis: owner's fence %q: %w", fs, err)
		}
	}
	instance, _ = vals[1].ToString() // nil: no owner
	return instance, fence, nil
}

// Heartbeat implements engine.Clients with a key that expires after ttl.
func (e *Engine) Heartbeat(ctx context.Context, instance string, ttl time.Duration) (err error) {
	defer e.observer.Done(engine.OpHeartbeat, time.Now(), &err)
	if ttl <= 0 {
		return errTTL
	}
	if err := e.check(ctx); err != nil {
		return err
	}
	cmd := e.client.B().Set().Key(e.aliveKey(instance)).Value("1").PxMilliseconds(max(ttl, time.Millisecond).Milliseconds()).Build()
	if err := e.client.Do(ctx, cmd).Error(); err != nil {
		return e.fail(ctx, "heartbeat", err)
	}
	return nil
}

// Alive implements engine.Clients.
func (e *Engine) Alive(ctx context.Context, instance string) (alive bool, err error) {
	defer e.observer.Done(engine.OpAlive, time.Now(), &err)
	if err := e.check(ctx); err != nil {
		return false, err
	}
	n, err := e.client.Do(ctx, e.client.B().Exists().Key(e.aliveKey(instance)).Build()).AsInt64()
	if err != nil {
		return false, e.fail(ctx, "alive", err)
	}
	return n == 1, nil
}

// Notify implements engine.Clients: a message on the instance's notify
// channel, which the instance's engine (Options.Instance) hands to its
// ReplacedHandler. Pub/Sub is at most once.
func (e *Engine) Notify(ctx context.Context, instance, clientID string, fence uint64) (err error) {
	defer e.observer.Done(engine.OpNotify, time.Now(), &err)
	if err := e.check(ctx); err != nil {
		return err
	}
	msg := strconv.FormatUint(fence, 10) + ":" + clientID
	if err := e.client.Do(ctx, e.client.B().Publish().Channel(e.notifyChannel(instance)).Message(msg).Build()).Error(); err != nil {
		return e.fail(ctx, "notify", err)
	}
	return nil
}

// handleNotify passes a notify message to the handler, when it wants them.
func (e *Engine) handleNotify(m rueidis.PubSubMessage) {
	rh, ok := e.handler.(engine.ReplacedHandler)
	if !ok {
		return
	}
	fs, clientID, ok := strings.Cut(m.Message, ":")
	fence, err := strconv.ParseUint(fs, 10, 64)
	if !ok || err != nil {
		return
	}
	rh.HandleReplaced(clientID, fence)
}
