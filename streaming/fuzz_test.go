package streaming

import (
	"context"
	"testing"
	"unicode/utf8"

	streamsvcc "github.com/streamhub/streamhub/gen/grpc/stream_service/client"
	streampb "github.com/streamhub/streamhub/gen/grpc/stream_service/pb"
	"google.golang.org/grpc/metadata"
)

// FuzzHandleMessage sends arbitrary messages, bypassing the generated
// client's checks, and requires that each is answered with valid messages
// and leaves the stream open.
func FuzzHandleMessage(f *testing.F) {
	f.Add("data", "room", "", "m1", []byte("hi"), uint64(0), false, "")
	f.Add("control", "room", "join", "", []byte(nil), uint64(0), true, "")
	f.Add("control", "room", "join", "", []byte(nil), uint64(3), true, "stale")
	f.Add("control", "room", "pause", "", []byte(nil), uint64(0), false, "")
	f.Add("control", "room", "resume", "x", []byte(nil), uint64(0), false, "")
	f.Add("control", "room", "leave", "", []byte(nil), uint64(0), false, "")
	f.Add("control", "room", "welcome", "", []byte(nil), uint64(0), false, "")
	f.Add("heartbeat", "", "", "", []byte(nil), uint64(0), false, "")
	f.Add("bogus", "bad session", "dance", "a/b", []byte{0xff}, uint64(1<<63), true, "e")

	ts := startServer(f, Config{})
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), "x-client-id", "fuzzer"))
	f.Cleanup(cancel)
	stream, err := streampb.NewStreamServiceClient(ts.dial(f)).StreamData(ctx)
	if err != nil {
		f.Fatal(err)
	}
	if m, err := stream.Recv(); err != nil || m.Type != typeControl || m.GetAction() != actWelcome {
		f.Fatalf("no welcome: %v %v", m, err)
	}

	f.Fuzz(func(t *testing.T, typ, session, action, id string, data []byte, seq uint64, hasSeq bool, epoch string) {
		for _, s := range []string{typ, session, action, id, epoch} {
			if !utf8.ValidString(s) {
				t.Skip("protobuf strings are UTF-8; no client can send this")
			}
		}
		msg := &streampb.StreamDataStreamingRequest{Type: typ, Data: data}
		for _, f := range []struct {
			dst **string
			v   string
		}{{&msg.SessionId, session}, {&msg.Action, action}, {&msg.Id, id}, {&msg.Epoch, epoch}} {
			if f.v != "" {
				*f.dst = &f.v
			}
		}
		if hasSeq {
			msg.Seq = &seq
		}
		if err := stream.Send(msg); err != nil {
			_, err = stream.Recv()
			t.Fatalf("send %v: stream ended: %v", msg, err)
		}
		if err := stream.Send(&streampb.StreamDataStreamingRequest{Type: typeHealthCheck}); err != nil {
			t.Fatalf("send health_check: %v", err)
		}
		for {
			m, err := stream.Recv()
			if err != nil {
				t.Fatalf("stream ended after %v: %v", msg, err)
			}
			if err := streamsvcc.ValidateStreamDataResponse(m); err != nil {
				t.Fatalf("invalid reply to %v: %v", msg, err)
			}
			if m.Type == typeHealthCheck {
				return
			}
		}
	})
}
