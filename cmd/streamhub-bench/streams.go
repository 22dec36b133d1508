package main

import (
	"errors"
	"fmt"
	"io"
)

// streamsLoad is scenario 2: streams streams, spread over conns client
// connections, each in a session of its own, each sending as fast as its
// window allows: at most window messages sent and not yet delivered back.
// The window keeps each server connection's outbound queue bounded, so the
// bench measures throughput rather than StreamHub's slow-consumer
// disconnect.
func streamsLoad(streams, conns, window, size int) loadFunc {
	return func(r *loadRun, t *target) error {
		ccs, err := r.dialAll(t.grpcAddr, conns)
		if err != nil {
			return err
		}
		return parallel(streams, len(ccs), func(i int) error {
			who := fmt.Sprintf("bench-streams-%d", i)
			st, err := openStream(r.ctx, ccs[i%len(ccs)], who)
			if err != nil {
				return err
			}
			if t.kind != kindBaseline { // StreamHub delivers to members only
				if err := join(st, who); err != nil {
					return err
				}
			}
			credits := make(chan struct{}, window)
			h := r.histogram()
			req := dataRequest(who, size)
			r.spawn(func() {
				for seq := uint64(1); ; seq++ {
					select {
					case credits <- struct{}{}:
					case <-r.ctx.Done():
						return
					}
					stamp(req.Data, now(), seq)
					if err := st.Send(req); err != nil {
						if !errors.Is(err, io.EOF) { // on EOF the receiver reports the stream's status
							r.fail(fmt.Errorf("%s: send: %w", who, err))
						}
						return
					}
				}
			})
			r.spawn(func() {
				for {
					data, err := recvData(who, st)
					if err != nil {
						r.fail(err)
						return
					}
					if sent, _, ok := unstamp(data); ok {
						r.record(h, sent)
					}
					<-credits
				}
			})
			return nil
		})
	}
}
