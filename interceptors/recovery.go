package interceptors

import (
	"fmt"
	"runtime/debug"

	"goa.design/clue/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Recovery turns a panic in a stream handler into an INTERNAL status for
// that stream alone, logged with its stack. It protects the handler's own
// goroutine; goroutines a handler starts must recover their own panics.
func Recovery() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		defer func() {
			if r := recover(); r != nil {
				log.Error(ss.Context(), fmt.Errorf("panic: %v", r),
					log.KV{K: "method", V: info.FullMethod}, log.KV{K: "stack", V: string(debug.Stack())})
				err = status.Error(codes.Internal, "internal error")
			}
		}()
		return handler(srv, ss)
	}
}
