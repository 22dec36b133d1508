// Package redis is StreamHub's Redis engine: several StreamHub instances
// share sessions through one Redis (7.0 or later, or Valkey).
//
// Each session has two keys with the hash tag {session}: a meta hash (epoch,
// last seq, history bytes, last accept time) and a stream holding the
// history, whose entry IDs are the seqs. One Lua script per publish creates
// the epoch when missing, assigns the next seq, appends, trims by size,
// bytes and age, sets expiries and publishes the entry on the session's
// Pub/Sub channel; Redis runs it atomically, so seqs are contiguous whoever
// publishes. Accept times come from the Redis server's clock, so every
// instance agrees on them.
//
// Live entries reach an instance through one dedicated Pub/Sub connection
// carrying the channels of the sessions it subscribed to. Pub/Sub is at most
// once: Redis drops a subscriber that falls too far behind and nothing is
// delivered while the connection is down. When the connection is regained
// the engine subscribes every session again and calls HandleResync, and when
// it had to drop entries because the handler fell behind it calls
// HandleResync too; the caller compares positions with History.
//
// Redis that lost its data (a restart without persistence, a failover to a
// replica that had not caught up, an eviction) is noticed through epochs: a
// publish or read that finds no meta creates a new epoch, so the next entry
// and the next History position carry an epoch the caller does not know,
// and seq starts again at 1. A restart also drops the Pub/Sub connection,
// so HandleResync follows and the caller's History reads find the new epoch
// even for sessions nobody publishes to.
package redis

import (
	"context"
	"crypto/sha1"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/streamhub/streamhub/engine"
)

//go:embed lua/common.lua
var commonLua string

//go:embed lua/publish.lua
var publishLua string

//go:embed lua/history.lua
var historyLua string

// Options configures an Engine. Zero values mean the documented defaults.
type Options struct {
	// Addr is the Redis to use: host:port, or a redis:// or rediss:// (TLS)
	// URL with user, password and database number. Required.
	Addr string
	// Prefix starts every key and channel, so deployments can share a
	// Redis. Default "streamhub".
	Prefix string
	// Bounds limits each session's history; Size must be at least 1.
	Bounds engine.Bounds
	// Handler receives the entries of subscribed sessions; nil drops them.
	// When it is an engine.ReplacedHandler it also gets the Notify calls
	// for Instance.
	Handler engine.Handler
	// Instance names this engine's instance: Notify for it, from any
	// instance, reaches Handler. Empty: this engine receives none.
	Instance string
	// Observer is told about every operation; nil: nobody is.
	Observer engine.Observer
	// Timeout bounds dialing, each connection's writes and the wait for a
	// reply, so that a Redis that stopped answering turns into
	// ErrUnavailable. Default 2s.
	Timeout time.Duration
	// Workers is how many goroutines hand live entries to the Handler (a
	// session always goes to the same one, which keeps its order). Default 4.
	Workers int
	// QueueSize is each worker's queue of entries waiting for the Handler.
	// When it is full entries are dropped and HandleResync follows, as when
	// Redis drops a slow subscriber. Default 16384.
	QueueSize int
}

// Engine is the Redis engine. Create it with New.
type Engine struct {
	client  rueidis.Client
	publish *rueidis.Lua
	// publishSHA is the publish script's SHA-1, for pipelined EVALSHAs.
	publishSHA string
	history    *rueidis.Lua
	claim      *rueidis.Lua
	release    *rueidis.Lua
	// memberships is the fenced write of a client's memberships.
	memberships *rueidis.Lua
	prefix      string
	// notifyCh is this instance's notify channel; empty without Instance.
	notifyCh string
	bounds   engine.Bounds
	handler  engine.Handler
	observer engine.Observer
	timeout  time.Duration
	seed     maphash.Seed

	// subMu serializes Subscribe, Unsubscribe and the resubscription after a
	// reconnect, so that what Redis is subscribed to follows the order of
	// the calls. Lock order: subMu before mu.
	subMu sync.Mutex
	mu    sync.RWMutex            // guards subs and conn
	subs  map[string]struct{}     // sessions subscribed, by name
	conn  rueidis.DedicatedClient // the live Pub/Sub connection; nil while down
	queue []chan rueidis.PubSubMessage

	lost chan struct{} // a token when entries were dropped: resync

	closed atomic.Bool
	ctx    context.Context // canceled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the Pub/Sub loop and the workers
	once   sync.Once
}

