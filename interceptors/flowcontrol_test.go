package interceptors

import (
	"context"
	"sync/atomic"
	"testing"

	"goa.design/clue/mock"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const method = "/stream_service.StreamService/StreamData"

// mockServerStream is a grpc.ServerStream whose calls a test scripts.
type mockServerStream struct {
	grpc.ServerStream // nil: a call the test did not script panics
	*mock.Mock
	t *testing.T
}

func newMockServerStream(t *testing.T) *mockServerStream {
	return &mockServerStream{Mock: mock.New(), t: t}
}

func (m *mockServerStream) Context() context.Context {
	if f := m.Next("Context"); f != nil {
		return f.(func() context.Context)()
	}
	return context.Background()
}

func (m *mockServerStream) RecvMsg(msg any) error {
	if f := m.Next("RecvMsg"); f != nil {
		return f.(func(any) error)(msg)
	}
	m.t.Error("unexpected RecvMsg")
	return nil
}

func (m *mockServerStream) SendMsg(msg any) error {
	if f := m.Next("SendMsg"); f != nil {
		return f.(func(any) error)(msg)
	}
	m.t.Error("unexpected SendMsg")
	return nil
}

func TestFlowControlSends(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := newMockServerStream(t)
	s.Set("Context", func() context.Context { return ctx })
	for range 5 {
		s.Add("RecvMsg", func(any) error { return nil })
	}
	for range 2 {
		s.Add("SendMsg", func(any) error { return nil })
	}
	fc := FlowControl{Method: method, SendLimit: rate.Every(1e12), SendBurst: 2, OnWait: func() { t.Error("a send counted as a receive wait") }}
	handler := func(_ any, ss grpc.ServerStream) error {
		for range 5 { // receives are not limited
			if err := ss.RecvMsg(nil); err != nil {
				return err
			}
		}
		for i := 0; ; i++ {
			if i == 2 {
				cancel() // the third send has no token: it waits until the stream ends
			}
			if err := ss.SendMsg(nil); err != nil {
				return err
			}
		}
	}
	err := fc.Stream()(nil, s, &grpc.StreamServerInfo{FullMethod: method}, handler)
	if status.Code(err) != codes.Canceled {
		t.Fatalf("err = %v, want Canceled", err)
	}
	if s.HasMore() {
		t.Fatal("not every scripted call happened")
	}
}

// recvN is a handler that receives n messages.
func recvN(n int) grpc.StreamHandler {
	return func(_ any, ss grpc.ServerStream) error {
		for range n {
			if err := ss.RecvMsg(nil); err != nil {
				return err
			}
		}
		return nil
	}
}

func TestFlowControl(t *testing.T) {
	ok := func(any) error { return nil }
	for _, tc := range []struct {
		name      string
		fc        FlowControl
		method    string
		recvs     int // messages the handler reads
		reads     int // reads that reach the stream
		waits     int64
		cancelled bool // the wait is ended by cancelling the stream's context
	}{
		{name: "within burst", fc: FlowControl{Limit: rate.Every(1e12), Burst: 3}, method: method, recvs: 3, reads: 3},
		{name: "disabled", fc: FlowControl{Limit: 0, Burst: 1}, method: method, recvs: 10, reads: 10},
		{name: "other method", fc: FlowControl{Limit: rate.Every(1e12), Burst: 1}, method: "/other.Service/Method", recvs: 10, reads: 10},
		{name: "method name must match exactly", fc: FlowControl{Limit: rate.Every(1e12), Burst: 1}, method: method + "/", recvs: 10, reads: 10},
		{name: "over burst waits until the stream ends", fc: FlowControl{Limit: rate.Every(1e12), Burst: 2}, method: method, recvs: 3, reads: 3, waits: 1, cancelled: true},
		{name: "infinite rate never waits", fc: FlowControl{Limit: rate.Inf, Burst: 1}, method: method, recvs: 5, reads: 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var waits atomic.Int64
			tc.fc.Method = method
			tc.fc.OnWait = func() {
				waits.Add(1)
				if tc.cancelled {
					cancel()
				}
			}
			s := newMockServerStream(t)
			s.Set("Context", func() context.Context { return ctx })
			for range tc.reads {
				s.Add("RecvMsg", ok)
			}
			err := tc.fc.Stream()(nil, s, &grpc.StreamServerInfo{FullMethod: tc.method}, recvN(tc.recvs))
			if tc.cancelled {
				if status.Code(err) != codes.Canceled {
					t.Fatalf("err = %v, want Canceled", err)
				}
			} else if err != nil {
				t.Fatalf("err = %v", err)
			}
			if got := waits.Load(); got != tc.waits {
				t.Errorf("%d waits, want %d", got, tc.waits)
			}
			if s.HasMore() {
				t.Error("not every scripted read happened")
			}
		})
	}
}
