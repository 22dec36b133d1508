package interceptors

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	streampb "github.com/streamhub/streamhub/gen/grpc/stream_service/pb"
	"goa.design/clue/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// recordingMetrics records what Monitoring reports.
type recordingMetrics struct {
	mu                       sync.Mutex
	received, sent           int
	receivedBytes, sentBytes int
	ended                    []codes.Code
}

func (r *recordingMetrics) MessageReceived(n int) {
	r.mu.Lock()
	r.received++
	r.receivedBytes += n
	r.mu.Unlock()
}
func (r *recordingMetrics) MessageSent(n int) { r.mu.Lock(); r.sent++; r.sentBytes += n; r.mu.Unlock() }
func (r *recordingMetrics) StreamEnded(c codes.Code, _ time.Duration) {
	r.mu.Lock()
	r.ended = append(r.ended, c)
	r.mu.Unlock()
}

func TestMonitoring(t *testing.T) {
	msg := &streampb.StreamDataResponse{Type: "data", Data: []byte("hello")}
	in := &streampb.StreamDataStreamingRequest{Type: "data", Data: []byte("hello")}
	msgSize := proto.Size(msg)
	if proto.Size(in) != msgSize {
		t.Fatal("test messages differ in size")
	}
	okSend := func(any) error { return nil }
	okRecv := func(m any) error { proto.Merge(m.(proto.Message), in); return nil }
	failed := status.Error(codes.Unavailable, "gone")

	for _, tc := range []struct {
		name                  string
		method                string
		script                func(*mockServerStream)
		handler               grpc.StreamHandler
		wantErr               error
		received, sent, ended int
		code                  codes.Code
	}{
		{
			name:   "counts both ways",
			method: method,
			script: func(s *mockServerStream) {
				for range 3 {
					s.Add("RecvMsg", okRecv)
				}
				for range 2 {
					s.Add("SendMsg", okSend)
				}
			},
			handler: func(_ any, ss grpc.ServerStream) error {
				for range 3 {
					if err := ss.RecvMsg(&streampb.StreamDataStreamingRequest{}); err != nil {
						return err
					}
				}
				for range 2 {
					if err := ss.SendMsg(msg); err != nil {
						return err
					}
				}
				return nil
			},
			received: 3, sent: 2, ended: 1, code: codes.OK,
		},
		{
			name:   "failed send is not counted and the status is recorded",
			method: method,
			script: func(s *mockServerStream) {
				s.Add("SendMsg", okSend)
				s.Add("SendMsg", func(any) error { return failed })
			},
			handler: func(_ any, ss grpc.ServerStream) error {
				for {
					if err := ss.SendMsg(msg); err != nil {
						return err
					}
				}
			},
			wantErr: failed, sent: 1, ended: 1, code: codes.Unavailable,
		},
		{
			name:   "failed receive ends with the handler's error",
			method: method,
			script: func(s *mockServerStream) {
				s.Add("RecvMsg", func(any) error { return failed })
			},
			handler: func(_ any, ss grpc.ServerStream) error {
				return ss.RecvMsg(&streampb.StreamDataStreamingRequest{})
			},
			wantErr: failed, ended: 1, code: codes.Unavailable,
		},
		{
			name:   "other methods are not monitored",
			method: "/other.Service/Method",
			script: func(s *mockServerStream) { s.Add("SendMsg", okSend) },
			handler: func(_ any, ss grpc.ServerStream) error {
				return ss.SendMsg(msg)
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newMockServerStream(t)
			s.Set("Context", context.Background)
			tc.script(s)
			rec := &recordingMetrics{}
			m := Monitoring{Method: method, Metrics: rec}
			err := m.Stream()(nil, s, &grpc.StreamServerInfo{FullMethod: tc.method}, tc.handler)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if rec.received != tc.received || rec.sent != tc.sent || len(rec.ended) != tc.ended {
				t.Fatalf("received %d sent %d ended %d, want %d %d %d", rec.received, rec.sent, len(rec.ended), tc.received, tc.sent, tc.ended)
			}
			if rec.receivedBytes != tc.received*msgSize || rec.sentBytes != tc.sent*msgSize {
				t.Fatalf("bytes received %d sent %d, want %d %d", rec.receivedBytes, rec.sentBytes, tc.received*msgSize, tc.sent*msgSize)
			}
			if tc.ended > 0 && rec.ended[0] != tc.code {
				t.Fatalf("ended with %v, want %v", rec.ended[0], tc.code)
			}
			if s.HasMore() {
				t.Fatal("not every scripted call happened")
			}
		})
	}
}

// TestMonitoringStart measures a stream the way a transport outside the
// interceptor chain does: the handler's annotations and the counts reach
// the end-of-stream line, the status reaches the metrics.
func TestMonitoringStart(t *testing.T) {
	var out syncBuffer
	ctx := log.Context(context.Background(), log.WithOutput(&out), log.WithFormat(log.FormatText))
	rec := &recordingMetrics{}
	ctx, tally := Monitoring{Method: "GET /v1/stream", Metrics: rec}.Start(ctx)
	Annotate(ctx, "client", "alice")
	tally.Received(10)
	tally.Sent(3)
	tally.Sent(4)
	tally.End(ctx, status.Error(codes.Aborted, "replaced"))

	if rec.received != 1 || rec.receivedBytes != 10 || rec.sent != 2 || rec.sentBytes != 7 {
		t.Fatalf("metrics: %+v", rec)
	}
	if len(rec.ended) != 1 || rec.ended[0] != codes.Aborted {
		t.Fatalf("ended with %v, want Aborted", rec.ended)
	}
	line := out.String()
	for _, want := range []string{`method="GET /v1/stream"`, "client=alice", "received=1", "received_bytes=10", "sent=2", "sent_bytes=7", "code=Aborted", "status=replaced"} {
		if !strings.Contains(line, want) {
			t.Errorf("end-of-stream line lacks %s:\n%s", want, line)
		}
	}
}

// syncBuffer is a log output safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// encodedMsg stands in for a message sent already encoded.
type encodedMsg int

func (e encodedMsg) EncodedSize() int { return int(e) }

func TestSizeOfAnEncodedMessageIsWhatItSays(t *testing.T) {
	if got := size(encodedMsg(42)); got != 42 {
		t.Fatalf("size %d, want 42", got)
	}
	if got := size("not a message"); got != 0 {
		t.Fatalf("size of a non-message %d", got)
	}
}