var _ engine.Engine = (*Engine)(nil)

// New connects to Redis and returns a running engine once its Pub/Sub
// connection is up. When Redis cannot be reached before ctx ends it returns
// an error wrapping engine.ErrUnavailable.
func New(ctx context.Context, opts Options) (*Engine, error) {
	b := opts.Bounds.WithDefaults()
	if err := b.Validate(); err != nil {
		return nil, err
	}
	if opts.Addr == "" {
		return nil, errors.New("engine redis: Addr is required")
	}
	if opts.Prefix == "" {
		opts.Prefix = "streamhub"
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Second
	}
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = 16384
	}
	if opts.Handler == nil {
		opts.Handler = engine.HandlerFuncs{}
	}
	copt, err := clientOption(opts.Addr)
	if err != nil {
		return nil, err
	}
	copt.Dialer.Timeout = opts.Timeout
	copt.ConnWriteTimeout = opts.Timeout
	copt.DisableCache = true // StreamHub reads nothing cacheable
	// rueidis retries read-only commands (HGETALL, HMGET, EXISTS) after
	// network errors until the caller's context ends: with Redis down a
	// caller without a deadline would wait forever. The seam promises
	// ErrUnavailable instead; callers decide about retrying.
	copt.DisableRetry = true
	copt.ClientName = "streamhub"
	client, err := rueidis.NewClient(copt)
	if err != nil {
		return nil, fmt.Errorf("%w: redis %s: %w", engine.ErrUnavailable, redactedAddr(opts.Addr), err)
	}
	e := &Engine{
		client:      client,
		publish:     rueidis.NewLuaScript(commonLua + publishLua),
		publishSHA:  scriptSHA(commonLua + publishLua),
		history:     rueidis.NewLuaScript(commonLua + historyLua),
		claim:       rueidis.NewLuaScript(claimLua),
		release:     rueidis.NewLuaScript(releaseLua),
		memberships: rueidis.NewLuaScript(membershipsLua),
		prefix:      opts.Prefix,
		bounds:      b,
		handler:     opts.Handler,
		observer:    opts.Observer,
		timeout:     opts.Timeout,
		seed:        maphash.MakeSeed(),
		subs:        make(map[string]struct{}),
		lost:        make(chan struct{}, 1),
	}
	if opts.Instance != "" {
		e.notifyCh = e.notifyChannel(opts.Instance)
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	for range opts.Workers {
		q := make(chan rueidis.PubSubMessage, opts.QueueSize)
		e.queue = append(e.queue, q)
		e.wg.Add(1)
		go e.work(q)
	}
	up := make(chan struct{})
	e.wg.Add(1)
	go e.runPubSub(up)
	select {
	case <-up:
		return e, nil
	case <-ctx.Done():
		_ = e.Close()
		return nil, fmt.Errorf("%w: redis %s: no Pub/Sub connection: %w", engine.ErrUnavailable, redactedAddr(opts.Addr), ctx.Err())
	}
}

// scriptSHA is the SHA-1 that Redis names a script by.
func scriptSHA(script string) string {
	sum := sha1.Sum([]byte(script))
	return hex.EncodeToString(sum[:])
}

func clientOption(addr string) (rueidis.ClientOption, error) {
	if strings.Contains(addr, "://") {
		opt, err := rueidis.ParseURL(addr)
		if err != nil {
			return opt, fmt.Errorf("engine redis: address %s: %w", redactedAddr(addr), err)
		}
		return opt, nil
	}
	return rueidis.ClientOption{InitAddress: []string{addr}}, nil
}

// redactedAddr is addr without a password, for errors and logs.
func redactedAddr(addr string) string {
	scheme, rest, ok := strings.Cut(addr, "://")
	if !ok {
		return addr
	}
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		rest = "***@" + rest[at+1:]
	}
	return scheme + "://" + rest
}

