// Package enginetest is the conformance suite every StreamHub engine passes:
// Run it from a backend's tests with a function that builds that backend.
package enginetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/streamhub/streamhub/engine"
)

// NewEngine builds the engine under test with the given bounds and handler.
// The suite closes it when the test ends.
type NewEngine func(t *testing.T, b engine.Bounds, h engine.Handler) engine.Engine

// Wait bounds every wait in the suite: generous, because a loaded two-core
// machine running -race is slow, and never reached when the engine works.
const Wait = 20 * time.Second

// Run runs the conformance suite against the engines newEngine builds.
func Run(t *testing.T, newEngine NewEngine) {
	open := func(t *testing.T, b engine.Bounds) (engine.Engine, *Recorder) {
		t.Helper()
		rec := NewRecorder()
		e := newEngine(t, b, rec)
		t.Cleanup(func() {
			if err := e.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return e, rec
	}
	t.Run("ContiguousSeqUnderConcurrentPublishers", func(t *testing.T) {
		e, rec := open(t, engine.Bounds{Size: 2000})
		testContiguous(t, e, rec)
	})
	t.Run("SamePublicationAcceptedOnce", func(t *testing.T) {
		e, rec := open(t, engine.Bounds{Size: 100})
		testAcceptedOnce(t, e, rec)
	})
	t.Run("PublishManyInOrder", func(t *testing.T) {
		e, rec := open(t, engine.Bounds{Size: 1000})
		testPublishMany(t, e, rec)
	})
	t.Run("HandlerSeesEachSessionInOrder", func(t *testing.T) {
		e, rec := open(t, engine.Bounds{Size: 10})
		testOrder(t, e, rec)
	})
	t.Run("PublicationRoundTrip", func(t *testing.T) {
		e, rec := open(t, engine.Bounds{Size: 10})
		testRoundTrip(t, e, rec)
	})
	t.Run("HistorySize", func(t *testing.T) {
		e, _ := open(t, engine.Bounds{Size: 5})
		testSize(t, e)
	})
	t.Run("HistoryBytesKeepNewest", func(t *testing.T) {
		e, _ := open(t, engine.Bounds{Size: 100, MaxBytes: 10})
		testBytes(t, e)
	})
	t.Run("HistoryTTL", func(t *testing.T) {
		e, _ := open(t, engine.Bounds{Size: 100, TTL: 300 * time.Millisecond, MetaTTL: time.Minute})
		testTTL(t, e)
	})
	t.Run("MetaExpires", func(t *testing.T) {
		e, _ := open(t, engine.Bounds{Size: 100, TTL: 100 * time.Millisecond, MetaTTL: 300 * time.Millisecond})
		testMetaExpires(t, e)
	})
	for _, b := range []engine.Bounds{
		{Size: 100, TTL: 100 * time.Millisecond, MetaTTL: 300 * time.Millisecond},
		{Size: 100, MetaTTL: 300 * time.Millisecond}, // entries never age out
	} {
		t.Run(fmt.Sprintf("TouchKeepsMeta/TTL=%v", b.TTL), func(t *testing.T) {
			e, _ := open(t, b)
			testTouchKeepsMeta(t, e, b)
		})
	}
	t.Run("TouchNeverShortens", func(t *testing.T) {
		b := engine.Bounds{Size: 100, TTL: 100 * time.Millisecond, MetaTTL: 300 * time.Millisecond}
		e, _ := open(t, b)
		testTouchNeverShortens(t, e, b)
	})
	t.Run("PublishKeepsLongerTouch", func(t *testing.T) {
		b := engine.Bounds{Size: 100, TTL: 100 * time.Millisecond, MetaTTL: 300 * time.Millisecond}
		e, _ := open(t, b)
		testPublishKeepsLongerTouch(t, e, b)
	})
	t.Run("TouchMissingSession", func(t *testing.T) {
		e, _ := open(t, engine.Bounds{Size: 100, MetaTTL: time.Minute})
		testTouchMissing(t, e)
	})
	t.Run("ReadsAtPositions", func(t *testing.T) {
		e, _ := open(t, engine.Bounds{Size: 100})
		testPositions(t, e)
	})
	t.Run("Epochs", func(t *testing.T) {
		e, _ := open(t, engine.Bounds{Size: 100})
		testEpochs(t, e)
	})
	t.Run("MissingSession", func(t *testing.T) {
		e, _ := open(t, engine.Bounds{Size: 100})
		testMissing(t, e)
	})
	t.Run("Unsubscribe", func(t *testing.T) {
		e, rec := open(t, engine.Bounds{Size: 100})
		testUnsubscribe(t, e, rec)
	})
	t.Run("ContextCanceled", func(t *testing.T) {
		e, _ := open(t, engine.Bounds{Size: 100})
		testCanceled(t, e)
	})
	t.Run("Close", func(t *testing.T) {
		e, _ := open(t, engine.Bounds{Size: 100})
		testClose(t, e)
	})
}

func testContiguous(t *testing.T, e engine.Engine, rec *Recorder) {
	const publishers, each = 8, 200
	ctx := context.Background()
	mustSubscribe(t, e, "s")
	var wg sync.WaitGroup
	got := make([][]engine.Entry, publishers)
	errs := make(chan error, publishers)
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				ent, err := e.Publish(ctx, "s", pub(fmt.Sprint(p), fmt.Sprint(i), fmt.Sprintf("%d/%d", p, i)))
				if err != nil {
					errs <- err
					return
				}
				got[p] = append(got[p], ent)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Publish: %v", err)
	}
	bySeq := make(map[uint64]engine.Entry)
	var epoch string
	for p, ents := range got {
		var last uint64
		for _, ent := range ents {
			if ent.Seq <= last {
				t.Fatalf("publisher %d got seq %d after %d", p, ent.Seq, last)
			}
			last = ent.Seq
			if _, dup := bySeq[ent.Seq]; dup {
				t.Fatalf("seq %d assigned twice", ent.Seq)
			}
			bySeq[ent.Seq] = ent
			if epoch == "" {
				epoch = ent.Epoch
			}
			if ent.Epoch != epoch {
				t.Fatalf("epoch changed under publishers: %q then %q", epoch, ent.Epoch)
			}
		}
	}
	const n = publishers * each
	for seq := uint64(1); seq <= n; seq++ {
		if _, ok := bySeq[seq]; !ok {
			t.Fatalf("seq %d missing: seqs are not contiguous 1..%d", seq, n)
		}
	}
	hist, pos := mustHistory(t, e, "s", 0, -1)
	if pos != (engine.Position{Seq: n, Epoch: epoch}) {
		t.Fatalf("position %+v, want seq %d epoch %q", pos, n, epoch)
	}
	if len(hist) != n {
		t.Fatalf("history holds %d entries, want %d", len(hist), n)
	}
	for i, h := range hist {
		if !sameEntry(h, bySeq[uint64(i+1)]) {
			t.Fatalf("history[%d] = %+v, publish returned %+v", i, h, bySeq[uint64(i+1)])
		}
	}
	rec.WaitFor(t, "s", n)
	for i, h := range rec.Entries("s") {
		if !sameEntry(h, bySeq[uint64(i+1)]) {
			t.Fatalf("handler entry %d = %+v, publish returned %+v", i, h, bySeq[uint64(i+1)])
		}
	}
}

// testAcceptedOnce publishes the same publication twice, alone and in a
// batch: it is accepted once, and the second attempt returns the first's
// entry; another client's, or one without an ID, is another publication.
func testAcceptedOnce(t *testing.T, e engine.Engine, rec *Recorder) {
	mustSubscribe(t, e, "s")
	first := mustPublish(t, e, "s", pub("c", "m1", "a"))
	again := mustPublish(t, e, "s", pub("c", "m1", "a"))
	if !sameEntry(first, again) {
		t.Fatalf("the same publication again: %+v, want the first's entry %+v", again, first)
	}
	other := mustPublish(t, e, "s", pub("d", "m1", "b"))
	noID1 := mustPublish(t, e, "s", pub("c", "", "x"))
	noID2 := mustPublish(t, e, "s", pub("c", "", "x"))
	if other.Seq != 2 || noID1.Seq != 3 || noID2.Seq != 4 {
		t.Fatalf("seqs %d %d %d, want 2 3 4: only the same client's same id is the same publication", other.Seq, noID1.Seq, noID2.Seq)
	}
	entries, errs := e.PublishMany(context.Background(), []engine.Publishing{
		{Session: "s", Publication: pub("c", "m2", "y")},
		{Session: "s", Publication: pub("c", "m2", "y")},
		{Session: "s", Publication: pub("c", "m1", "a")},
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("PublishMany item %d: %v", i, err)
		}
	}
	if entries[0].Seq != 5 || !sameEntry(entries[1], entries[0]) || !sameEntry(entries[2], first) {
		t.Fatalf("PublishMany of a new one, it again and an old one: %+v", entries)
	}
	hist, pos := mustHistory(t, e, "s", 0, -1)
	if len(hist) != 5 || pos.Seq != 5 {
		t.Fatalf("history holds %d entries, position %d; want 5 and 5", len(hist), pos.Seq)
	}
	rec.WaitFor(t, "s", 5)
	if n := len(rec.Entries("s")); n != 5 {
		t.Fatalf("the handler saw %d entries, want 5", n)
	}
}

// testPublishMany publishes batches to two sessions, interleaved, while
// another publisher publishes one at a time: each batch's entries of a
// session get rising seqs in the batch's order, every result is the entry
// the handler sees, and a batch after Close fails item by item.
func testPublishMany(t *testing.T, e engine.Engine, rec *Recorder) {
	ctx := context.Background()
	mustSubscribe(t, e, "x", "y")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 100 {
			if _, err := e.Publish(ctx, "x", pub("single", "", fmt.Sprint(i))); err != nil {
				t.Errorf("Publish: %v", err)
				return
			}
		}
	}()
	var batches [][]engine.Entry
	for b := range 10 {
		var ps []engine.Publishing
		for i := range 20 {
			session := []string{"x", "y"}[i%2]
			ps = append(ps, engine.Publishing{Session: session, Publication: pub("many", fmt.Sprint(b, "-", i), "d")})
		}
		entries, errs := e.PublishMany(ctx, ps)
		if len(entries) != len(ps) || len(errs) != len(ps) {
			t.Fatalf("PublishMany of %d returned %d entries and %d errors", len(ps), len(entries), len(errs))
		}
		last := map[string]uint64{}
		for i, ent := range entries {
			if errs[i] != nil {
				t.Fatalf("PublishMany item %d: %v", i, errs[i])
			}
			if ent.ID != ps[i].ID || ent.Seq <= last[ps[i].Session] {
				t.Fatalf("PublishMany item %d (%s): entry %+v after seq %d", i, ps[i].Session, ent, last[ps[i].Session])
			}
			last[ps[i].Session] = ent.Seq
		}
		batches = append(batches, entries)
	}
	<-done
	rec.WaitFor(t, "x", 200)
	rec.WaitFor(t, "y", 100)
	seen := map[string]engine.Entry{}
	for _, name := range []string{"x", "y"} {
		for i, ent := range rec.Entries(name) {
			if ent.Seq != uint64(i+1) {
				t.Fatalf("session %q: handler's entry %d has seq %d", name, i, ent.Seq)
			}
			seen[name+"/"+ent.ID] = ent
		}
	}
	for b, entries := range batches {
		for i, ent := range entries {
			if got, ok := seen[[]string{"x", "y"}[i%2]+"/"+ent.ID]; !ok || !sameEntry(got, ent) {
				t.Fatalf("batch %d item %d: returned %+v, handler saw %+v", b, i, ent, got)
			}
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	_, errs := e.PublishMany(ctx, []engine.Publishing{{Session: "x"}, {Session: "y"}})
	for i, err := range errs {
		if !errors.Is(err, engine.ErrClosed) {
			t.Fatalf("PublishMany after Close: item %d: %v, want ErrClosed", i, err)
		}
	}
}

func testOrder(t *testing.T, e engine.Engine, rec *Recorder) {
	const sessions, publishers, each = 3, 3, 100
	ctx := context.Background()
	names := []string{"a", "b:with:colons", "c{braces}"}
	mustSubscribe(t, e, names...)
	var wg sync.WaitGroup
	for _, name := range names {
		for p := range publishers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					if _, err := e.Publish(ctx, name, pub(fmt.Sprint(p), "", fmt.Sprint(i))); err != nil {
						t.Errorf("Publish: %v", err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	for _, name := range names {
		rec.WaitFor(t, name, publishers*each)
		for i, ent := range rec.Entries(name) {
			if ent.Seq != uint64(i+1) {
				t.Fatalf("session %q: handler's entry %d has seq %d: out of order", name, i, ent.Seq)
			}
		}
	}
	if rec.Resyncs() != 0 {
		t.Fatalf("HandleResync called %d times on a quiet engine", rec.Resyncs())
	}
}

func testRoundTrip(t *testing.T, e engine.Engine, rec *Recorder) {
	mustSubscribe(t, e, "rt")
	pubs := []engine.Publication{
		{ClientID: "alice", ID: "m1", Data: []byte("hello")},
		{ClientID: "b:o:b", ID: "", Data: nil},
		{ClientID: "", ID: "id:with:colons\n", Data: []byte{0, 1, ':', '\n', 0xff, '}', '{'}},
	}
	var want []engine.Entry
	for _, p := range pubs {
		before := time.Now().Add(-time.Second)
		ent := mustPublish(t, e, "rt", p)
		if ent.Accepted.Before(before) || ent.Accepted.After(time.Now().Add(time.Second)) {
			t.Fatalf("Accepted %v is not about now", ent.Accepted)
		}
		if !ent.Accepted.Equal(ent.Accepted.Truncate(time.Millisecond)) {
			t.Fatalf("Accepted %v is not in whole milliseconds", ent.Accepted)
		}
		if ent.ClientID != p.ClientID || ent.ID != p.ID || !bytes.Equal(ent.Data, p.Data) {
			t.Fatalf("Publish returned %+v for %+v", ent, p)
		}
		if len(want) > 0 && ent.Accepted.Before(want[len(want)-1].Accepted) {
			t.Fatalf("Accepted went back: %v after %v", ent.Accepted, want[len(want)-1].Accepted)
		}
		want = append(want, ent)
	}
	hist, _ := mustHistory(t, e, "rt", 0, -1)
	rec.WaitFor(t, "rt", len(want))
	for i, got := range [][]engine.Entry{hist, rec.Entries("rt")} {
		if len(got) != len(want) {
			t.Fatalf("read %d: %d entries, want %d", i, len(got), len(want))
		}
		for j := range want {
			if !sameEntry(got[j], want[j]) {
				t.Fatalf("read %d: entry %d = %+v, want %+v", i, j, got[j], want[j])
			}
		}
	}
}

func testSize(t *testing.T, e engine.Engine) {
	for i := range 12 {
		mustPublish(t, e, "s", pub("c", fmt.Sprint(i), "x"))
	}
	hist, pos := mustHistory(t, e, "s", 0, -1)
	if pos.Seq != 12 {
		t.Fatalf("position seq %d, want 12", pos.Seq)
	}
	assertSeqs(t, hist, 8, 12)
}

func testBytes(t *testing.T, e engine.Engine) {
	for i := range 5 {
		mustPublish(t, e, "s", pub("c", fmt.Sprint(i), "abcd"))
	}
	hist, _ := mustHistory(t, e, "s", 0, -1)
	assertSeqs(t, hist, 4, 5) // 8 bytes of at most 10
	big := bytes.Repeat([]byte("z"), 20)
	mustPublish(t, e, "s", engine.Publication{ClientID: "c", Data: big})
	hist, _ = mustHistory(t, e, "s", 0, -1)
	assertSeqs(t, hist, 6, 6)
	if !bytes.Equal(hist[0].Data, big) {
		t.Fatalf("the newest entry, over MaxBytes alone, lost its data")
	}
	mustPublish(t, e, "s", pub("c", "", "abc"))
	hist, _ = mustHistory(t, e, "s", 0, -1)
	assertSeqs(t, hist, 7, 7)
}

func testTTL(t *testing.T, e engine.Engine) {
	const ttl = 300 * time.Millisecond
	start := time.Now()
	first := mustPublish(t, e, "s", pub("c", "1", "a"))
	mustPublish(t, e, "s", pub("c", "2", "b"))
	hist, _ := mustHistory(t, e, "s", 0, -1)
	if time.Since(start) < ttl/2 {
		assertSeqs(t, hist, 1, 2)
	}
	Eventually(t, "history to age out", func() bool {
		hist, _ := mustHistory(t, e, "s", 0, -1)
		return len(hist) == 0
	})
	_, pos := mustHistory(t, e, "s", 0, -1)
	if pos != (engine.Position{Seq: 2, Epoch: first.Epoch}) {
		t.Fatalf("after history aged out the position is %+v, want seq 2 in epoch %q", pos, first.Epoch)
	}
	third := mustPublish(t, e, "s", pub("c", "3", "c"))
	if third.Seq != 3 || third.Epoch != first.Epoch {
		t.Fatalf("publish after aging out got seq %d epoch %q, want 3 in %q", third.Seq, third.Epoch, first.Epoch)
	}
	hist, _ = mustHistory(t, e, "s", 0, -1)
	assertSeqs(t, hist, 3, 3)
}

func testMetaExpires(t *testing.T, e engine.Engine) {
	first := mustPublish(t, e, "s", pub("c", "1", "a"))
	var pos engine.Position
	Eventually(t, "the session's meta to expire", func() bool {
		_, pos = mustHistory(t, e, "s", 0, -1)
		return pos.Epoch != first.Epoch
	})
	if pos.Seq != 0 || pos.Epoch == "" {
		t.Fatalf("an expired session reads as %+v, want seq 0 and a new epoch", pos)
	}
	next := mustPublish(t, e, "s", pub("c", "2", "b"))
	if next.Seq != 1 || next.Epoch != pos.Epoch {
		t.Fatalf("publish after expiry got seq %d epoch %q, want 1 in %q", next.Seq, next.Epoch, pos.Epoch)
	}
}

// testTouchKeepsMeta: a session touched again and again with ttl MetaTTL
// keeps its epoch, seq (and, when entries do not age out, its history) well
// past MetaTTL after its last publish, while an untouched one published at
// the same time expires; once touching stops, it expires too.
func testTouchKeepsMeta(t *testing.T, e engine.Engine, b engine.Bounds) {
	ttl := b.MetaTTL
	published := time.Now()
	first := mustPublish(t, e, "s", pub("c", "1", "a"))
	untouched := mustPublish(t, e, "untouched", pub("c", "1", "a"))
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for time.Since(published) < 3*ttl {
		touched := time.Now()
		mustTouch(t, e, ttl, "s")
		<-tick.C
		hist, pos := mustHistory(t, e, "s", 0, -1)
		if pos != (engine.Position{Seq: 1, Epoch: first.Epoch}) {
			tooSlow(t, touched, ttl)
			t.Fatalf("%v after the publish, touched %v ago with ttl %v: position %+v, want seq 1 in epoch %q",
				time.Since(published), time.Since(touched), ttl, pos, first.Epoch)
		}
		if b.TTL == 0 {
			assertSeqs(t, hist, 1, 1) // a kept epoch keeps entries that never age out
		}
	}
	if _, pos := mustHistory(t, e, "untouched", 0, -1); pos.Epoch == untouched.Epoch {
		t.Fatalf("a session nobody touched kept its epoch %v after its publish: MetaTTL is %v, so the test proves nothing",
			time.Since(published), ttl)
	}
	var pos engine.Position
	Eventually(t, "the meta to expire once touching stopped", func() bool {
		_, pos = mustHistory(t, e, "s", 0, -1)
		return pos.Epoch != first.Epoch
	})
	if pos.Seq != 0 {
		t.Fatalf("after touching stopped the session reads as %+v, want seq 0 in a new epoch", pos)
	}
}

// testTouchNeverShortens: a Touch with a tiny, zero or negative ttl right
// after a publish leaves the meta the MetaTTL the publish gave.
func testTouchNeverShortens(t *testing.T, e engine.Engine, b engine.Bounds) {
	published := time.Now()
	first := mustPublish(t, e, "s", pub("c", "1", "a"))
	for _, ttl := range []time.Duration{time.Millisecond, time.Microsecond, 0, -time.Second} {
		mustTouch(t, e, ttl, "s")
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for time.Since(published) < b.MetaTTL*2/3 {
		_, pos := mustHistory(t, e, "s", 0, -1)
		if pos != (engine.Position{Seq: 1, Epoch: first.Epoch}) {
			tooSlow(t, published, b.MetaTTL)
			t.Fatalf("%v after the publish and a Touch with a tiny ttl: position %+v, want seq 1 in epoch %q (MetaTTL %v)",
				time.Since(published), pos, first.Epoch, b.MetaTTL)
		}
		<-tick.C
	}
}

// testPublishKeepsLongerTouch: a Touch longer than MetaTTL is kept across a
// later Touch with a tiny ttl and a later publish.
func testPublishKeepsLongerTouch(t *testing.T, e engine.Engine, b engine.Bounds) {
	long := 5 * b.MetaTTL
	mustPublish(t, e, "s", pub("c", "1", "a"))
	touched := time.Now()
	mustTouch(t, e, long, "s")
	mustTouch(t, e, time.Millisecond, "s")
	published := time.Now()
	second := mustPublish(t, e, "s", pub("c", "2", "b"))
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for time.Since(published) < 2*b.MetaTTL {
		<-tick.C
		_, pos := mustHistory(t, e, "s", 0, -1)
		if pos != (engine.Position{Seq: 2, Epoch: second.Epoch}) {
			tooSlow(t, touched, long)
			t.Fatalf("%v after a publish that followed a Touch for %v: position %+v, want seq 2 in epoch %q (MetaTTL %v)",
				time.Since(published), long, pos, second.Epoch, b.MetaTTL)
		}
	}
}

// testTouchMissing: Touch of sessions that have no meta succeeds and gives
// none (the backends' own tests check that it stores nothing).
func testTouchMissing(t *testing.T, e engine.Engine) {
	mustTouch(t, e, time.Minute, "ghost", "other-ghost")
	mustTouch(t, e, time.Minute) // no sessions at all
	hist, pos := mustHistory(t, e, "ghost", 0, -1)
	if len(hist) != 0 || pos.Seq != 0 || pos.Epoch == "" {
		t.Fatalf("a touched missing session: %d entries at %+v, want none at seq 0 with an epoch", len(hist), pos)
	}
	ent := mustPublish(t, e, "gone", pub("c", "1", "a"))
	if err := e.Remove(context.Background(), "gone"); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	mustTouch(t, e, time.Minute, "gone")
	hist, pos = mustHistory(t, e, "gone", 0, -1)
	if len(hist) != 0 || pos.Seq != 0 || pos.Epoch == ent.Epoch {
		t.Fatalf("a removed, then touched session: %d entries at %+v, want none at seq 0 in a new epoch", len(hist), pos)
	}
}

func testPositions(t *testing.T, e engine.Engine) {
	for i := range 10 {
		mustPublish(t, e, "s", pub("c", fmt.Sprint(i), "x"))
	}
	for _, tc := range []struct {
		after         uint64
		limit         int
		first, last   uint64
		wantNoEntries bool
	}{
		{after: 0, limit: -1, first: 1, last: 10},
		{after: 5, limit: -1, first: 6, last: 10},
		{after: 9, limit: -1, first: 10, last: 10},
		{after: 10, limit: -1, wantNoEntries: true},
		{after: 15, limit: -1, wantNoEntries: true},
		{after: 2, limit: 3, first: 3, last: 5},
		{after: 0, limit: 100, first: 1, last: 10},
		{after: 0, limit: 0, wantNoEntries: true},
	} {
		t.Run(fmt.Sprintf("after%d_limit%d", tc.after, tc.limit), func(t *testing.T) {
			hist, pos := mustHistory(t, e, "s", tc.after, tc.limit)
			if pos.Seq != 10 {
				t.Fatalf("position seq %d, want 10", pos.Seq)
			}
			if tc.wantNoEntries {
				if len(hist) != 0 {
					t.Fatalf("got %d entries, want none", len(hist))
				}
				return
			}
			assertSeqs(t, hist, tc.first, tc.last)
		})
	}
}

func testEpochs(t *testing.T, e engine.Engine) {
	a := mustPublish(t, e, "s", pub("c", "1", "a"))
	b := mustPublish(t, e, "s", pub("c", "2", "b"))
	if a.Epoch == "" || a.Epoch != b.Epoch {
		t.Fatalf("epochs %q, %q: want one non-empty epoch across publishes", a.Epoch, b.Epoch)
	}
	other := mustPublish(t, e, "other", pub("c", "1", "a"))
	if other.Epoch == a.Epoch {
		t.Fatalf("two sessions share epoch %q", a.Epoch)
	}
	if err := e.Remove(context.Background(), "s"); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	hist, pos := mustHistory(t, e, "s", 0, -1)
	if len(hist) != 0 || pos.Seq != 0 || pos.Epoch == "" || pos.Epoch == a.Epoch {
		t.Fatalf("after Remove: %d entries at %+v, want none at seq 0 in a new epoch", len(hist), pos)
	}
	c := mustPublish(t, e, "s", pub("c", "3", "c"))
	if c.Seq != 1 || c.Epoch != pos.Epoch {
		t.Fatalf("after Remove publish got seq %d epoch %q, want 1 in %q", c.Seq, c.Epoch, pos.Epoch)
	}
	if err := e.Remove(context.Background(), "never-used"); err != nil {
		t.Fatalf("Remove of a missing session: %v", err)
	}
}

func testMissing(t *testing.T, e engine.Engine) {
	hist, pos := mustHistory(t, e, "nobody", 0, -1)
	if len(hist) != 0 || pos.Seq != 0 || pos.Epoch == "" {
		t.Fatalf("missing session: %d entries at %+v, want none at seq 0 with an epoch", len(hist), pos)
	}
	_, again := mustHistory(t, e, "nobody", 0, -1)
	if again != pos {
		t.Fatalf("a second read of a missing session gave %+v, then %+v", pos, again)
	}
	ent := mustPublish(t, e, "nobody", pub("c", "1", "a"))
	if ent.Seq != 1 || ent.Epoch != pos.Epoch {
		t.Fatalf("first publish got seq %d epoch %q, want 1 in the epoch History gave, %q", ent.Seq, ent.Epoch, pos.Epoch)
	}
}

func testUnsubscribe(t *testing.T, e engine.Engine, rec *Recorder) {
	mustSubscribe(t, e, "a", "b")
	mustPublish(t, e, "a", pub("c", "1", "a1"))
	rec.WaitFor(t, "a", 1)
	if err := e.Unsubscribe(context.Background(), "a"); err != nil {
		t.Fatalf("Unsubscribe: %v", err)
	}
	mustPublish(t, e, "a", pub("c", "2", "a2"))
	mustPublish(t, e, "b", pub("c", "1", "b1"))
	mustPublish(t, e, "never-subscribed", pub("c", "1", "n1"))
	rec.WaitFor(t, "b", 1)
	if n := len(rec.Entries("a")); n != 1 {
		t.Fatalf("handler got %d entries of an unsubscribed session, want the 1 from before", n)
	}
	if n := len(rec.Entries("never-subscribed")); n != 0 {
		t.Fatalf("handler got %d entries of a session nobody subscribed to", n)
	}
	if err := e.Unsubscribe(context.Background(), "never-subscribed"); err != nil {
		t.Fatalf("Unsubscribe of a session not subscribed: %v", err)
	}
	// Subscribing again brings deliveries back.
	mustSubscribe(t, e, "a")
	mustPublish(t, e, "a", pub("c", "3", "a3"))
	rec.WaitFor(t, "a", 2)
	if got := rec.Entries("a")[1].Seq; got != 3 {
		t.Fatalf("after subscribing again the handler got seq %d, want 3", got)
	}
}

func testCanceled(t *testing.T, e engine.Engine) {
	mustPublish(t, e, "s", pub("c", "1", "a"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.Publish(ctx, "s", pub("c", "2", "b")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Publish with a canceled context: %v, want context.Canceled", err)
	}
	if _, _, err := e.History(ctx, "s", 0, -1); !errors.Is(err, context.Canceled) {
		t.Fatalf("History with a canceled context: %v, want context.Canceled", err)
	}
	if err := e.Subscribe(ctx, "s"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Subscribe with a canceled context: %v, want context.Canceled", err)
	}
	if err := e.Remove(ctx, "s"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Remove with a canceled context: %v, want context.Canceled", err)
	}
	if err := e.Touch(ctx, time.Minute, "s"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Touch with a canceled context: %v, want context.Canceled", err)
	}
	hist, pos := mustHistory(t, e, "s", 0, -1)
	if pos.Seq != 1 || len(hist) != 1 {
		t.Fatalf("after canceled calls: %d entries at %+v, want the one published before", len(hist), pos)
	}
}

func testClose(t *testing.T, e engine.Engine) {
	mustPublish(t, e, "s", pub("c", "1", "a"))
	if err := e.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	ctx := context.Background()
	if _, err := e.Publish(ctx, "s", pub("c", "2", "b")); !errors.Is(err, engine.ErrClosed) {
		t.Fatalf("Publish after Close: %v, want ErrClosed", err)
	}
	if _, _, err := e.History(ctx, "s", 0, -1); !errors.Is(err, engine.ErrClosed) {
		t.Fatalf("History after Close: %v, want ErrClosed", err)
	}
	if err := e.Subscribe(ctx, "s"); !errors.Is(err, engine.ErrClosed) {
		t.Fatalf("Subscribe after Close: %v, want ErrClosed", err)
	}
	if err := e.Touch(ctx, time.Minute, "s"); !errors.Is(err, engine.ErrClosed) {
		t.Fatalf("Touch after Close: %v, want ErrClosed", err)
	}
}

// tooSlow skips a test whose read found the meta gone when the read may
// have come after what kept it, begun at start, ran out: the machine was
// too slow for the test to tell a fault from a meta that rightly expired.
func tooSlow(t *testing.T, start time.Time, ttl time.Duration) {
	t.Helper()
	if took := time.Since(start); took >= ttl {
		t.Skipf("the read ended %v after what kept the meta for %v began: too slow to tell", took, ttl)
	}
}

func pub(client, id, data string) engine.Publication {
	return engine.Publication{ClientID: client, ID: id, Data: []byte(data)}
}

func sameEntry(a, b engine.Entry) bool {
	return a.Seq == b.Seq && a.Epoch == b.Epoch && a.Accepted.Equal(b.Accepted) &&
		a.ClientID == b.ClientID && a.ID == b.ID && bytes.Equal(a.Data, b.Data)
}

func assertSeqs(t *testing.T, hist []engine.Entry, first, last uint64) {
	t.Helper()
	if uint64(len(hist)) != last-first+1 {
		t.Fatalf("history holds %d entries, want seqs %d..%d", len(hist), first, last)
	}
	for i, h := range hist {
		if h.Seq != first+uint64(i) {
			t.Fatalf("history[%d] has seq %d, want %d..%d in order", i, h.Seq, first, last)
		}
	}
}

func mustPublish(t *testing.T, e engine.Engine, session string, p engine.Publication) engine.Entry {
	t.Helper()
	ent, err := e.Publish(context.Background(), session, p)
	if err != nil {
		t.Fatalf("Publish(%q): %v", session, err)
	}
	return ent
}

func mustHistory(t *testing.T, e engine.Engine, session string, after uint64, limit int) ([]engine.Entry, engine.Position) {
	t.Helper()
	hist, pos, err := e.History(context.Background(), session, after, limit)
	if err != nil {
		t.Fatalf("History(%q): %v", session, err)
	}
	return hist, pos
}

func mustTouch(t *testing.T, e engine.Engine, ttl time.Duration, sessions ...string) {
	t.Helper()
	if err := e.Touch(context.Background(), ttl, sessions...); err != nil {
		t.Fatalf("Touch(%v, %q): %v", ttl, sessions, err)
	}
}

func mustSubscribe(t *testing.T, e engine.Engine, sessions ...string) {
	t.Helper()
	if err := e.Subscribe(context.Background(), sessions...); err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
}
