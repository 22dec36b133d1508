package soak

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/streamhub/streamhub/internal/faultproxy"
)

// fault is one kind of fault the schedule injects.
type fault struct {
	name   string
	weight int
	// inject applies the fault now, scheduling its end if it lasts; false
	// if it cannot apply now (nothing to stall, too few instances up).
	inject func(s *schedule) bool
}

// faults are the kinds, with their weights in the draw. Stalls last from
// a blip to longer than the clients' and servers' liveness checks (about
// 2.5s and 3s), so both ends of a stalled connection get to give it up; a
// Redis stall past the server's 3s engine timeout gets publishes refused.
var faults = []fault{
	{"cut-client", 16, func(s *schedule) bool {
		s.member().proxy.Cut()
		return true
	}},
	{"cut-instance", 8, func(s *schedule) bool {
		in := s.upInstance()
		if in == nil {
			return false
		}
		in.proxy.Cut()
		return true
	}},
	{"stall-client", 14, func(s *schedule) bool {
		return s.stall(s.member().proxy, s.duration(50*time.Millisecond, 4*time.Second))
	}},
	{"stall-instance", 8, func(s *schedule) bool {
		in := s.upInstance()
		return in != nil && s.stall(in.proxy, s.duration(50*time.Millisecond, 3*time.Second))
	}},
	{"kill-instance", 8, func(s *schedule) bool {
		in := s.mortalInstance()
		if in == nil {
			return false
		}
		s.cl.kill(in, s.uniform(0, 1500*time.Millisecond))
		return true
	}},
	{"drain-instance", 8, func(s *schedule) bool {
		in := s.mortalInstance()
		if in == nil {
			return false
		}
		s.cl.drain(in, s.uniform(0, time.Second))
		return true
	}},
	{"stall-redis", 10, func(s *schedule) bool {
		if s.cl.frozen {
			return false
		}
		s.cl.freeze()
		s.after(s.duration(50*time.Millisecond, 4*time.Second), s.cl.thaw)
		return true
	}},
	{"cut-redis", 8, func(s *schedule) bool {
		s.cl.redisProxy.Cut()
		return true
	}},
	{"restart-client", 6, func(s *schedule) bool {
		return s.subscriber().restart(&s.restarts)
	}},
}

// schedule injects faults at a steady pace, from a seeded generator: the
// same seed draws the same faults, targets and durations in the same
// order (what the processes make of them varies with timing). Everything
// but the restarts of clients runs on the test goroutine.
type schedule struct {
	rng      *rand.Rand
	kinds    []fault // those the run injects
	cl       *cluster
	members  []*member
	subs     []*member
	ends     []ending // faults that last, by time of their end
	stalled  map[*faultproxy.Proxy]bool
	counts   map[string]int
	note     string // the target and duration of the fault being injected, for the journal
	restarts sync.WaitGroup
}

// ending is the end of a fault that lasts.
type ending struct {
	at  time.Time
	end func()
}

// pickFaults returns the faults named (all of them if none).
func pickFaults(names []string) ([]fault, error) {
	for _, n := range names {
		if !slices.ContainsFunc(faults, func(f fault) bool { return f.name == n }) {
			return nil, fmt.Errorf("-soak.kinds: no fault is called %q", n)
		}
	}
	var use []fault
	for _, f := range faults {
		if len(names) == 0 || slices.Contains(names, f.name) {
			use = append(use, f)
		}
	}
	return use, nil
}

// newSchedule draws from kinds.
func newSchedule(seed uint64, kinds []fault, cl *cluster, members, subs []*member) *schedule {
	return &schedule{
		rng: rand.New(rand.NewPCG(seed, seed>>1|1)), kinds: kinds,
		cl: cl, members: members, subs: subs,
		stalled: map[*faultproxy.Proxy]bool{},
		counts:  map[string]int{},
	}
}

