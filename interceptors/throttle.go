package interceptors

import (
	"context"

	"golang.org/x/time/rate"
)

// Throttle is the token bucket of one stream and one direction: each
// message takes a token, and when the bucket is empty Wait blocks until the
// next token comes. FlowControl keeps one per stream; a transport outside
// gRPC's interceptor chain (StreamHub's WebSocket transport) uses it the
// same way, waiting before it reads on, so that the client feels
// backpressure instead of errors.
type Throttle struct {
	lim    *rate.Limiter
	onWait func()
}

// NewThrottle returns a bucket of burst tokens refilled at limit tokens per
// second. onWait, if set, is called each time a message has to wait. A limit
// of 0 or less returns nil, a Throttle that never waits.
func NewThrottle(limit rate.Limit, burst int, onWait func()) *Throttle {
	if limit <= 0 {
		return nil
	}
	return &Throttle{lim: rate.NewLimiter(limit, burst), onWait: onWait}
}

// Wait takes a token, waiting for one until ctx ends. It fails with ctx's
// error, or with rate's when ctx's deadline comes before the token would.
func (t *Throttle) Wait(ctx context.Context) error {
	if t == nil || t.lim.Allow() {
		return nil
	}
	if t.onWait != nil {
		t.onWait()
	}
	return t.lim.Wait(ctx)
}
