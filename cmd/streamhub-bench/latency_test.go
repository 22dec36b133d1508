package main

import (
	"math"
	"slices"
	"testing"
	"time"
)

func TestBucketsCoverEveryValue(t *testing.T) {
	values := []int64{0, 1, 63, 64, 127, 128, 129, 255, 256, 1000, 12345, 999_999, 1 << 30, 1<<40 - 1}
	for v := int64(1); v < 1<<40; v = v*3/2 + 1 {
		values = append(values, v, v+1)
	}
	slices.Sort(values)
	prev := -1
	for _, v := range values {
		i := bucketOf(v)
		lower, width := bucketRange(i)
		if v < lower || v >= lower+width {
			t.Fatalf("%d is in bucket %d = [%d, %d)", v, i, lower, lower+width)
		}
		if v >= 128 && float64(width)/float64(lower) > 1.0/64 {
			t.Fatalf("bucket %d of %d is %d wide: more than 1/64 of it", i, v, width)
		}
		if i < prev {
			t.Fatalf("bucket of %d is %d, below the previous value's %d", v, i, prev)
		}
		prev = i
	}
	if got := bucketOf(-5); got != 0 {
		t.Fatalf("negative values go to bucket %d, want 0", got)
	}
	if got := bucketOf(math.MaxInt64); got != numBuckets-1 {
		t.Fatalf("the largest value goes to bucket %d, want the last, %d", got, numBuckets-1)
	}
}

func TestPercentiles(t *testing.T) {
	var h histogram
	if h.percentile(0.5) != 0 || h.mean() != 0 {
		t.Fatal("an empty histogram has latencies")
	}
	// 1µs … 100ms, uniformly: the q-th percentile is q×100ms.
	for i := 1; i <= 100_000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{
		{0.5, 50 * time.Millisecond},
		{0.99, 99 * time.Millisecond},
		{0.999, 99_900 * time.Microsecond},
		{1, 100 * time.Millisecond},
		{0.00001, time.Microsecond},
	} {
		got := h.percentile(tc.q)
		if d := math.Abs(float64(got-tc.want)) / float64(tc.want); d > 1.0/64 {
			t.Errorf("p%g = %v, want %v within 1/64", tc.q*100, got, tc.want)
		}
	}
	if h.count() != 100_000 {
		t.Fatalf("count %d", h.count())
	}
	if m := h.mean(); m != 50_000_500*time.Nanosecond {
		t.Fatalf("mean %v", m)
	}
}

func TestPercentilesStayWithinRecorded(t *testing.T) {
	var h histogram
	for range 10 {
		h.record(1000 * time.Nanosecond)
	}
	for _, q := range []float64{0.5, 0.99, 0.999} {
		if got := h.percentile(q); got != time.Microsecond {
			t.Fatalf("p%g of identical latencies = %v, want 1µs", q*100, got)
		}
	}
}

func TestMergeEqualsRecordingTogether(t *testing.T) {
	var a, b, all histogram
	for i := range 5000 {
		d := time.Duration(i*i) * time.Nanosecond
		all.record(d)
		if i%3 == 0 {
			a.record(d)
		} else {
			b.record(d)
		}
	}
	var merged histogram
	merged.merge(&a)
	merged.merge(&b)
	merged.merge(new(histogram))
	if merged != all {
		t.Fatalf("merged: n %d min %v max %v sum %v; together: n %d min %v max %v sum %v",
			merged.n, merged.min, merged.max, merged.sum, all.n, all.min, all.max, all.sum)
	}
}

func TestStampRoundTrip(t *testing.T) {
	data := make([]byte, 64)
	stamp(data, 123456789*time.Nanosecond, 42)
	sent, seq, ok := unstamp(data)
	if !ok || sent != 123456789*time.Nanosecond || seq != 42 {
		t.Fatalf("unstamp: %v %d %v", sent, seq, ok)
	}
	if _, _, ok := unstamp(data[:stampSize-1]); ok {
		t.Fatal("a short payload unstamped")
	}
}
