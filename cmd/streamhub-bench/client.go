package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	streampb "github.com/streamhub/streamhub/gen/grpc/stream_service/pb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// clientStream is a StreamData stream opened with the generated pb client.
// The load uses the pb client rather than Goa's: it costs the load
// generator one conversion less per message, and both servers speak it.
type clientStream = grpc.BidiStreamingClient[streampb.StreamDataStreamingRequest, streampb.StreamDataResponse]

// dial returns a client connection to addr; it connects on first use.
func dial(addr string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
}

// openStream opens a stream as clientID and waits for the server's first
// message, the welcome, so that the server has registered the stream.
func openStream(ctx context.Context, cc *grpc.ClientConn, clientID string) (clientStream, error) {
	ctx = metadata.AppendToOutgoingContext(ctx, "x-client-id", clientID)
	st, err := streampb.NewStreamServiceClient(cc).StreamData(ctx)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", clientID, err)
	}
	m, err := st.Recv()
	if err != nil {
		return nil, streamEnded(clientID+" before its welcome", err)
	}
	if m.Type != typeControl || m.GetAction() != actWelcome {
		return nil, fmt.Errorf("%s: first message is %s %s, not a welcome", clientID, m.Type, m.GetAction())
	}
	return st, nil
}

// join joins session and waits for the server's joined reply.
func join(st clientStream, session string) error {
	action := actJoin
	if err := st.Send(&streampb.StreamDataStreamingRequest{Type: typeControl, Action: &action, SessionId: &session}); err != nil {
		return fmt.Errorf("join %s: %w", session, err)
	}
	for {
		m, err := st.Recv()
		if err != nil {
			return streamEnded("join "+session, err)
		}
		switch {
		case m.Type == typeControl && m.GetAction() == actJoined && m.GetSessionId() == session:
			return nil
		case m.Type == typeControl && m.GetAction() == "error":
			return fmt.Errorf("join %s refused: %s", session, m.GetReason())
		}
	}
}

// dataRequest is a data message to session with a payload of size bytes.
func dataRequest(session string, size int) *streampb.StreamDataStreamingRequest {
	return &streampb.StreamDataStreamingRequest{Type: typeData, SessionId: &session, Data: make([]byte, size)}
}

// streamEnded describes a stream that ended while the load still ran.
// recvData returns the payload of the next data message on st, skipping
// the others; an error is the stream's end.
func recvData(who string, st clientStream) ([]byte, error) {
	for {
		m, err := st.Recv()
		if err != nil {
			return nil, streamEnded(who, err)
		}
		if m.Type == typeData {
			return m.Data, nil
		}
	}
}

func streamEnded(who string, err error) error {
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("%s: the server ended the stream", who)
	}
	if s, ok := status.FromError(err); ok {
		return fmt.Errorf("%s: stream ended %s: %s", who, s.Code(), s.Message())
	}
	return fmt.Errorf("%s: %w", who, err)
}

// loadRun is one scenario's load against one server. The load's goroutines
// run until its context ends; their first failure ends the run. Receivers
// record latencies only while the measurement window is open.
type loadRun struct {
	ctx       context.Context // ends the load's streams and goroutines
	cancel    context.CancelFunc
	measuring atomic.Bool
	wg        sync.WaitGroup

	mu       sync.Mutex // guards the fields below
	err      error
	hists    []*histogram
	cleanups []func()
}

func newLoadRun(parent context.Context) *loadRun {
	ctx, cancel := context.WithCancel(parent)
	return &loadRun{ctx: ctx, cancel: cancel}
}

// fail records the first failure and ends the run. Errors that come once
// the run is ending are its consequence, not failures.
func (r *loadRun) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ctx.Err() != nil {
		return
	}
	r.err = err
	r.cancel()
}

// spawn runs f in a goroutine that finish waits for.
func (r *loadRun) spawn(f func()) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		f()
	}()
}

// histogram returns a histogram for one receiving goroutine; finish merges
// them all.
func (r *loadRun) histogram() *histogram {
	h := new(histogram)
	r.mu.Lock()
	r.hists = append(r.hists, h)
	r.mu.Unlock()
	return h
}

