// Package interceptors holds StreamHub's gRPC stream interceptors. Each
// wraps the server stream of one method, named exactly, and leaves every
// other method alone; they fit any gRPC service. Their token bucket
// (Throttle) and stream measurement (Monitoring.Start) also serve a
// transport outside gRPC's interceptor chain.
package interceptors

import (
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// FlowControl limits how fast the server reads each stream of one method:
// every received message takes a token from the stream's own bucket, and
// when the bucket is empty the stream is not read until a token comes.
// Nothing is dropped and nothing errors: the client feels backpressure
// through gRPC's flow control.
type FlowControl struct {
	// Method is the full method name the limit applies to.
	Method string
	// Limit is the sustained rate in messages per second; 0 disables the
	// interceptor.
	Limit rate.Limit
	// Burst is the bucket size.
	Burst int
	// OnWait, if set, is called for each received message that had to wait
	// for a token.
	OnWait func()
	// SendLimit, if positive, limits sends the same way, in messages per
	// second with a bucket of SendBurst: a send waits for its token.
	SendLimit rate.Limit
	// SendBurst is the send bucket size.
	SendBurst int
}

// Stream returns the stream interceptor.
func (f FlowControl) Stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if (f.Limit <= 0 && f.SendLimit <= 0) || info.FullMethod != f.Method {
			return handler(srv, ss)
		}
		return handler(srv, &rateLimitedStream{
			ServerStream: ss,
			recv:         NewThrottle(f.Limit, f.Burst, f.OnWait),
			send:         NewThrottle(f.SendLimit, f.SendBurst, nil),
		})
	}
}

type rateLimitedStream struct {
	grpc.ServerStream
	recv, send *Throttle // nil when that way is not limited
}

// RecvMsg reads a message and takes a token for it, waiting for one if
// needed before handing the message on. The stream is not read meanwhile,
// so an over-eager client's next messages stay in the transport.
func (s *rateLimitedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil || s.recv == nil {
		return err
	}
	return s.take(s.recv)
}

// SendMsg takes a send token before writing, waiting for one if needed.
func (s *rateLimitedStream) SendMsg(m any) error {
	if s.send != nil {
		if err := s.take(s.send); err != nil {
			return err
		}
	}
	return s.ServerStream.SendMsg(m)
}

func (s *rateLimitedStream) take(t *Throttle) error {
	ctx := s.Context()
	if err := t.Wait(ctx); err != nil {
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		return status.Error(codes.ResourceExhausted, err.Error()) // a deadline too near to wait for
	}
	return nil
}