func (e *Engine) metaKey(session string) string { return e.prefix + ":meta:{" + session + "}" }

// onceKey holds what the session accepted from the client with id, so that
// the same publication is accepted once: length-prefixed, so that no two
// (client, id) pairs share a key.
func (e *Engine) onceKey(session, clientID, id string) string {
	return e.prefix + ":once:{" + session + "}:" + strconv.Itoa(len(clientID)) + ":" + clientID + id
}

// onceTTL is how long a publication with id is accepted once (0 for no
// id): as long as history keeps it, or the meta when history does not
// age, or ten minutes when neither does.
func (e *Engine) onceTTL(id string) string {
	switch {
	case id == "":
		return "0"
	case e.bounds.TTL > 0:
		return ms(e.bounds.TTL)
	case e.bounds.MetaTTL > 0:
		return ms(e.bounds.MetaTTL)
	}
	return ms(10 * time.Minute)
}
func (e *Engine) streamKey(session string) string { return e.prefix + ":hist:{" + session + "}" }
func (e *Engine) channel(session string) string   { return e.prefix + ":ch:{" + session + "}" }

// sessionOf is the session whose channel ch is, or false.
func (e *Engine) sessionOf(ch string) (string, bool) {
	s, ok := strings.CutPrefix(ch, e.prefix+":ch:{")
	if !ok || !strings.HasSuffix(s, "}") {
		return "", false
	}
	return s[:len(s)-1], true
}

func ms(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }

// Publish implements engine.Engine.
func (e *Engine) Publish(ctx context.Context, session string, p engine.Publication) (ent engine.Entry, err error) {
	defer e.observer.Done(engine.OpPublish, time.Now(), &err)
	if err := e.check(ctx); err != nil {
		return engine.Entry{}, err
	}
	x := e.publishExec(engine.Publishing{Session: session, Publication: p})
	return e.published(ctx, p, e.publish.Exec(ctx, e.client, x.Keys, x.Args))
}

// PublishMany implements engine.Engine: one pipelined round of the publish
// script, which Redis runs in order.
func (e *Engine) PublishMany(ctx context.Context, ps []engine.Publishing) ([]engine.Entry, []error) {
	start := time.Now()
	entries, errs := make([]engine.Entry, len(ps)), make([]error, len(ps))
	defer func() {
		for _, err := range errs {
			e.observer.Done(engine.OpPublish, start, &err)
		}
	}()
	if err := e.check(ctx); err != nil {
		for i := range errs {
			errs[i] = err
		}
		return entries, errs
	}
	cmds := make(rueidis.Commands, len(ps))
	for i, p := range ps {
		x := e.publishExec(p)
		cmds[i] = e.client.B().Evalsha().Sha1(e.publishSHA).Numkeys(int64(len(x.Keys))).Key(x.Keys...).Arg(x.Args...).Build()
	}
	results := e.client.DoMulti(ctx, cmds...)
	// Those Redis had no script for (a new or restarted Redis, SCRIPT
	// FLUSH) did not run: again, in order, loading the script first.
	var again []int
	var xs []rueidis.LuaExec
	for i, r := range results {
		if rerr, ok := rueidis.IsRedisErr(r.Error()); ok && rerr.IsNoScript() {
			again = append(again, i)
			xs = append(xs, e.publishExec(ps[i]))
		}
	}
	if len(again) > 0 {
		for k, r := range e.publish.ExecMulti(ctx, e.client, xs...) {
			results[again[k]] = r
		}
	}
	for i, r := range results {
		entries[i], errs[i] = e.published(ctx, ps[i].Publication, r)
	}
	return entries, errs
}

