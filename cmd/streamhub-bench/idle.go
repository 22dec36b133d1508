package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	streampb "github.com/streamhub/streamhub/gen/grpc/stream_service/pb"
	"google.golang.org/grpc"
)

// idleMemory is what scenario 4 found about one server.
type idleMemory struct {
	Streams     int       `json:"streams"`
	OpenSeconds float64   `json:"open_seconds"` // to open every stream, get its welcome and its burst back
	Before      memSample `json:"before"`       // with no stream open
	After       memSample `json:"after"`        // with every stream open and idle
	// Per connection: (After - Before) / Streams.
	RSSPerConn        float64 `json:"rss_per_conn_bytes"`
	HeapPerConn       float64 `json:"heap_per_conn_bytes"`
	StackPerConn      float64 `json:"stack_per_conn_bytes"`
	GoroutinesPerConn float64 `json:"goroutines_per_conn"`
	// Heartbeats the server sent during the hold, over all streams.
	ServerHeartbeats uint64 `json:"server_heartbeats"`
}

// idleParams shapes scenario 4.
type idleParams struct {
	streams  int           // each on a TCP connection of its own
	interval time.Duration // client heartbeat interval
	hold     time.Duration // idle time before the memory is sampled
	// burst messages of burstSize bytes, echoed, before a stream goes idle:
	// an idle connection that was once busy has touched its buffers.
	burst, burstSize int
	// sampled, if set, runs right after the second sample (to save a heap
	// profile).
	sampled func(context.Context)
}

// idleLoad is scenario 4: streams that only exchange heartbeats. The client
// sends one every interval; the server sends one when it sent nothing for
// its heartbeat interval. The server's memory is sampled before the streams
// open and after they have been held open.
func idleLoad(ctx context.Context, t *target, p idleParams) (*idleMemory, error) {
	before, err := sampleMemory(ctx, t)
	if err != nil {
		return nil, err
	}
	r := newLoadRun(ctx)
	res, err := idleRun(r, t, p, before)
	_, ferr := r.finish()
	if err == nil {
		err = ferr
	}
	return res, err
}

func idleRun(r *loadRun, t *target, p idleParams, before memSample) (*idleMemory, error) {
	// Small client buffers: the load generator holds thousands of
	// connections; the server's buffers are what is measured.
	conns, err := r.dialAll(t.grpcAddr, p.streams, grpc.WithReadBufferSize(4<<10), grpc.WithWriteBufferSize(4<<10))
	if err != nil {
		return nil, err
	}
	sts := make([]clientStream, p.streams)
	var heartbeats, echoed atomic.Uint64
	began := time.Now()
	err = parallel(p.streams, 32, func(i int) error {
		who := fmt.Sprintf("bench-idle-%d", i)
		st, err := openStream(r.ctx, conns[i], who)
		if err != nil {
			return err
		}
		sts[i] = st
		r.spawn(func() {
			for {
				m, err := st.Recv()
				if err != nil {
					r.fail(streamEnded(who, err))
					return
				}
				switch m.Type {
				case typeHeartbeat:
					heartbeats.Add(1)
				case typeData:
					echoed.Add(1)
				}
			}
		})
		if p.burst > 0 {
			req := dataRequest(who, p.burstSize)
			for range p.burst {
				if err := st.Send(req); err != nil {
					return fmt.Errorf("%s: send: %w", who, err)
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// The bursts are sent; the load generator polls for their echoes.
	for echoed.Load() < uint64(p.streams*p.burst) {
		if !sleep(r.ctx, 10*time.Millisecond) {
			return nil, r.failure()
		}
	}
	opened := time.Since(began)
	heartbeats.Store(0)

	r.spawn(func() {
		tick := time.NewTicker(p.interval)
		defer tick.Stop()
		hb := &streampb.StreamDataStreamingRequest{Type: typeHeartbeat}
		for {
			select {
			case <-r.ctx.Done():
				return
			case <-tick.C:
			}
			for _, st := range sts {
				if st.Send(hb) != nil && r.ctx.Err() != nil {
					return // a failed stream's receiver reports it
				}
			}
		}
	})
	if !sleep(r.ctx, p.hold) {
		return nil, r.failure()
	}
	after, err := sampleMemory(r.ctx, t)
	if err != nil {
		return nil, err
	}
	if p.sampled != nil {
		p.sampled(r.ctx)
	}
	if err := r.failure(); err != nil {
		return nil, err
	}
	n := float64(p.streams)
	return &idleMemory{
		Streams:           p.streams,
		OpenSeconds:       opened.Seconds(),
		Before:            before,
		After:             after,
		RSSPerConn:        (float64(after.RSS) - float64(before.RSS)) / n,
		HeapPerConn:       (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / n,
		StackPerConn:      (float64(after.StackInuse) - float64(before.StackInuse)) / n,
		GoroutinesPerConn: float64(after.Goroutines-before.Goroutines) / n,
		ServerHeartbeats:  heartbeats.Load(),
	}, nil
}
