package interceptors

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"

	streampb "github.com/streamhub/streamhub/gen/grpc/stream_service/pb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
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

// panickyService echoes, and panics for the client named "boom".
type panickyService struct {
	streampb.UnimplementedStreamServiceServer
}

func (panickyService) StreamData(stream streampb.StreamService_StreamDataServer) error {
	if md, _ := metadata.FromIncomingContext(stream.Context()); len(md.Get("x-client-id")) > 0 && md.Get("x-client-id")[0] == "boom" {
		panic("handler bug")
	}
	for {
		in, err := stream.Recv()
		if err != nil {
			return nil
		}
		if err := stream.Send(&streampb.StreamDataResponse{Type: in.Type, Data: in.Data}); err != nil {
			return err
		}
	}
}

// TestRecoveryKeepsOtherStreams runs a real gRPC server whose handler
// panics for one client: that stream ends INTERNAL, the process and the
// other stream carry on.
func TestRecoveryKeepsOtherStreams(t *testing.T) {
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer(grpc.ChainStreamInterceptor(Recovery()))
	streampb.RegisterStreamServiceServer(gs, panickyService{})
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = gs.Serve(lis)
	}()
	defer func() {
		gs.Stop()
		<-served
	}()
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := streampb.NewStreamServiceClient(cc)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	good, err := client.StreamData(metadata.AppendToOutgoingContext(ctx, "x-client-id", "good"))
	if err != nil {
		t.Fatal(err)
	}
	bad, err := client.StreamData(metadata.AppendToOutgoingContext(ctx, "x-client-id", "boom"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Recv(); status.Code(err) != codes.Internal {
		t.Fatalf("panicking stream ended with %v, want INTERNAL", err)
	}
	for i := range 3 {
		if err := good.Send(&streampb.StreamDataStreamingRequest{Type: "data", Data: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
		if m, err := good.Recv(); err != nil || m.Data[0] != byte(i) {
			t.Fatalf("other stream: %v, %v", m, err)
		}
	}
	if err := good.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := good.Recv(); err != io.EOF {
		t.Fatalf("other stream ended with %v", err)
	}
}