// publishExec is the publish script's keys and arguments for p.
func (e *Engine) publishExec(p engine.Publishing) rueidis.LuaExec {
	streamTTL := e.bounds.TTL
	if streamTTL == 0 {
		streamTTL = e.bounds.MetaTTL
	}
	return rueidis.LuaExec{
		Keys: []string{e.metaKey(p.Session), e.streamKey(p.Session), e.onceKey(p.Session, p.ClientID, p.ID)},
		Args: []string{
			e.channel(p.Session), p.ClientID, p.ID, rueidis.BinaryString(p.Data), engine.NewEpoch(),
			strconv.Itoa(e.bounds.Size), strconv.Itoa(e.bounds.MaxBytes),
			ms(e.bounds.TTL), ms(e.bounds.MetaTTL), ms(streamTTL), e.onceTTL(p.ID),
		},
	}
}

// published is the entry the publish script's result r gives p.
func (e *Engine) published(ctx context.Context, p engine.Publication, r rueidis.RedisResult) (engine.Entry, error) {
	res, err := r.ToArray()
	if err != nil {
		return engine.Entry{}, e.fail(ctx, "publish", err)
	}
	if len(res) != 3 {
		return engine.Entry{}, fmt.Errorf("engine redis: publish returned %d values", len(res))
	}
	seq, err1 := res[0].AsInt64()
	epoch, err2 := res[1].ToString()
	accepted, err3 := res[2].AsInt64()
	if err := errors.Join(err1, err2, err3); err != nil {
		return engine.Entry{}, fmt.Errorf("engine redis: publish reply: %w", err)
	}
	return engine.Entry{Seq: uint64(seq), Epoch: epoch, Accepted: time.UnixMilli(accepted), Publication: p}, nil
}

// History implements engine.Engine.
func (e *Engine) History(ctx context.Context, session string, after uint64, limit int) (entries []engine.Entry, pos engine.Position, err error) {
	defer e.observer.Done(engine.OpHistory, time.Now(), &err)
	if err := e.check(ctx); err != nil {
		return nil, engine.Position{}, err
	}
	first := after + 1
	if after >= math.MaxInt64 { // beyond any seq: nothing to read
		limit, first = 0, math.MaxInt64
	}
	res, err := e.history.Exec(ctx, e.client,
		[]string{e.metaKey(session), e.streamKey(session)},
		[]string{
			strconv.FormatUint(first, 10) + "-0", strconv.Itoa(limit), engine.NewEpoch(),
			ms(e.bounds.TTL), ms(e.bounds.MetaTTL),
		}).ToArray()
	if err != nil {
		return nil, engine.Position{}, e.fail(ctx, "history", err)
	}
	if len(res) != 3 {
		return nil, engine.Position{}, fmt.Errorf("engine redis: history returned %d values", len(res))
	}
	seq, err1 := res[0].AsInt64()
	epoch, err2 := res[1].ToString()
	xr, err3 := res[2].AsXRange()
	if err := errors.Join(err1, err2, err3); err != nil {
		return nil, engine.Position{}, fmt.Errorf("engine redis: history reply: %w", err)
	}
	pos = engine.Position{Seq: uint64(seq), Epoch: epoch}
	if len(xr) == 0 {
		return nil, pos, nil
	}
	entries = make([]engine.Entry, 0, len(xr))
	for _, x := range xr {
		ent, err := fromStream(x, epoch)
		if err != nil {
			return nil, engine.Position{}, err
		}
		entries = append(entries, ent)
	}
	return entries, pos, nil
}

func fromStream(x rueidis.XRangeEntry, epoch string) (engine.Entry, error) {
	id, _, _ := strings.Cut(x.ID, "-")
	seq, err := strconv.ParseUint(id, 10, 64)
	if err != nil {
		return engine.Entry{}, fmt.Errorf("engine redis: stream entry ID %q: %w", x.ID, err)
	}
	accepted, err := strconv.ParseInt(x.FieldValues["a"], 10, 64)
	if err != nil {
		return engine.Entry{}, fmt.Errorf("engine redis: stream entry %q: accepted: %w", x.ID, err)
	}
	var data []byte
	if d := x.FieldValues["d"]; d != "" {
		data = []byte(d)
	}
	return engine.Entry{
		Seq: seq, Epoch: epoch, Accepted: time.UnixMilli(accepted),
		Publication: engine.Publication{ClientID: x.FieldValues["c"], ID: x.FieldValues["i"], Data: data},
	}, nil
}

