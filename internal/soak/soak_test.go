package soak

import (
	"fmt"
	"maps"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamhub/streamhub/client"
)

// Bounds of the end of the run: generous, since the instances may still be
// catching up after the last faults on a loaded 2-core machine.
const (
	settleLimit = 60 * time.Second // for publications in flight, fences, members catching up
	// goroutineSlack is how many goroutines more than before any client an
	// instance may run once every client left: sessions and memberships
	// are kept (history, session-ttl), streams are not. A goroutine leaked
	// per stream would exceed it many times over: each instance serves
	// hundreds of streams in a run.
	goroutineSlack = 40
)

// maxServerRSS bounds each instance's resident memory: its memory budget
// (128 MiB) is far above what the run holds, so this is the runtime and
// what every stream costs; the race detector multiplies it.
func maxServerRSS() int64 {
	if *flagRaceServer {
		return 512 << 20 // measured: 160 MiB after 1,000 faults
	}
	return 128 << 20 // measured: 40 MiB
}

// TestSoak runs three instances on Redis with publishers and subscribers
// under a seeded schedule of faults, then checks that every publication
// reported done reached every member once, in seq order, without a gap;
// that no goroutine outlived its stream (servers) or the test (goleak);
// and that the servers' memory stayed bounded.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("the soak runs real servers and Redis for tens of seconds")
	}
	var names []string
	if *flagKinds != "" {
		names = strings.Split(*flagKinds, ",")
	}
	kinds, err := pickFaults(names)
	if err != nil {
		t.Fatal(err)
	}
	seed := uint64(*flagSeed)
	if seed == 0 {
		seed = uint64(time.Now().UnixNano()%1_000_000_000) + 1
	}
	t.Logf("seed %d (replay with -soak.seed=%d), %d faults every %s", seed, seed, *flagFaults, *flagPace)
	began := time.Now()
	jr := &journal{start: time.Now()}
	probs := &problems{jr: jr}
	cl := newCluster(t, 3, seed, probs)
	t.Cleanup(func() {
		if err := jr.write(filepath.Join(cl.logDir, "journal.log")); err != nil {
			t.Error(err)
		}
	})

	var sessions []string
	for i := range *flagSessions {
		sessions = append(sessions, fmt.Sprintf("s%d", i+1))
	}
	var members, subs, pubs []*member
	add := func(name string, r role) *member {
		m := &member{name: name, role: r, cl: cl, proxy: newProxy(t, cl.instances[0].proxy.Addr()), sessions: sessions, probs: probs}
		members = append(members, m)
		return m
	}
	for i := range *flagSubscribers {
		subs = append(subs, add(fmt.Sprintf("sub%d", i+1), roleSubscriber))
	}
	for i := range *flagPublishers {
		pubs = append(pubs, add(fmt.Sprintf("pub%d", i+1), rolePublisher))
	}
	ctx, cancel := ctxTimeout(60 * time.Second)
	for _, m := range members {
		if err := m.start(ctx); err != nil {
			cancel()
			t.Fatal(err)
		}
	}
	cancel()
	closed := false
	closeAll := func() client.Stats {
		var total client.Stats
		if closed {
			return total
		}
		closed = true
		for _, m := range members {
			total = addStats(total, m.close())
		}
		return total
	}
	t.Cleanup(func() { closeAll() })

	led := &ledger{jr: jr}
	stop := make(chan struct{})
	stopPublishing := sync.OnceFunc(func() { close(stop) })
	var publishing sync.WaitGroup
	for _, m := range pubs {
		publishing.Go(func() { m.publish(led, *flagRate, 8, stop, settleLimit) })
	}
	t.Cleanup(func() { // before closeAll, should the test end early
		stopPublishing()
		publishing.Wait()
	})

	sched := newSchedule(seed, kinds, cl, members, subs)
	t.Cleanup(sched.restarts.Wait) // before closeAll, should the test end early
	faulted := time.Now()
	sched.run(*flagFaults, *flagPace)
	faultTime := time.Since(faulted)

	stopPublishing()
	publishing.Wait()
	fences := map[string]uint64{}
	for _, s := range sessions {
		var err error
		for _, p := range pubs {
			if p.gone() {
				continue
			}
			var seq uint64
			if seq, err = p.fence(s, settleLimit); err == nil {
				fences[s] = seq
				break
			}
		}
		if _, ok := fences[s]; !ok {
			probs.addf("no fence published to %s: %v", s, err)
			fences[s] = led.last(s) // what the members must have at least
		}
	}
	caughtUp := waitCaughtUp(members, fences, settleLimit)
	if !caughtUp {
		for _, m := range members {
			for _, s := range sessions {
				if last := m.last(s); last < fences[s] && !m.gone() {
					probs.addf("%s has %s up to seq %d %s after the fence at seq %d", m.name, s, last, settleLimit, fences[s])
				}
			}
		}
	}
	stats := closeAll()
	routines := cl.checkGoroutines(goroutineSlack, 30*time.Second)
	cl.shutdown()
	races := cl.scanLogs()
	res := check(probs, members, led, fences)

	r := report{
		seed: seed, elapsed: time.Since(began), faultTime: faultTime, counts: sched.counts,
		cl: cl, members: members, led: led, stats: stats, fences: fences, routines: routines, races: races, res: res,
	}
	t.Log("\n" + r.String())
	jr.addf("%s", r.String())

	for _, in := range cl.instances {
		if in.peakRSS > maxServerRSS() {
			probs.addf("%s: peak resident memory %d MiB, over the bound of %d MiB", in.name, in.peakRSS>>20, maxServerRSS()>>20)
		}
		if early, late, ok := rssGrowth(in.rssSeries); ok && in.incarnations == 1 && late > early*3/2+16<<20 {
			probs.addf("%s (never killed) grows: peak resident memory %d MiB in the last third of the run, %d MiB in the first (after warm-up)",
				in.name, late>>20, early>>20)
		}
	}
	found := probs.all()
	for i, p := range found {
		if i == 50 {
			t.Errorf("... and %d more", len(found)-i)
			break
		}
		t.Error(p)
	}
	if len(found) > 0 {
		t.Logf("the run's journal and the servers' logs: %s (keep them with -soak.logdir); replay with -soak.seed=%d", cl.logDir, seed)
	}
}