// run injects n faults, one every pace, moving the instances along
// (restarts, drains ending) meanwhile, then ends every fault and waits for
// every instance to serve again.
func (s *schedule) run(n int, pace time.Duration) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	next := time.Now()
	for injected := 0; injected < n; {
		now := time.Now()
		s.endDue(now)
		s.cl.step(now)
		if !now.Before(next) {
			if s.inject() {
				injected++
			}
			next = next.Add(pace)
		}
		// Wake for the next fault, the next end of one, a process that
		// serves or ended, or at least every 50ms to watch the instances.
		wait := min(time.Until(next), 50*time.Millisecond)
		if len(s.ends) > 0 {
			wait = min(wait, time.Until(s.ends[0].at))
		}
		timer.Reset(max(wait, 0))
		select {
		case <-timer.C:
		case <-s.cl.wake:
			if !timer.Stop() {
				<-timer.C
			}
		}
	}
	s.endAll()
	// Client restarts may still be dialing: the instances are looked after
	// meanwhile (one that crashed is restarted, not left to refuse them).
	restarted := make(chan struct{})
	go func() {
		s.restarts.Wait()
		close(restarted)
	}()
	for done := false; !done; {
		s.cl.step(time.Now())
		timer.Reset(50 * time.Millisecond)
		select {
		case <-restarted:
			done = true
		case <-s.cl.wake:
		case <-timer.C:
		}
	}
	s.cl.waitAllUp(90 * time.Second)
}

// inject draws a fault among those that can apply now and applies it.
func (s *schedule) inject() bool {
	total := 0
	for _, f := range s.kinds {
		total += f.weight
	}
	// Draw until one applies: at most a few tries, since cuts always do.
	for range 20 {
		s.note = ""
		x := s.rng.IntN(total)
		for _, f := range s.kinds {
			if x -= f.weight; x < 0 {
				if f.inject(s) {
					s.counts[f.name]++
					s.cl.jr.addf("fault %d: %s %s", s.injected(), f.name, s.note)
					return true
				}
				break
			}
		}
	}
	return false
}

func (s *schedule) injected() int {
	n := 0
	for _, c := range s.counts {
		n += c
	}
	return n
}

func (s *schedule) member() *member {
	m := s.members[s.rng.IntN(len(s.members))]
	s.note = m.name
	return m
}

func (s *schedule) subscriber() *member {
	m := s.subs[s.rng.IntN(len(s.subs))]
	s.note = m.name
	return m
}

// upInstance is an instance that serves, drawn at random; nil if none.
func (s *schedule) upInstance() *instance { return s.drawInstance(false) }

// mortalInstance is an instance that serves and may be killed or drained:
// not the steady one.
func (s *schedule) mortalInstance() *instance { return s.drawInstance(true) }

func (s *schedule) drawInstance(mortal bool) *instance {
	var up []*instance
	for _, in := range s.cl.instances {
		if in.state == stateUp && !(mortal && in.steady) {
			up = append(up, in)
		}
	}
	if len(up) == 0 {
		return nil
	}
	in := up[s.rng.IntN(len(up))]
	s.note = in.name
	return in
}

// stall stalls p for d; false if it is stalled already.
func (s *schedule) stall(p *faultproxy.Proxy, d time.Duration) bool {
	if s.stalled[p] {
		return false
	}
	s.stalled[p] = true
	p.Stall()
	s.after(d, func() {
		p.Unstall()
		delete(s.stalled, p)
	})
	return true
}

// after has end run d from now.
func (s *schedule) after(d time.Duration, end func()) {
	e := ending{at: time.Now().Add(d), end: end}
	i, _ := slices.BinarySearchFunc(s.ends, e, func(a, b ending) int { return a.at.Compare(b.at) })
	s.ends = slices.Insert(s.ends, i, e)
}

func (s *schedule) endDue(now time.Time) {
	for len(s.ends) > 0 && !s.ends[0].at.After(now) {
		e := s.ends[0]
		s.ends = s.ends[1:]
		e.end()
	}
}

func (s *schedule) endAll() {
	for len(s.ends) > 0 {
		e := s.ends[0]
		s.ends = s.ends[1:]
		e.end()
	}
}

// duration is drawn between lo and hi on a log scale: as many blips as
// long outages.
func (s *schedule) duration(lo, hi time.Duration) time.Duration {
	l, h := math.Log(float64(lo)), math.Log(float64(hi))
	d := time.Duration(math.Exp(l + s.rng.Float64()*(h-l)))
	s.note += " for " + d.Round(time.Millisecond).String()
	return d
}

func (s *schedule) uniform(lo, hi time.Duration) time.Duration {
	d := lo + time.Duration(s.rng.Int64N(int64(hi-lo)+1))
	s.note += " for " + d.Round(time.Millisecond).String()
	return d
}
