package main

import "fmt"

// pingPongLoad is scenario 1: one stream sends a data message and waits for
// it to come back before sending the next. The baseline echoes it; on
// StreamHub the stream publishes to a session whose only member it is, and
// its own delivery is the echo.
func pingPongLoad(size int) loadFunc {
	return func(r *loadRun, t *target) error {
		conns, err := r.dialAll(t.grpcAddr, 1)
		if err != nil {
			return err
		}
		const who = "bench-pingpong"
		st, err := openStream(r.ctx, conns[0], who)
		if err != nil {
			return err
		}
		if t.kind != kindBaseline { // StreamHub delivers to members only
			if err := join(st, who); err != nil {
				return err
			}
		}
		h := r.histogram()
		req := dataRequest(who, size)
		r.spawn(func() {
			for seq := uint64(1); r.ctx.Err() == nil; seq++ {
				stamp(req.Data, now(), seq)
				if err := st.Send(req); err != nil {
					r.fail(fmt.Errorf("%s: send: %w", who, err))
					return
				}
				data, err := recvData(who, st)
				if err != nil {
					r.fail(err)
					return
				}
				sent, got, ok := unstamp(data)
				if !ok || got != seq {
					r.fail(fmt.Errorf("%s: got message %d back, want %d", who, got, seq))
					return
				}
				r.record(h, sent)
			}
		})
		return nil
	}
}