// Remove implements engine.Engine.
func (e *Engine) Remove(ctx context.Context, session string) (err error) {
	defer e.observer.Done(engine.OpRemove, time.Now(), &err)
	if err := e.check(ctx); err != nil {
		return err
	}
	cmd := e.client.B().Del().Key(e.metaKey(session), e.streamKey(session)).Build()
	if err := e.client.Do(ctx, cmd).Error(); err != nil {
		return e.fail(ctx, "remove", err)
	}
	return nil
}

// Touch implements engine.Engine with PEXPIRE … GT on each session's meta,
// all in one round trip: GT never shortens an expiry, leaves a meta without
// one (MetaTTL 0) without one, and PEXPIRE creates no key.
//
// The history stream has an expiry of its own, set by each publish. When
// entries age out (TTL > 0) it is TTL after the last publish, when the
// newest entry ages out: the stream going before the meta drops nothing a
// read would still return, so Touch leaves it, and aged payloads do not stay
// in Redis for as long as a session is touched. When entries do not age out
// (TTL 0) the stream lives as long as the meta, and must go on doing so: a
// session that kept its epoch and seq but lost its history would have a gap
// no bound explains. Touch then extends the stream alike, after the meta, so
// that the stream is the one that goes last; a stream outliving its meta is
// harmless, since the next publish or read finds no meta and deletes it.
func (e *Engine) Touch(ctx context.Context, ttl time.Duration, sessions ...string) (err error) {
	defer e.observer.Done(engine.OpTouch, time.Now(), &err)
	if err := e.check(ctx); err != nil {
		return err
	}
	if ttl <= 0 || len(sessions) == 0 {
		return nil // nothing to extend: GT would refuse a shorter expiry anyway
	}
	// Whole milliseconds, rounded up: at least ttl.
	msec := int64((ttl + time.Millisecond - 1) / time.Millisecond)
	withStream := e.bounds.TTL == 0
	cmds := make(rueidis.Commands, 0, 2*len(sessions))
	for _, s := range sessions {
		cmds = append(cmds, e.client.B().Pexpire().Key(e.metaKey(s)).Milliseconds(msec).Gt().Build())
		if withStream {
			cmds = append(cmds, e.client.B().Pexpire().Key(e.streamKey(s)).Milliseconds(msec).Gt().Build())
		}
	}
	for _, r := range e.client.DoMulti(ctx, cmds...) {
		if err := r.Error(); err != nil {
			return e.fail(ctx, "touch", err)
		}
	}
	return nil
}

// Close implements engine.Engine: it stops the Pub/Sub loop and the workers,
// waits for them, and closes the connections.
func (e *Engine) Close() error {
	e.once.Do(func() {
		e.closed.Store(true)
		e.cancel()
		e.wg.Wait()
		e.client.Close()
	})
	return nil
}

func (e *Engine) check(ctx context.Context) error {
	if e.closed.Load() {
		return engine.ErrClosed
	}
	return ctx.Err()
}

// fail turns a client error into what the seam promises: ErrClosed after
// Close, the context's error when the caller gave up, ErrUnavailable when
// Redis could not be reached or answer in time, and Redis's own error
// otherwise.
func (e *Engine) fail(ctx context.Context, op string, err error) error {
	switch {
	case e.closed.Load():
		return fmt.Errorf("engine redis: %s: %w", op, engine.ErrClosed)
	case errors.Is(ctx.Err(), context.Canceled):
		return fmt.Errorf("engine redis: %s: %w", op, ctx.Err())
	}
	if rerr, ok := rueidis.IsRedisErr(err); ok {
		for _, busy := range []string{"LOADING", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN"} {
			if strings.HasPrefix(rerr.Error(), busy) {
				return fmt.Errorf("%w: redis %s: %w", engine.ErrUnavailable, op, err)
			}
		}
		return fmt.Errorf("engine redis: %s: %w", op, err)
	}
	// Anything but a reply from Redis — a refused dial, a reset or timed out
	// connection, a deadline — means Redis did not answer.
	return fmt.Errorf("%w: redis %s: %w", engine.ErrUnavailable, op, err)
}