// rssGrowth compares the peaks of a process's resident memory early in the
// run (after the first tenth, its warm-up) and in its last third: memory
// that faults leave behind makes the second grow with the run's length.
func rssGrowth(series []int64) (early, late int64, ok bool) {
	n := len(series)
	if n < 10 {
		return 0, 0, false
	}
	return slices.Max(series[n/10 : n/3]), slices.Max(series[2*n/3:]), true
}

// waitCaughtUp polls until every member was handed every session up to its
// fence.
func waitCaughtUp(members []*member, fences map[string]uint64, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for {
		all := true
		for _, m := range members {
			if m.gone() {
				continue // it reported why, and gets no more
			}
			for s, f := range fences {
				if m.last(s) < f {
					all = false
				}
			}
		}
		if all {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond) // polling the members' progress
	}
}

// result is what the end-of-run checks counted.
type result struct {
	published        int // publications reported done
	failed           int // publications that failed (refused, ...)
	failedDelivered  int // of those, delivered all the same
	deliveriesWanted int // done publications × members that had to get them
}

// check compares what every member was handed with what the publishers
// were told: every publication done is in every member's view at its seq,
// each ID once, and all members agree on every seq.
func check(probs *problems, members []*member, led *ledger, fences map[string]uint64) result {
	led.mu.Lock()
	defer led.mu.Unlock()
	var res result
	res.published, res.failed = len(led.done), len(led.failed)
	for _, id := range led.unsettled {
		probs.addf("publication %s neither done nor failed %s after the faults ended", id, settleLimit)
	}
	// One order: every member that has a seq has the same ID there.
	canon := map[string]map[uint64]string{}
	dups := map[string]bool{} // session/id reported twice
	for _, m := range members {
		m.mu.Lock()
		for s, v := range m.views {
			if canon[s] == nil {
				canon[s] = map[uint64]string{}
			}
			seen := map[string]uint64{}
			for i, id := range v.ids {
				seq := v.first + uint64(i)
				if id == "" {
					continue // a gap, reported as it happened
				}
				if prev, ok := seen[id]; ok && !dups[s+"/"+id] {
					dups[s+"/"+id] = true
					probs.addf("%s: %s has id %s at seq %d and at seq %d: published twice (%s; other members too?)", m.name, s, id, prev, seq, led.describe(id))
				}
				seen[id] = seq
				if other, ok := canon[s][seq]; !ok {
					canon[s][seq] = id
				} else if other != id {
					probs.addf("%s: %s seq %d is %s, another member has %s there", m.name, s, seq, id, other)
				}
			}
		}
		m.mu.Unlock()
	}
	// Every done publication at its seq, in every member that was a member
	// then: subscribers from seq 1, publishers from their first message.
	type missing struct {
		n        int
		examples []string
	}
	missed := map[string]*missing{} // by member and session
	for _, p := range led.done {
		if got, ok := canon[p.session][p.seq]; !ok || got != p.id {
			probs.addf("publication %s done as %s seq %d, which no member has (have %q)", p.id, p.session, p.seq, got)
		}
		if p.seq > fences[p.session] {
			probs.addf("publication %s done as %s seq %d, after the fence at %d", p.id, p.session, p.seq, fences[p.session])
		}
		for _, m := range members {
			m.mu.Lock()
			v := m.views[p.session]
			got, ok := v.id(p.seq)
			covered := v != nil && p.seq >= v.first
			m.mu.Unlock()
			if !covered {
				continue
			}
			res.deliveriesWanted++
			if !ok || got != p.id {
				key := m.name + " " + p.session
				if missed[key] == nil {
					missed[key] = &missing{}
				}
				ms := missed[key]
				ms.n++
				if len(ms.examples) < 5 {
					ms.examples = append(ms.examples, fmt.Sprintf("%s at seq %d (have %q)", p.id, p.seq, got))
				}
			}
		}
	}
	for _, m := range members {
		m.mu.Lock()
		for s, n := range m.disorder {
			if n > maxOrderProblems {
				probs.addf("%s: %s had %d order problems in all (the first %d reported)", m.name, s, n, maxOrderProblems)
			}
		}
		m.mu.Unlock()
	}
	for _, key := range slices.Sorted(maps.Keys(missed)) {
		ms := missed[key]
		probs.addf("%s: %d publications done but not handed over, e.g. %s", key, ms.n, strings.Join(ms.examples, ", "))
	}
	// A refused publication must not be applied: "nothing is half-applied".
	// It is, when the connection to Redis drops after the publish was sent
	// and before its answer came: counted, and a failure with -soak.strict.
	delivered := map[string]bool{}
	for _, ids := range canon {
		for _, id := range ids {
			delivered[id] = true
		}
	}
	for id, why := range led.failed {
		if delivered[id] {
			res.failedDelivered++
			if *flagStrict {
				probs.addf("publication %s failed (%s) but was delivered", id, why)
			} else {
				probs.jr.addf("publication %s failed (%s) but was delivered", id, why)
			}
		}
	}
	return res
}

