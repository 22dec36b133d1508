// Package interceptors holds StreamHub's gRPC stream interceptors. Each
// wraps the server stream of one method, named exactly, and leaves every
// other method alone; they fit any gRPC service.
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
	// OnWait, if set, is called for each message that had to wait for a token.
	OnWait func()
}

// Stream returns the stream interceptor.
func (f FlowControl) Stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if f.Limit <= 0 || info.FullMethod != f.Method {
			return handler(srv, ss)
		}
		return handler(srv, &rateLimitedStream{ServerStream: ss, lim: rate.NewLimiter(f.Limit, f.Burst), onWait: f.OnWait})
	}
}

type rateLimitedStream struct {
	grpc.ServerStream
	lim    *rate.Limiter
	onWait func()
}

// RecvMsg takes a token before reading, waiting for one if needed, so that
// an over-eager client's messages stay in the transport.
func (s *rateLimitedStream) RecvMsg(m any) error {
	if !s.lim.Allow() {
		if s.onWait != nil {
			s.onWait()
		}
		ctx := s.Context()
		if err := s.lim.Wait(ctx); err != nil {
			if ctx.Err() != nil {
				return status.FromContextError(ctx.Err()).Err()
			}
			return status.Error(codes.ResourceExhausted, err.Error()) // a deadline too near to wait for
		}
	}
	return s.ServerStream.RecvMsg(m)
}
