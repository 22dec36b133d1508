package web

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"sync/atomic"

	"github.com/gorilla/websocket"
	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	"github.com/streamhub/streamhub/interceptors"
	goa "goa.design/goa/v3/pkg"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// stream is the generated WebSocket stream as the service sees it: reads
// take a token from the stream's bucket and are measured, writes are
// measured, and the last goaway is remembered for the close code.
type stream struct {
	gen      streamsvc.StreamDataServerStream
	srv      *Server
	sock     *socket
	tally    *interceptors.StreamTally
	throttle *interceptors.Throttle
	goaway   atomic.Pointer[string] // reason of the last goaway sent

	// waitCtx ends a wait for a token when the stream ends.
	waitCtx  context.Context
	stopWait context.CancelFunc
}

var _ streamsvc.StreamDataServerStream = (*stream)(nil)

func newStream(s *Server, gen streamsvc.StreamDataServerStream, sock *socket, tally *interceptors.StreamTally) *stream {
	st := &stream{
		gen:      gen,
		srv:      s,
		sock:     sock,
		tally:    tally,
		throttle: interceptors.NewThrottle(s.cfg.RateLimit, s.cfg.RateBurst, s.cfg.Metrics.RateLimitWait),
	}
	st.waitCtx, st.stopWait = context.WithCancel(context.Background())
	return st
}

// Send writes one message as a JSON text frame.
func (st *stream) Send(m *streamsvc.DataMessage) error {
	if err := st.gen.Send(m); err != nil {
		return err
	}
	st.tally.Sent(jsonSize(m))
	if m.Type == "control" && m.Action != nil && *m.Action == "goaway" && m.Reason != nil {
		st.goaway.Store(m.Reason)
	}
	return nil
}

// SendWithContext is Send: a socket write is not cancelled halfway.
func (st *stream) SendWithContext(_ context.Context, m *streamsvc.DataMessage) error {
	return st.Send(m)
}

// Recv reads one message, then takes a token for it, waiting for one if
// needed before handing the message on: meanwhile the socket is not read,
// and a client that sends too fast feels TCP's backpressure. Invalid
// messages take a token too, and come back as Goa errors about one message:
// the service answers them with a control error and reads on.
func (st *stream) Recv() (*streamsvc.DataMessage, error) {
	if !st.sock.startRead() {
		return nil, errEnded
	}
	m, err := st.gen.Recv()
	err, readable := classify(err)
	st.sock.endRead(!readable)
	var invalid *goa.ServiceError
	switch {
	case err == nil:
		st.tally.Received(jsonSize(m))
	case errors.As(err, &invalid):
		st.tally.Received(0)
	default:
		return nil, err
	}
	if werr := st.throttle.Wait(st.waitCtx); werr != nil {
		return nil, status.Error(codes.Canceled, "stream ended")
	}
	return m, err
}

// RecvWithContext is Recv; the stream's end, not ctx, ends a wait.
func (st *stream) RecvWithContext(context.Context) (*streamsvc.DataMessage, error) {
	return st.Recv()
}

// Unwrap returns the generated stream: the generated handler looks at it
// when the endpoint fails, to know whether the request was upgraded. It
// fails only before any upgrade (see finish), and none can follow, so the
// handler reads a stream no goroutine writes any more.
func (st *stream) Unwrap() any { return st.gen }

// Close does nothing: the endpoint closes the socket when the service
// returns, with a code that says why.
func (st *stream) Close() error { return nil }

// classify turns what the generated Recv returned into what the service
// understands:
//   - a frame that is not a DataMessage in JSON: a Goa error about that
//     message (gorilla discards the rest of the frame; the socket is fine);
//   - the client's normal close (1000, 1001, or none given): io.EOF, the end
//     of its messages;
//   - a frame over the size limit: RESOURCE_EXHAUSTED, as gRPC's own limit;
//   - the connection broke or the client closed otherwise: CANCELED.
//
// Goa's validation errors and io.EOF (a null frame: the generated client's
// half-close) pass through. readable says whether the socket can still be
// read (it cannot after a read error: gorilla keeps returning it).
func classify(err error) (_ error, readable bool) {
	if err == nil || err == io.EOF {
		return err, true
	}
	var (
		invalid  *goa.ServiceError
		syntax   *json.SyntaxError
		typ      *json.UnmarshalTypeError
		corrupt  base64.CorruptInputError
		closeErr *websocket.CloseError
	)
	switch {
	case errors.As(err, &invalid):
		return err, true
	case errors.As(err, &syntax), errors.As(err, &typ), errors.As(err, &corrupt),
		errors.Is(err, io.ErrUnexpectedEOF) && !errors.As(err, &closeErr):
		return goa.DecodePayloadError("not a DataMessage in JSON: " + err.Error()), true
	case errors.Is(err, websocket.ErrReadLimit):
		return status.Error(codes.ResourceExhausted, "message larger than the size limit"), false
	case errors.As(err, &closeErr) && (closeErr.Code == websocket.CloseNormalClosure ||
		closeErr.Code == websocket.CloseGoingAway || closeErr.Code == websocket.CloseNoStatusReceived):
		return io.EOF, false
	default:
		return status.Error(codes.Canceled, "connection lost: "+err.Error()), false
	}
}

// finish ends the stream after the service returned err: the measurement
// is recorded and, if the request was upgraded, the socket is closed with
// the code that says why. It returns the error the generated handler
// should answer the request with: err when there is no socket, so that a
// refusal (unauthenticated, too many connections, draining) is an HTTP
// status; nil otherwise, the response being the socket's.
func (st *stream) finish(ctx context.Context, err error) error {
	st.stopWait()
	conn, failed := st.sock.end()
	st.tally.End(ctx, grpcStatus(err))
	switch {
	case conn != nil:
		var goaway string
		if r := st.goaway.Load(); r != nil {
			goaway = *r
		}
		code, text := closeCode(err, goaway, st.srv.draining.Load())
		st.sock.close(code, text, st.srv.cfg.CloseTimeout)
		return nil
	case failed:
		return nil // the failed upgrade answered the request
	default:
		return err
	}
}
