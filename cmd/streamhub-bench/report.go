package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"runtime/debug"
	"strings"
	"text/tabwriter"
	"time"
)

// Targets of issue 6 (SPEC §9), as StreamHub/baseline ratios, and the idle
// memory budget.
const (
	minRateRatio   = 0.6
	maxP99Ratio    = 2.0
	maxIdleRSSConn = 32 << 10
)

// Targets of the Redis engine (SPEC §13): fan-out on it at least this
// fraction of the memory engine's deliveries/s, and publishes of different
// clients pipelined: more than one per read Redis makes.
const (
	minRedisFanoutRatio = 0.8
	minPublishesPerRead = 1.0
)

// result is one server's numbers in one scenario.
type result struct {
	Server   string  `json:"server"`
	Messages uint64  `json:"messages,omitempty"` // received in the measurement window
	Seconds  float64 `json:"seconds,omitempty"`  // the window
	Rate     float64 `json:"rate,omitempty"`     // Messages / Seconds
	P50us    float64 `json:"p50_us,omitempty"`
	P99us    float64 `json:"p99_us,omitempty"`
	P999us   float64 `json:"p999_us,omitempty"`
	MeanUS   float64 `json:"mean_us,omitempty"`
	// The server's CPU time in the window, per message: robust to other
	// load on the machine, which the rate is not.
	CPUPerMsgUS float64 `json:"server_cpu_per_msg_us,omitempty"`
	// Ratios to the comparison's reference server, on the other rows.
	RateRatio float64     `json:"rate_ratio,omitempty"`
	P99Ratio  float64     `json:"p99_ratio,omitempty"`
	CPURatio  float64     `json:"server_cpu_per_msg_ratio,omitempty"`
	Redis     *redisUse   `json:"redis,omitempty"` // a server on the Redis engine
	Memory    *idleMemory `json:"memory,omitempty"`
	Error     string      `json:"error,omitempty"`
}

func (r *result) setLatency(h *histogram, w window) {
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	r.Messages = h.count()
	r.Seconds = w.elapsed.Seconds()
	if r.Seconds > 0 {
		r.Rate = float64(r.Messages) / r.Seconds
	}
	if w.cpu >= 0 && r.Messages > 0 {
		r.CPUPerMsgUS = us(w.cpu) / float64(r.Messages)
	}
	r.P50us, r.P99us, r.P999us = us(h.percentile(0.50)), us(h.percentile(0.99)), us(h.percentile(0.999))
	r.MeanUS = us(h.mean())
	r.Redis = w.redis
}

// summary is the one-line progress report of a run.
func (r *result) summary(unit string) string {
	switch {
	case r.Error != "":
		return "FAILED: " + r.Error
	case r.Memory != nil:
		m := r.Memory
		return fmt.Sprintf("%d streams: RSS %s/conn, heap %s/conn, stacks %s/conn, %.2f goroutines/conn",
			m.Streams, fmtBytes(m.RSSPerConn), fmtBytes(m.HeapPerConn), fmtBytes(m.StackPerConn), m.GoroutinesPerConn)
	default:
		s := fmt.Sprintf("%s %s, p50 %s p99 %s p999 %s, server CPU %s/msg", fmtCount(r.Rate), unit,
			fmtMicros(r.P50us), fmtMicros(r.P99us), fmtMicros(r.P999us), fmtMicros(r.CPUPerMsgUS))
		if u := r.Redis; u != nil {
			s += fmt.Sprintf("; Redis: %s publishes/s, CPU %s/publish (%.0f%% of a core), %.1f publishes/read",
				fmtCount(u.PublishesRate), fmtMicros(u.CPUPerPublishUS), u.CPUPercent, u.PublishesPerRead)
		}
		return s
	}
}

// check is one target and whether StreamHub met it.
type check struct {
	Name string  `json:"name"`
	Want string  `json:"want"`
	Got  float64 `json:"got"`
	Met  bool    `json:"met"`
}

func (c check) String() string {
	verdict := "ok"
	if !c.Met {
		verdict = "MISSED"
	}
	return fmt.Sprintf("%s %s: %s", c.Name, c.Want, verdict)
}

