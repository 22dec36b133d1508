package main

import (
	"testing"
)

func TestCompareChecksTheTargets(t *testing.T) {
	for _, tc := range []struct {
		name                string
		number              int
		base, sh            result
		rateRatio, p99Ratio float64
		met                 []bool
	}{
		{"met", 1, result{Server: kindBaseline, Rate: 1000, P99us: 100}, result{Server: kindStreamHub, Rate: 700, P99us: 150},
			0.7, 1.5, []bool{true, true}},
		{"slow and late", 2, result{Server: kindBaseline, Rate: 1000, P99us: 100}, result{Server: kindStreamHub, Rate: 500, P99us: 250},
			0.5, 2.5, []bool{false, false}},
		{"fan-out is judged on throughput only", 3, result{Server: kindBaseline, Rate: 1000, P99us: 100}, result{Server: kindStreamHub, Rate: 600, P99us: 900},
			0.6, 9, []bool{true}},
		{"no baseline, no ratio", 1, result{Server: kindBaseline, Error: "failed"}, result{Server: kindStreamHub, Rate: 600, P99us: 900},
			0, 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &comparison{Number: tc.number, Unit: "msgs/s", Results: []result{tc.base, tc.sh}}
			c.compare()
			if !near(c.RateRatio, tc.rateRatio) || !near(c.P99Ratio, tc.p99Ratio) {
				t.Fatalf("ratios %.3f %.3f, want %.3f %.3f", c.RateRatio, c.P99Ratio, tc.rateRatio, tc.p99Ratio)
			}
			if len(c.Checks) != len(tc.met) {
				t.Fatalf("checks %+v, want %d", c.Checks, len(tc.met))
			}
			for i, ch := range c.Checks {
				if ch.Met != tc.met[i] {
					t.Errorf("check %s: met %v, want %v", ch, ch.Met, tc.met[i])
				}
			}
		})
	}
}

func TestCompareIdleMemory(t *testing.T) {
	c := &comparison{Number: 4, Results: []result{
		{Server: kindBaseline, Memory: &idleMemory{RSSPerConn: 80 << 10}},
		{Server: kindStreamHub, Memory: &idleMemory{RSSPerConn: 40 << 10}},
	}}
	c.compare()
	if !near(c.RSSRatio, 0.5) || len(c.Checks) != 1 || c.Checks[0].Met {
		t.Fatalf("ratio %.2f, checks %+v: want 0.5 and a missed 32 KiB target", c.RSSRatio, c.Checks)
	}
}

func TestMedianRun(t *testing.T) {
	runs := []result{{Rate: 3}, {Rate: 1}, {Rate: 2}}
	if got := median(runs); got.Rate != 2 {
		t.Fatalf("median of 3, 1, 2 is %v", got.Rate)
	}
	if got := median(runs[:2]); got.Rate != 1 {
		t.Fatalf("median of 3, 1 is %v, want the lower", got.Rate)
	}
	runs = append(runs, result{Error: "boom"})
	if got := median(runs); got.Error != "boom" {
		t.Fatalf("a failed run is hidden behind the median: %+v", got)
	}
}

func TestFormats(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{fmtCount(0), "0"},
		{fmtCount(999), "999"},
		{fmtCount(1234567.4), "1,234,567"},
		{fmtMicros(12.34), "12.3µs"},
		{fmtMicros(1500), "1.50ms"},
		{fmtBytes(32 << 10), "32.0 KiB"},
		{fmtBytes(-512), "-512 B"},
		{sizeName(64), "64B"},
		{sizeName(1024), "1KiB"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func near(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }
