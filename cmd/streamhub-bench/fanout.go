package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
)

// fanoutSession is the session of scenario 3.
const fanoutSession = "bench-fanout"

// fanoutLoad is scenario 3: subscribers streams, spread over conns client
// connections, join one session; one publisher on a connection of its own
// joins it too and publishes as fast as the slowest member allows: at most
// window messages ahead of it. Deliveries to the subscribers are counted;
// the publisher's own deliveries only pace it. A server of several
// instances sharing a Redis gets the subscribers' connections in turn; the
// publisher is on the first.
func fanoutLoad(subscribers, conns, window, size int) loadFunc {
	return func(r *loadRun, t *target) error {
		ccs, err := r.dialEach(t.grpcAddrs(), conns)
		if err != nil {
			return err
		}
		pubcc, err := r.dialAll(t.grpcAddr, 1)
		if err != nil {
			return err
		}
		flow := newFanoutFlow(window, subscribers+1)
		receive := func(who string, st clientStream, h *histogram) {
			for {
				data, err := recvData(who, st)
				if err != nil {
					r.fail(err)
					return
				}
				sent, seq, ok := unstamp(data)
				if !ok {
					continue
				}
				if h != nil {
					r.record(h, sent)
				}
				flow.delivered(seq)
			}
		}
		err = parallel(subscribers, conns, func(i int) error {
			who := fmt.Sprintf("bench-sub-%d", i)
			st, err := openStream(r.ctx, ccs[i%conns], who)
			if err != nil {
				return err
			}
			if err := join(st, fanoutSession); err != nil {
				return err
			}
			h := r.histogram()
			r.spawn(func() { receive(who, st, h) })
			return nil
		})
		if err != nil {
			return err
		}

		const who = "bench-publisher"
		pub, err := openStream(r.ctx, pubcc[0], who)
		if err != nil {
			return err
		}
		if err := join(pub, fanoutSession); err != nil {
			return err
		}
		r.spawn(func() { receive(who, pub, nil) })
		req := dataRequest(fanoutSession, size)
		r.spawn(func() {
			for seq := uint64(1); ; seq++ {
				if !flow.beforeSend(r.ctx, seq) {
					return
				}
				stamp(req.Data, now(), seq)
				if err := pub.Send(req); err != nil {
					if !errors.Is(err, io.EOF) {
						r.fail(fmt.Errorf("%s: send: %w", who, err))
					}
					return
				}
			}
		})
		return nil
	}
}

// fanoutFlow keeps a publisher at most window messages ahead of the slowest
// of members receivers, without scanning them: every checkpoint-th message
// carries a countdown of the members yet to receive it, and the publisher
// may run window messages past the last message everyone received.
// Members receive in order, so checkpoints complete in order.
type fanoutFlow struct {
	window     uint64
	checkpoint uint64
	members    int64
	pending    []atomic.Int64 // countdown of checkpoint seq s at (s/checkpoint) % len
	done       atomic.Uint64  // the last checkpoint every member received
	wake       chan struct{}  // capacity 1: done moved
}

func newFanoutFlow(window, members int) *fanoutFlow {
	cp := max(window/4, 1)
	return &fanoutFlow{
		window:     uint64(window),
		checkpoint: uint64(cp),
		members:    int64(members),
		// Checkpoints not done yet lie within window of done: window/cp+1
		// of them at most, so this many slots are never reused too early.
		pending: make([]atomic.Int64, window/cp+2),
		wake:    make(chan struct{}, 1),
	}
}

// beforeSend waits until message seq may be sent and arms its countdown if
// it is a checkpoint. It returns false if ctx ended first.
func (f *fanoutFlow) beforeSend(ctx context.Context, seq uint64) bool {
	for seq > f.done.Load()+f.window {
		select {
		case <-f.wake:
		case <-ctx.Done():
			return false
		}
	}
	if seq%f.checkpoint == 0 {
		f.pending[(seq/f.checkpoint)%uint64(len(f.pending))].Store(f.members)
	}
	return true
}

// delivered is called by each member for each message it receives.
func (f *fanoutFlow) delivered(seq uint64) {
	if seq%f.checkpoint != 0 {
		return
	}
	if f.pending[(seq/f.checkpoint)%uint64(len(f.pending))].Add(-1) != 0 {
		return
	}
	f.done.Store(seq)
	select {
	case f.wake <- struct{}{}:
	default:
	}
}