// comparison is one scenario: each server's result, their ratios to the
// reference server's and the targets. Scenarios 1-4 compare StreamHub
// (the subject) with the baseline (the reference); 5 and 6 StreamHub on the
// Redis engine with StreamHub on the memory engine.
type comparison struct {
	Number    int      `json:"number"`
	Scenario  string   `json:"scenario"`
	Unit      string   `json:"unit"`
	Reference string   `json:"reference,omitempty"`  // the server of the ratios' denominators
	Results   []result `json:"results"`              // the reference's first
	RateRatio float64  `json:"rate_ratio,omitempty"` // subject / reference
	P99Ratio  float64  `json:"p99_ratio,omitempty"`  // subject / reference
	CPURatio  float64  `json:"server_cpu_per_msg_ratio,omitempty"`
	RSSRatio  float64  `json:"rss_per_conn_ratio,omitempty"`
	Checks    []check  `json:"targets,omitempty"`
}

// servers are the reference and the subject of scenario number: the
// targets are the subject's.
func servers(number int) (reference, subject string) {
	if number >= 5 {
		return kindStreamHub, kindRedis
	}
	return kindBaseline, kindStreamHub
}

func (c *comparison) result(kind string) *result {
	for i := range c.Results {
		if c.Results[i].Server == kind {
			return &c.Results[i]
		}
	}
	return nil
}

// compare computes the ratios and checks the targets, when the runs they
// need worked.
func (c *comparison) compare() {
	if c.Number >= 5 {
		c.compareEngines()
		return
	}
	c.Reference = kindBaseline
	base, sh := c.result(kindBaseline), c.result(kindStreamHub)
	if sh == nil || sh.Error != "" {
		return
	}
	if c.Number == 4 {
		if sh.Memory == nil {
			return
		}
		if base != nil && base.Error == "" && base.Memory != nil && base.Memory.RSSPerConn > 0 {
			c.RSSRatio = sh.Memory.RSSPerConn / base.Memory.RSSPerConn
		}
		c.Checks = []check{{Name: "RSS/conn", Want: fmt.Sprintf("≤ %s", fmtBytes(maxIdleRSSConn)),
			Got: sh.Memory.RSSPerConn, Met: sh.Memory.RSSPerConn <= maxIdleRSSConn}}
		return
	}
	if base == nil || base.Error != "" || base.Rate == 0 || base.P99us == 0 {
		return
	}
	sh.ratios(base)
	c.RateRatio, c.P99Ratio, c.CPURatio = sh.RateRatio, sh.P99Ratio, sh.CPURatio
	c.Checks = []check{{Name: c.Unit, Want: fmt.Sprintf("≥ %.1f×", minRateRatio), Got: c.RateRatio, Met: c.RateRatio >= minRateRatio}}
	if c.Number != 3 { // fan-out's target is throughput only
		c.Checks = append(c.Checks, check{Name: "p99", Want: fmt.Sprintf("≤ %.0f×", maxP99Ratio), Got: c.P99Ratio, Met: c.P99Ratio <= maxP99Ratio})
	}
}

// ratios sets r's ratios to ref's numbers.
func (r *result) ratios(ref *result) {
	r.RateRatio = r.Rate / ref.Rate
	r.P99Ratio = r.P99us / ref.P99us
	if ref.CPUPerMsgUS > 0 {
		r.CPURatio = r.CPUPerMsgUS / ref.CPUPerMsgUS
	}
}

// compareEngines is compare for scenarios 5 and 6: every Redis row against
// the memory engine's; fan-out on one instance must keep minRedisFanoutRatio
// of its rate, and the publishers' publishes must reach Redis pipelined.
func (c *comparison) compareEngines() {
	refKind, subjKind := servers(c.Number)
	c.Reference = refKind
	ref, subj := c.result(refKind), c.result(subjKind)
	refOK := ref != nil && ref.Error == "" && ref.Rate > 0 && ref.P99us > 0
	if refOK {
		for i := range c.Results {
			if r := &c.Results[i]; r.Server != refKind && r.Error == "" {
				r.ratios(ref)
			}
		}
	}
	if subj == nil || subj.Error != "" {
		return
	}
	c.RateRatio, c.P99Ratio, c.CPURatio = subj.RateRatio, subj.P99Ratio, subj.CPURatio
	switch {
	case c.Number == 5 && refOK:
		c.Checks = []check{{Name: c.Unit, Want: fmt.Sprintf("≥ %.1f× memory", minRedisFanoutRatio),
			Got: c.RateRatio, Met: c.RateRatio >= minRedisFanoutRatio}}
	case c.Number == 6 && subj.Redis != nil:
		got := subj.Redis.PublishesPerRead
		c.Checks = []check{{Name: "publishes/Redis read", Want: fmt.Sprintf("> %.0f (pipelined)", minPublishesPerRead),
			Got: got, Met: got > minPublishesPerRead}}
	}
}

// report is everything a run of the bench found.
type report struct {
	Environment map[string]string `json:"environment"`
	Setup       []string          `json:"setup"`
	Comparisons []*comparison     `json:"scenarios"`
	// Skipped says which scenarios did not run, and why.
	Skipped []string `json:"skipped,omitempty"`
}

func newReport(o *options, l launcher) *report {
	return &report{
		Environment: environment(),
		Setup: []string{
			"streamhub: " + l.describe(kindStreamHub),
			"baseline:  " + l.describe(kindBaseline),
			"load:      this process; generated pb client (streampb.NewStreamServiceClient), grpc-go default dial options; " +
				"the servers and the load share the machine's CPUs",
			fmt.Sprintf("runs:      %s, each %s warmup, then %s measured; latency is client send → client receipt of the delivery "+
				"(send time in the payload); msgs/s counts messages delivered back to their sender", runsName(o.count), o.warmup, o.duration),
		},
	}
}

func (rep *report) add(c *comparison) { rep.Comparisons = append(rep.Comparisons, c) }

// failed reports whether any run failed.
func (rep *report) failed() bool {
	for _, c := range rep.Comparisons {
		for _, r := range c.Results {
			if r.Error != "" {
				return true
			}
		}
	}
	return false
}

func (rep *report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

func (rep *report) writeText(w io.Writer) error {
	e := rep.Environment
	fmt.Fprintf(w, "StreamHub vs bare grpc-go: %s CPUs (GOMAXPROCS %s), %s, %s, grpc-go %s\n",
		e["cpus"], e["gomaxprocs"], e["os_arch"], e["go"], e["grpc_go"])
	for _, s := range rep.Setup {
		fmt.Fprintln(w, "  "+s)
	}
	var rates, idle []*comparison
	for _, c := range rep.Comparisons {
		if c.Number == 4 {
			idle = append(idle, c)
		} else {
			rates = append(rates, c)
		}
	}
	if len(rates) > 0 {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "#\tscenario\tserver\trate\t\tp50\tp99\tp999\tsrv CPU/msg\trate ratio\tp99 ratio\tCPU/msg ratio\ttargets\t")
		for _, c := range rates {
			for i, r := range c.Results {
				num, name := "", ""
				if i == 0 {
					num, name = fmt.Sprint(c.Number), c.Scenario
				}
				if r.Error != "" {
					fmt.Fprintf(tw, "%s\t%s\t%s\tFAILED: %s\t\t\t\t\t\t\t\t\t\t\n", num, name, r.Server, r.Error)
					continue
				}
				ratio, p99, cpu, targets := "", "", "", ""
				if r.RateRatio > 0 {
					ratio, p99 = fmt.Sprintf("%.2f", r.RateRatio), fmt.Sprintf("%.2f×", r.P99Ratio)
					if r.CPURatio > 0 {
						cpu = fmt.Sprintf("%.2f×", r.CPURatio)
					}
				}
				if _, subject := servers(c.Number); r.Server == subject {
					targets = joinChecks(c.Checks)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", num, name, r.Server,
					fmtCount(r.Rate), c.Unit, fmtMicros(r.P50us), fmtMicros(r.P99us), fmtMicros(r.P999us), fmtMicros(r.CPUPerMsgUS),
					ratio, p99, cpu, targets)
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if err := writeRedisTable(w, rates); err != nil {
		return err
	}
	for _, c := range idle {
		fmt.Fprintf(w, "\n4 %s\n", c.Scenario)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "server\tRSS/conn\theap/conn\tstacks/conn\tgoroutines/conn\tRSS before → after\theap before → after\topen\tserver heartbeats\tRSS ratio\ttargets\t")
		for _, r := range c.Results {
			if r.Error != "" {
				fmt.Fprintf(tw, "%s\tFAILED: %s\t\t\t\t\t\t\t\t\t\t\n", r.Server, r.Error)
				continue
			}
			m := r.Memory
			ratio, targets := "", ""
			if r.Server == kindStreamHub {
				targets = joinChecks(c.Checks)
				if c.RSSRatio > 0 {
					ratio = fmt.Sprintf("%.2f", c.RSSRatio)
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.2f\t%s → %s\t%s → %s\t%.1fs\t%d\t%s\t%s\t\n", r.Server,
				fmtBytes(m.RSSPerConn), fmtBytes(m.HeapPerConn), fmtBytes(m.StackPerConn), m.GoroutinesPerConn,
				fmtBytes(float64(m.Before.RSS)), fmtBytes(float64(m.After.RSS)),
				fmtBytes(float64(m.Before.HeapAlloc)), fmtBytes(float64(m.After.HeapAlloc)),
				m.OpenSeconds, m.ServerHeartbeats, ratio, targets)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	for _, s := range rep.Skipped {
		fmt.Fprintf(w, "\nskipped %s\n", s)
	}
	return nil
}

// writeRedisTable is what Redis did in the runs on the Redis engine.
func writeRedisTable(w io.Writer, rates []*comparison) error {
	var rows [][]string
	for _, c := range rates {
		for _, r := range c.Results {
			u := r.Redis
			if u == nil || r.Error != "" {
				continue
			}
			rows = append(rows, []string{fmt.Sprint(c.Number), r.Server, fmtCount(u.PublishesRate),
				fmt.Sprintf("%.0f%%", u.CPUPercent), fmtMicros(u.CPUPerPublishUS), fmtMicros(u.ServerCPUPerPublishUS),
				fmt.Sprintf("%.1f", u.PublishesPerRead), fmtCount(float64(u.Scripts) / r.Seconds), fmt.Sprint(u.Connections)})
		}
	}
	if len(rows) == 0 {
		return nil
	}
	fmt.Fprintln(w, "\nRedis engine, in the same measurement windows (Redis CPU in % of one core; server CPU over every instance; "+
		"publishes/read above 1: publishes reach Redis pipelined; scripts: publishes and the engine's other scripts)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "#\tserver\tpublishes/s\tRedis CPU\tRedis CPU/publish\tserver CPU/publish\tpublishes/read\tscripts/s\tRedis conns\t")
	for _, row := range rows {
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	return tw.Flush()
}

// runsName says how many runs of each server a line of the table stands for.
func runsName(count int) string {
	if count == 1 {
		return "one run per server and scenario"
	}
	return fmt.Sprintf("%d runs per server and scenario, rotating which server goes first; the run with the median rate is shown", count)
}

func joinChecks(cs []check) string {
	s := make([]string, len(cs))
	for i, c := range cs {
		s[i] = c.String()
	}
	return strings.Join(s, "; ")
}

// fmtCount is a rate with thousands separators.
func fmtCount(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// fmtMicros is a latency given in microseconds, with a fitting unit.
func fmtMicros(us float64) string {
	switch {
	case us >= 1e6:
		return fmt.Sprintf("%.2fs", us/1e6)
	case us >= 1e3:
		return fmt.Sprintf("%.2fms", us/1e3)
	default:
		return fmt.Sprintf("%.1fµs", us)
	}
}

// fmtBytes is a byte count with a binary unit; it may be negative.
func fmtBytes(b float64) string {
	a := math.Abs(b)
	switch {
	case a >= 1<<30:
		return fmt.Sprintf("%.2f GiB", b/(1<<30))
	case a >= 1<<20:
		return fmt.Sprintf("%.1f MiB", b/(1<<20))
	case a >= 1<<10:
		return fmt.Sprintf("%.1f KiB", b/(1<<10))
	default:
		return fmt.Sprintf("%.0f B", b)
	}
}

// moduleVersion is the version of a module this binary was built with.
func moduleVersion(path string) string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == path {
				return m.Version
			}
		}
	}
	return "unknown"
}