// onFinish registers f to run once the load's goroutines are done, in
// reverse order of registration (closing client connections).
func (r *loadRun) onFinish(f func()) {
	r.mu.Lock()
	r.cleanups = append(r.cleanups, f)
	r.mu.Unlock()
}

// record adds a latency to h if the measurement window is open.
func (r *loadRun) record(h *histogram, sent time.Duration) {
	if r.measuring.Load() {
		h.record(now() - sent)
	}
}

// probe runs alongside a measurement window, e.g. to take a profile of the
// server; it should take about as long as the window.
type probe func(ctx context.Context)

// window is what a measurement window saw.
type window struct {
	elapsed time.Duration
	cpu     time.Duration // the server's CPU time during the window; -1 when unknown
	redis   *redisUse     // what the server's Redis did; nil without one, or unknown
}

// reading is what a meter reads at a measurement window's opening and
// closing.
type reading struct {
	cpu   time.Duration // the server's CPU time: every instance's
	redis *redisSample  // its Redis's counters; nil without one
}

// measure lets the load warm up, then opens the measurement window for d.
// The window closes early if the run fails. A probe, if any, starts with
// the window, and the load keeps running until it returns. meter, if set,
// reads the server's CPU time (and its Redis's counters), at the window's
// opening and closing.
func (r *loadRun) measure(warmup, d time.Duration, p probe, meter func() (reading, error)) (window, error) {
	w := window{cpu: -1}
	if !sleep(r.ctx, warmup) {
		return w, r.failure()
	}
	var r0 reading
	meterErr := errors.New("no meter")
	if meter != nil {
		r0, meterErr = meter()
	}
	probed := make(chan struct{})
	r.measuring.Store(true)
	start := time.Now()
	go func() {
		defer close(probed)
		if p != nil {
			p(context.WithoutCancel(r.ctx))
		}
	}()
	sleep(r.ctx, d)
	r.measuring.Store(false)
	w.elapsed = time.Since(start)
	if meterErr == nil {
		if r1, err := meter(); err == nil {
			w.cpu = r1.cpu - r0.cpu
			if r0.redis != nil && r1.redis != nil {
				w.redis = redisWindow(*r0.redis, *r1.redis, w.elapsed, w.cpu)
			}
		}
	}
	<-probed
	return w, r.failure()
}

// failure is the run's first failure, if any.
func (r *loadRun) failure() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// finish ends the load, waits for its goroutines, runs the cleanups and
// returns every latency recorded, and the first failure.
func (r *loadRun) finish() (*histogram, error) {
	r.mu.Lock()
	r.cancel() // under mu, so that no failure is recorded from now on
	r.mu.Unlock()
	r.wg.Wait()
	all := new(histogram)
	for _, h := range r.hists {
		all.merge(h)
	}
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
	return all, r.failure()
}

// sleep waits for d or the end of ctx; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// dialAll opens n client connections to addr, closed when the run finishes.
func (r *loadRun) dialAll(addr string, n int, opts ...grpc.DialOption) ([]*grpc.ClientConn, error) {
	return r.dialEach([]string{addr}, n, opts...)
}

// dialEach opens n client connections, the i-th to addrs[i % len(addrs)],
// closed when the run finishes.
func (r *loadRun) dialEach(addrs []string, n int, opts ...grpc.DialOption) ([]*grpc.ClientConn, error) {
	conns := make([]*grpc.ClientConn, 0, n)
	r.onFinish(func() {
		for _, cc := range conns {
			cc.Close()
		}
	})
	for i := range n {
		cc, err := dial(addrs[i%len(addrs)], opts...)
		if err != nil {
			return nil, err
		}
		conns = append(conns, cc)
	}
	return conns, nil
}

// parallel runs f(0) … f(n-1) on at most workers goroutines and returns the
// first error; after one, the indexes not started yet are skipped.
func parallel(n, workers int, f func(i int) error) error {
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		once sync.Once
		err  error
		bad  atomic.Bool
	)
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !bad.Load() {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if e := f(i); e != nil {
					once.Do(func() { err = e })
					bad.Store(true)
				}
			}
		}()
	}
	wg.Wait()
	return err
}
