package main

import (
	"encoding/binary"
	"math"
	"math/bits"
	"time"
)

// epoch is the load generator's time origin. Send times travel in payloads
// as offsets from it, so latency is measured on one monotonic clock.
var epoch = time.Now()

// now is the monotonic time since epoch.
func now() time.Duration { return time.Since(epoch) }

// stampSize is the part of every payload the bench uses: the send time and
// the sender's sequence number. Sizes below it are refused by the flags.
const stampSize = 16

// stamp writes the send time and a sequence number at the start of data.
func stamp(data []byte, sent time.Duration, seq uint64) {
	binary.LittleEndian.PutUint64(data[0:8], uint64(sent))
	binary.LittleEndian.PutUint64(data[8:16], seq)
}

// unstamp reads what stamp wrote; ok is false when data is too short.
func unstamp(data []byte) (sent time.Duration, seq uint64, ok bool) {
	if len(data) < stampSize {
		return 0, 0, false
	}
	return time.Duration(binary.LittleEndian.Uint64(data[0:8])), binary.LittleEndian.Uint64(data[8:16]), true
}

// Latency buckets are log-linear: exact below 128ns, then 64 buckets per
// power of two, so a percentile read from them is within 1/64 (1.6%) of the
// recorded value. Values from 2^maxExp ns (about 19 minutes) up share the
// last bucket.
const (
	subBits    = 6
	subCount   = 1 << subBits
	maxExp     = 34
	numBuckets = subCount * (maxExp + 2)
)

// bucketOf is the index of the bucket holding v nanoseconds.
func bucketOf(v int64) int {
	if v < 2*subCount {
		return int(max(v, 0))
	}
	e := bits.Len64(uint64(v)) - subBits - 1 // v>>e is in [64, 128)
	if e > maxExp {
		return numBuckets - 1
	}
	return e*subCount + int(v>>e)
}

// bucketRange is the smallest value of bucket i and the bucket's width.
func bucketRange(i int) (lower, width int64) {
	if i < 2*subCount {
		return int64(i), 1
	}
	e := i/subCount - 1
	return int64(i%subCount+subCount) << e, 1 << e
}

// histogram records latencies. The zero value is ready to use. It is not
// safe for concurrent use: each receiving goroutine records into its own,
// and they are merged once the goroutines are done.
type histogram struct {
	counts [numBuckets]uint64
	n      uint64
	sum    time.Duration
	min    time.Duration
	max    time.Duration
}

// record adds one latency.
func (h *histogram) record(d time.Duration) {
	d = max(d, 0)
	if h.n == 0 || d < h.min {
		h.min = d
	}
	h.max = max(h.max, d)
	h.n++
	h.sum += d
	h.counts[bucketOf(int64(d))]++
}

// merge adds everything o recorded.
func (h *histogram) merge(o *histogram) {
	if o.n == 0 {
		return
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
	h.sum += o.sum
	for i, c := range o.counts {
		h.counts[i] += c
	}
}

// count is the number of latencies recorded.
func (h *histogram) count() uint64 { return h.n }

// mean is the average latency, 0 when nothing was recorded.
func (h *histogram) mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return h.sum / time.Duration(h.n)
}

// percentile is the latency that q (0 < q ≤ 1) of the recorded ones do not
// exceed: the middle of its bucket, kept within the recorded min and max.
// It is 0 when nothing was recorded.
func (h *histogram) percentile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lower, width := bucketRange(i)
			v := time.Duration(lower + width/2)
			return min(max(v, h.min), h.max)
		}
	}
	return h.max
}