// describe says what the publisher was told of publication id. Called with
// l.mu held.
func (l *ledger) describe(id string) string {
	for _, p := range l.done {
		if p.id == id {
			return fmt.Sprintf("done as seq %d after %s", p.seq, p.took.Round(time.Millisecond))
		}
	}
	if why, ok := l.failed[id]; ok {
		return "failed: " + why
	}
	return "not settled"
}

// report is the run's figures.
type report struct {
	seed      uint64
	elapsed   time.Duration
	faultTime time.Duration
	counts    map[string]int
	cl        *cluster
	members   []*member
	led       *ledger
	stats     client.Stats
	fences    map[string]uint64
	routines  map[string][2]int
	races     int
	res       result
}

func (r report) String() string {
	var b strings.Builder
	total := 0
	for _, n := range r.counts {
		total += n
	}
	fmt.Fprintf(&b, "soak: seed %d, %d faults in %s (run %s), %d instances, %d members, server race detector %v\n",
		r.seed, total, r.faultTime.Round(time.Millisecond), r.elapsed.Round(time.Millisecond), len(r.cl.instances), len(r.members), *flagRaceServer)
	b.WriteString("faults:")
	for _, k := range slices.Sorted(maps.Keys(r.counts)) {
		fmt.Fprintf(&b, " %s %d,", k, r.counts[k])
	}
	b.WriteString("\n")

	var received, reconnects, restarts int
	var resumes []time.Duration
	refusals := map[string]int{}
	for _, m := range r.members {
		m.mu.Lock()
		received += m.received
		reconnects += m.reconnects
		restarts += m.restarts
		resumes = append(resumes, m.resumes...)
		for k, v := range m.refusals {
			refusals[k] += v
		}
		m.mu.Unlock()
	}
	var took []time.Duration
	for _, p := range r.led.done {
		took = append(took, p.took)
	}
	fmt.Fprintf(&b, "messages: %d publications done, %d failed (%d of them delivered all the same), %d unsettled; last seqs %v\n",
		r.res.published, r.res.failed, r.res.failedDelivered, len(r.led.unsettled), r.fences)
	why := map[string]int{}
	for _, err := range r.led.failed {
		why[reasonKind(err)]++
	}
	for _, k := range slices.Sorted(maps.Keys(why)) {
		fmt.Fprintf(&b, "  failed %d× %s\n", why[k], k)
	}
	fmt.Fprintf(&b, "deliveries: %d handed to members (%d of done publications checked); duplicates dropped by the clients %d; publications resent %d, found in a replay %d\n",
		received, r.res.deliveriesWanted, r.stats.Duplicates, r.stats.Resent, r.stats.FoundInReplay)
	fmt.Fprintf(&b, "clients: %d streams welcomed, %d reconnects, %d client restarts; server refusals %v\n",
		r.stats.Connects, reconnects, restarts, refusals)
	fmt.Fprintf(&b, "resume (stream lost → every session rejoined): n=%d p50 %s p99 %s max %s\n",
		len(resumes), quantile(resumes, 0.5), quantile(resumes, 0.99), quantile(resumes, 1))
	fmt.Fprintf(&b, "publish (PublishAsync → done): p50 %s p99 %s max %s\n", quantile(took, 0.5), quantile(took, 0.99), quantile(took, 1))
	for _, in := range r.cl.instances {
		g := r.routines[in.name]
		fmt.Fprintf(&b, "%s: %d processes (%d failed to start), longest lived %s, peak RSS %d MiB, goroutines %d before clients, %d after",
			in.name, in.incarnations, in.startFails, in.longestLived.Round(time.Second), in.peakRSS>>20, g[0], g[1])
		if early, late, ok := rssGrowth(in.rssSeries); ok {
			fmt.Fprintf(&b, "; never killed: peak RSS %d MiB early, %d MiB in the last third", early>>20, late>>20)
		}
		b.WriteString("\n")
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Fprintf(&b, "test process: heap in use %d MiB; data races in the servers' logs: %d\n", ms.HeapInuse>>20, r.races)
	return b.String()
}

// quantile is the q-quantile of ds (nearest rank), 0 for none.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)].Round(time.Millisecond)
}
