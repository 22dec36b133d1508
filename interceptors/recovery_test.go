package interceptors

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestRecovery(t *testing.T) {
	handlerErr := status.Error(codes.NotFound, "no")
	for _, tc := range []struct {
		name    string
		handler grpc.StreamHandler
		code    codes.Code
		wantErr error
	}{
		{"panic becomes INTERNAL", func(any, grpc.ServerStream) error { panic("boom") }, codes.Internal, nil},
		{"panic with an error value", func(any, grpc.ServerStream) error { panic(errors.New("boom")) }, codes.Internal, nil},
		{"errors pass through", func(any, grpc.ServerStream) error { return handlerErr }, codes.NotFound, handlerErr},
		{"success passes through", func(any, grpc.ServerStream) error { return nil }, codes.OK, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newMockServerStream(t)
			s.Set("Context", context.Background)
			err := Recovery()(nil, s, &grpc.StreamServerInfo{FullMethod: method}, tc.handler)
			if status.Code(err) != tc.code {
				t.Fatalf("err = %v, want code %v", err, tc.code)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
		})
	}
}
