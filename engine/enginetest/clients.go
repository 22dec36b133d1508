package enginetest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/streamhub/streamhub/engine"
)

// NewInstance builds an engine for the named instance with the given
// handler; every engine one NewShared call's NewInstance builds shares one
// store of memberships and owners, as instances of one deployment do. The
// suite closes each engine when the test ends.
type NewInstance func(t *testing.T, instance string, h engine.Handler) engine.Engine

// NewShared returns a NewInstance on a store of its own (a new memory
// store, a new Redis prefix), empty.
type NewShared func(t *testing.T) NewInstance

// RunClients runs the conformance suite of the memberships and clients
// stores against the engines newShared builds.
func RunClients(t *testing.T, newShared NewShared) {
	// open returns n engines on one fresh store, instances "i0", "i1", …,
	// with their recorders.
	open := func(t *testing.T, n int) ([]engine.Engine, []*Recorder) {
		t.Helper()
		newInstance := newShared(t)
		var es []engine.Engine
		var recs []*Recorder
		for i := range n {
			rec := NewRecorder()
			e := newInstance(t, fmt.Sprintf("i%d", i), rec)
			t.Cleanup(func() {
				if err := e.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			es, recs = append(es, e), append(recs, rec)
		}
		return es, recs
	}
	t.Run("MembershipsRoundTrip", func(t *testing.T) {
		es, _ := open(t, 2)
		testMembershipsRoundTrip(t, es[0], es[1])
	})
	t.Run("MembershipsReplacedAtomically", func(t *testing.T) {
		es, _ := open(t, 2)
		testMembershipsAtomic(t, es[0], es[1])
	})
	t.Run("RetainedMembershipsExpire", func(t *testing.T) {
		es, _ := open(t, 1)
		testRetainExpires(t, es[0])
	})
	t.Run("KeepCancelsExpiry", func(t *testing.T) {
		es, _ := open(t, 1)
		testKeep(t, es[0])
	})
	t.Run("ClaimAdvancesFenceAndReturnsPreviousOwner", func(t *testing.T) {
		es, _ := open(t, 2)
		testClaim(t, es[0], es[1])
	})
	t.Run("StaleClaimRefused", func(t *testing.T) {
		es, _ := open(t, 2)
		testStaleClaim(t, es[0], es[1])
	})
	t.Run("ReleaseWithStaleFenceDoesNothing", func(t *testing.T) {
		es, _ := open(t, 2)
		testRelease(t, es[0], es[1])
	})
	t.Run("FencedWritesRefused", func(t *testing.T) {
		es, _ := open(t, 2)
		testFenced(t, es[0], es[1])
	})
	t.Run("HeartbeatExpires", func(t *testing.T) {
		es, _ := open(t, 2)
		testHeartbeat(t, es[0], es[1])
	})
	t.Run("NotifyReachesTheOtherInstance", func(t *testing.T) {
		es, recs := open(t, 2)
		testNotify(t, es, recs)
	})
	t.Run("ClientsAfterClose", func(t *testing.T) {
		es, _ := open(t, 1)
		testClientsClosed(t, es[0])
	})
}

// testStaleClaim claims for a stream opened after another, then for the
// older one, as a store that stalled may run them: the older is refused and
// changes nothing, wherever it comes from; a claim without an opening time,
// or for a stream opened later, goes through.
func testStaleClaim(t *testing.T, a, b engine.Engine) {
	ctx := context.Background()
	older := time.Now()
	newer := older.Add(time.Millisecond)
	fence, _, err := a.Claim(ctx, "c", "i0", newer)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Claim(ctx, "c", "i1", older); !errors.Is(err, engine.ErrFenced) {
		t.Fatalf("a claim for a stream opened before the owner's: %v, want ErrFenced", err)
	}
	if owner, f, err := a.Owner(ctx, "c"); err != nil || owner != "i0" || f != fence {
		t.Fatalf("after the stale claim the owner is %q under %d (%v), want i0 under %d", owner, f, err, fence)
	}
	if _, prev, err := b.Claim(ctx, "c", "i1", newer.Add(time.Millisecond)); err != nil || prev != "i0" {
		t.Fatalf("a claim for a newer stream: previous %q, %v", prev, err)
	}
	if _, prev, err := a.Claim(ctx, "c", "i0", time.Time{}); err != nil || prev != "i1" {
		t.Fatalf("a claim without an opening time: previous %q, %v", prev, err)
	}
}

func claim(t *testing.T, e engine.Engine, clientID, instance string) (uint64, string) {
	t.Helper()
	fence, prev, err := e.Claim(context.Background(), clientID, instance, time.Time{})
	if err != nil {
		t.Fatalf("Claim(%q, %q): %v", clientID, instance, err)
	}
	return fence, prev
}

func save(t *testing.T, e engine.Engine, clientID string, fence uint64, ms ...engine.Membership) {
	t.Helper()
	if err := e.SaveMemberships(context.Background(), clientID, fence, ms); err != nil {
		t.Fatalf("SaveMemberships(%q): %v", clientID, err)
	}
}

func load(t *testing.T, e engine.Engine, clientID string) []engine.Membership {
	t.Helper()
	ms, err := e.LoadMemberships(context.Background(), clientID)
	if err != nil {
		t.Fatalf("LoadMemberships(%q): %v", clientID, err)
	}
	return ms
}

func sameSet(got, want []engine.Membership) bool {
	if len(got) == 0 && len(want) == 0 {
		return true
	}
	return reflect.DeepEqual(got, want)
}

func testMembershipsRoundTrip(t *testing.T, a, b engine.Engine) {
	if ms := load(t, a, "nobody"); len(ms) != 0 {
		t.Fatalf("a client never seen has memberships %+v", ms)
	}
	fence, _ := claim(t, a, "c:{1}", "i0")
	want := []engine.Membership{ // ordered by session, as Load returns them
		{Session: "a", Seq: 0, Epoch: "", Paused: false},
		{Session: "b:with:colons", Seq: 42, Epoch: "e1", Paused: true},
		{Session: "c{braces}", Seq: math.MaxUint64, Epoch: "0123456789abcdef"},
	}
	save(t, a, "c:{1}", fence, want[2], want[0], want[1])
	for i, e := range []engine.Engine{a, b} { // b is another instance on the same store
		if got := load(t, e, "c:{1}"); !sameSet(got, want) {
			t.Fatalf("instance %d loaded %+v, want %+v", i, got, want)
		}
	}
	if ms := load(t, a, "c:{2}"); len(ms) != 0 {
		t.Fatalf("another client has memberships %+v", ms)
	}
	// The last of two memberships of one session counts.
	save(t, a, "c:{1}", fence, engine.Membership{Session: "s", Seq: 1}, engine.Membership{Session: "s", Seq: 2})
	if got := load(t, b, "c:{1}"); !sameSet(got, []engine.Membership{{Session: "s", Seq: 2}}) {
		t.Fatalf("after saving one session twice: %+v, want the last", got)
	}
}

func testMembershipsAtomic(t *testing.T, a, b engine.Engine) {
	fence, _ := claim(t, a, "c", "i0")
	save(t, a, "c", fence, engine.Membership{Session: "x"}, engine.Membership{Session: "y"}, engine.Membership{Session: "z"})
	save(t, a, "c", fence, engine.Membership{Session: "y", Seq: 5, Epoch: "e"}, engine.Membership{Session: "w"})
	want := []engine.Membership{{Session: "w"}, {Session: "y", Seq: 5, Epoch: "e"}}
	if got := load(t, b, "c"); !sameSet(got, want) {
		t.Fatalf("after replacing the set: %+v, want exactly %+v", got, want)
	}
	save(t, a, "c", fence)
	if got := load(t, b, "c"); len(got) != 0 {
		t.Fatalf("after saving an empty set: %+v, want none", got)
	}

	// Writers replacing the whole set while another instance reads: every
	// read is one of the sets written, never a mix.
	sets := make([][]engine.Membership, 4)
	for i := range sets {
		for j := range 20 {
			sets[i] = append(sets[i], engine.Membership{Session: fmt.Sprintf("s%02d", j+i*5), Seq: uint64(i + 1), Epoch: fmt.Sprint(i)})
		}
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i, set := range sets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := a.SaveMemberships(ctx, "c", fence, set); err != nil {
					t.Errorf("writer %d: %v", i, err)
					return
				}
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	seen := 0
	for seen < 200 {
		got, err := b.LoadMemberships(ctx, "c")
		if err != nil {
			t.Fatalf("LoadMemberships: %v", err)
		}
		if len(got) == 0 {
			continue // before the first write
		}
		seen++
		ok := false
		for _, set := range sets {
			ok = ok || sameSet(got, set)
		}
		if !ok {
			t.Fatalf("read a set no writer wrote (a mix?): %+v", got)
		}
	}
}

func testRetainExpires(t *testing.T, e engine.Engine) {
	const ttl = 300 * time.Millisecond
	ctx := context.Background()
	fence, _ := claim(t, e, "c", "i0")
	m := engine.Membership{Session: "s", Seq: 3, Epoch: "e"}
	save(t, e, "c", fence, m)
	if err := e.RetainMemberships(ctx, "c", fence, 0); err == nil {
		t.Fatalf("RetainMemberships accepted a ttl of 0")
	}
	start := time.Now()
	if err := e.RetainMemberships(ctx, "c", fence, ttl); err != nil {
		t.Fatalf("RetainMemberships: %v", err)
	}
	if ok, err := e.Release(ctx, "c", "i0", fence); err != nil || !ok {
		t.Fatalf("Release by the owner: %v, %v; want true", ok, err)
	}
	got := load(t, e, "c")
	if time.Since(start) < ttl/2 && !sameSet(got, []engine.Membership{m}) {
		t.Fatalf("right after RetainMemberships: %+v, want the set", got)
	}
	// A save within the ttl keeps the expiry.
	if time.Since(start) < ttl/2 {
		save(t, e, "c", fence, m, engine.Membership{Session: "t"})
	}
	Eventually(t, "retained memberships to expire", func() bool {
		return len(load(t, e, "c")) == 0
	})
	if took := time.Since(start); took < ttl {
		t.Fatalf("memberships expired after %v, before the ttl of %v", took, ttl)
	}
	// The record goes with them: the client is unclaimed, and a new claim
	// still gets a greater fence.
	Eventually(t, "the client's record to expire", func() bool {
		owner, f, err := e.Owner(ctx, "c")
		if err != nil {
			t.Fatalf("Owner: %v", err)
		}
		return owner == "" && f == 0
	})
	if next, prev := claim(t, e, "c", "i0"); next <= fence || prev != "" {
		t.Fatalf("claim after expiry: fence %d (was %d), previous %q; want a greater fence and none", next, fence, prev)
	}
}

func testKeep(t *testing.T, e engine.Engine) {
	ctx := context.Background()
	const ttl = 200 * time.Millisecond
	kept, _ := claim(t, e, "kept", "i0")
	other, _ := claim(t, e, "other", "i0")
	save(t, e, "kept", kept, engine.Membership{Session: "s"})
	save(t, e, "other", other, engine.Membership{Session: "s"})
	for _, c := range []struct {
		id    string
		fence uint64
	}{{"kept", kept}, {"other", other}} {
		if err := e.RetainMemberships(ctx, c.id, c.fence, ttl); err != nil {
			t.Fatalf("RetainMemberships: %v", err)
		}
	}
	if err := e.KeepMemberships(ctx, "kept", kept); err != nil {
		t.Fatalf("KeepMemberships: %v", err)
	}
	// Once the other client's set, retained with the same ttl, is gone,
	// the kept one would be too, had Keep not cancelled its expiry.
	Eventually(t, "the other retained set to expire", func() bool {
		return len(load(t, e, "other")) == 0
	})
	if got := load(t, e, "kept"); len(got) != 1 {
		t.Fatalf("a kept set expired: %+v", got)
	}
	if owner, f, err := e.Owner(ctx, "kept"); err != nil || owner != "i0" || f != kept {
		t.Fatalf("Owner of the kept client: %q, %d, %v; want i0 under %d", owner, f, err, kept)
	}
	if err := e.DropMemberships(ctx, "kept", kept); err != nil {
		t.Fatalf("DropMemberships: %v", err)
	}
	if got := load(t, e, "kept"); len(got) != 0 {
		t.Fatalf("after DropMemberships: %+v", got)
	}
}

func testClaim(t *testing.T, a, b engine.Engine) {
	ctx := context.Background()
	if owner, f, err := a.Owner(ctx, "c"); err != nil || owner != "" || f != 0 {
		t.Fatalf("Owner of an unclaimed client: %q, %d, %v; want none and fence 0", owner, f, err)
	}
	f1, prev := claim(t, a, "c", "i0")
	if f1 == 0 || prev != "" {
		t.Fatalf("first claim: fence %d, previous %q; want a fence above 0 and none", f1, prev)
	}
	f2, prev := claim(t, b, "c", "i1")
	if f2 <= f1 || prev != "i0" {
		t.Fatalf("second claim: fence %d (first %d), previous %q; want a greater fence and i0", f2, f1, prev)
	}
	f3, prev := claim(t, b, "c", "i1")
	if f3 <= f2 || prev != "i1" {
		t.Fatalf("claim again by the owner: fence %d (was %d), previous %q; want a greater fence and i1", f3, f2, prev)
	}
	for i, e := range []engine.Engine{a, b} {
		if owner, f, err := e.Owner(ctx, "c"); err != nil || owner != "i1" || f != f3 {
			t.Fatalf("instance %d: Owner %q, %d, %v; want i1 under %d", i, owner, f, err, f3)
		}
	}
	// Concurrent claims get distinct fences.
	var mu sync.Mutex
	fences := map[uint64]bool{}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, _, err := a.Claim(ctx, "d", fmt.Sprint(i), time.Time{})
			if err != nil {
				t.Errorf("Claim: %v", err)
				return
			}
			mu.Lock()
			fences[f] = true
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(fences) != 20 {
		t.Fatalf("20 concurrent claims got %d distinct fences", len(fences))
	}
}

func testRelease(t *testing.T, a, b engine.Engine) {
	ctx := context.Background()
	f1, _ := claim(t, a, "c", "i0")
	save(t, a, "c", f1, engine.Membership{Session: "old"})
	f2, _ := claim(t, b, "c", "i1")
	want := []engine.Membership{{Session: "new", Seq: 9}}
	save(t, b, "c", f2, want...)
	// The old owner's late cleanup: nothing of the new owner's changes.
	if ok, err := a.Release(ctx, "c", "i0", f1); err != nil || ok {
		t.Fatalf("Release with a stale fence: %v, %v; want false", ok, err)
	}
	if ok, err := a.Release(ctx, "c", "i0", f2); err != nil || ok {
		t.Fatalf("Release by an instance that is not the owner: %v, %v; want false", ok, err)
	}
	if owner, f, err := b.Owner(ctx, "c"); err != nil || owner != "i1" || f != f2 {
		t.Fatalf("after stale releases: Owner %q, %d, %v; want i1 under %d", owner, f, err, f2)
	}
	if got := load(t, b, "c"); !sameSet(got, want) {
		t.Fatalf("after stale releases: memberships %+v, want %+v", got, want)
	}
	if ok, err := b.Release(ctx, "c", "i1", f2); err != nil || !ok {
		t.Fatalf("Release by the owner: %v, %v; want true", ok, err)
	}
	if owner, f, err := b.Owner(ctx, "c"); err != nil || owner != "" || f != f2 {
		t.Fatalf("after release: Owner %q, %d, %v; want none, fence still %d", owner, f, err, f2)
	}
	if ok, err := b.Release(ctx, "c", "i1", f2); err != nil || ok {
		t.Fatalf("second Release: %v, %v; want false", ok, err)
	}
	if f3, prev := claim(t, a, "c", "i0"); f3 <= f2 || prev != "" {
		t.Fatalf("claim after release: fence %d (was %d), previous %q; want greater and none", f3, f2, prev)
	}
	// A client without memberships leaves no record behind on release.
	f4, _ := claim(t, a, "bare", "i0")
	if ok, err := a.Release(ctx, "bare", "i0", f4); err != nil || !ok {
		t.Fatalf("Release: %v, %v", ok, err)
	}
	if owner, f, err := a.Owner(ctx, "bare"); err != nil || owner != "" || f != 0 {
		t.Fatalf("a released client with no memberships: Owner %q, %d, %v; want no record", owner, f, err)
	}
	if f5, _ := claim(t, a, "bare", "i0"); f5 <= f4 {
		t.Fatalf("claim after the record went: fence %d, want above %d", f5, f4)
	}
}

func testFenced(t *testing.T, a, b engine.Engine) {
	ctx := context.Background()
	f1, _ := claim(t, a, "c", "i0")
	save(t, a, "c", f1, engine.Membership{Session: "old"})
	f2, _ := claim(t, b, "c", "i1")
	want := []engine.Membership{{Session: "new", Seq: 1, Epoch: "e"}}
	save(t, b, "c", f2, want...)
	for name, err := range map[string]error{
		"SaveMemberships":   a.SaveMemberships(ctx, "c", f1, []engine.Membership{{Session: "stale"}}),
		"SaveMemberships 0": a.SaveMemberships(ctx, "c", 0, nil),
		"RetainMemberships": a.RetainMemberships(ctx, "c", f1, time.Millisecond),
		"KeepMemberships":   a.KeepMemberships(ctx, "c", f1),
		"DropMemberships":   a.DropMemberships(ctx, "c", f1),
		"SaveMemberships +": a.SaveMemberships(ctx, "c", f2+1, nil),
	} {
		if !errors.Is(err, engine.ErrFenced) {
			t.Fatalf("%s with a stale fence: %v, want ErrFenced", name, err)
		}
		if engine.Result(err) != "fenced" {
			t.Fatalf("Result(%v) = %q, want fenced", err, engine.Result(err))
		}
	}
	// None of them changed anything: the set is the new owner's, and it
	// does not expire. A probe retained for 1ms after the refused Retain
	// (1ms too) expires first.
	save(t, b, "probe", 0, engine.Membership{Session: "p"})
	if err := b.RetainMemberships(ctx, "probe", 0, time.Millisecond); err != nil {
		t.Fatalf("RetainMemberships of an unclaimed client under fence 0: %v", err)
	}
	Eventually(t, "the probe to expire", func() bool { return len(load(t, b, "probe")) == 0 })
	if got := load(t, a, "c"); !sameSet(got, want) {
		t.Fatalf("after refused writes: %+v, want the new owner's %+v", got, want)
	}
	// A client nobody claimed takes writes under fence 0.
	save(t, a, "free", 0, engine.Membership{Session: "s"})
	if got := load(t, a, "free"); len(got) != 1 {
		t.Fatalf("unclaimed client's save under fence 0: %+v", got)
	}
}

func testHeartbeat(t *testing.T, a, b engine.Engine) {
	ctx := context.Background()
	alive := func(e engine.Engine, instance string) bool {
		t.Helper()
		ok, err := e.Alive(ctx, instance)
		if err != nil {
			t.Fatalf("Alive(%q): %v", instance, err)
		}
		return ok
	}
	if alive(b, "i0") {
		t.Fatalf("an instance that never beat is alive")
	}
	if err := a.Heartbeat(ctx, "i0", 0); err == nil {
		t.Fatalf("Heartbeat accepted a ttl of 0")
	}
	if err := a.Heartbeat(ctx, "i0", time.Minute); err != nil {
		t.Fatalf("Heartbeat: %v", err)
	}
	if !alive(b, "i0") {
		t.Fatalf("an instance that just beat for a minute is not alive")
	}
	if err := a.Heartbeat(ctx, "i0", 200*time.Millisecond); err != nil {
		t.Fatalf("Heartbeat: %v", err)
	}
	start := time.Now()
	Eventually(t, "the heartbeat to expire", func() bool { return !alive(b, "i0") })
	if took := time.Since(start); took < 100*time.Millisecond {
		t.Fatalf("a 200ms heartbeat expired after %v", took)
	}
	if alive(b, "i1") {
		t.Fatalf("another instance is alive without a heartbeat")
	}
}

func testNotify(t *testing.T, es []engine.Engine, recs []*Recorder) {
	ctx := context.Background()
	f, prev := claim(t, es[1], "c", "i1")
	if prev != "" {
		t.Fatalf("previous %q", prev)
	}
	f2, prev := claim(t, es[0], "c", "i0")
	if prev != "i1" {
		t.Fatalf("previous %q, want i1", prev)
	}
	if err := es[0].Notify(ctx, prev, "c", f2); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	Eventually(t, "the previous owner to hear it was replaced", func() bool {
		return len(recs[1].Replaced()) > 0
	})
	if got := recs[1].Replaced(); len(got) != 1 || got[0] != (Replacement{ClientID: "c", Fence: f2}) {
		t.Fatalf("i1 got %+v, want c under %d (it had %d)", got, f2, f)
	}
	// A notify to an instance nobody runs is not an error; and it reaches
	// nobody else: i1 hears of the next one to it only.
	if err := es[1].Notify(ctx, "gone", "c", f2); err != nil {
		t.Fatalf("Notify to a missing instance: %v", err)
	}
	if err := es[0].Notify(ctx, "i1", "d", 7); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	Eventually(t, "the second notify", func() bool { return len(recs[1].Replaced()) >= 2 })
	if got := recs[1].Replaced(); len(got) != 2 || got[1] != (Replacement{ClientID: "d", Fence: 7}) {
		t.Fatalf("i1 got %+v", got)
	}
	if got := recs[0].Replaced(); len(got) != 0 {
		t.Fatalf("i0 heard of notifies meant for others: %+v", got)
	}
}

func testClientsClosed(t *testing.T, e engine.Engine) {
	if err := e.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ctx := context.Background()
	_, _, err1 := e.Claim(ctx, "c", "i0", time.Time{})
	_, err2 := e.LoadMemberships(ctx, "c")
	err3 := e.SaveMemberships(ctx, "c", 0, nil)
	_, err4 := e.Alive(ctx, "i0")
	err5 := e.Notify(ctx, "i0", "c", 1)
	for i, err := range []error{err1, err2, err3, err4, err5} {
		if !errors.Is(err, engine.ErrClosed) {
			t.Fatalf("call %d after Close: %v, want ErrClosed", i, err)
		}
	}
}
