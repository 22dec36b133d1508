package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	streamsvcc "github.com/streamhub/streamhub/gen/grpc/stream_service/client"
	goa "goa.design/goa/v3/pkg"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
)

const (
	// defaultURL is the design's only server host.
	defaultURL = "grpc://localhost:50051"
	// defaultPort is the server's default --grpc-addr port, used when -url
	// names only a host.
	defaultPort = "50051"

	// maxRecvMessageSize is larger than any server limit we expect
	// (--max-message-size defaults to 5 MiB, grpc-go's client default is
	// only 4 MiB): the server enforces the limit, and the CLI must not be the
	// one refusing a message the server accepted and delivered.
	maxRecvMessageSize = 64 << 20
)

// parseTarget turns the -url flag into the host:port to dial and whether its
// scheme asks for TLS. It accepts grpc://HOST[:PORT] as in Goa-generated
// CLIs, grpcs://HOST[:PORT] for TLS, and a bare HOST[:PORT] as in grpcurl;
// the port defaults to the server's.
func parseTarget(raw string) (target string, secure bool, err error) {
	s := raw
	if !strings.Contains(s, "://") {
		s = "grpc://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", false, fmt.Errorf("invalid URL %q: %w", raw, err)
	}
	switch u.Scheme {
	case "grpc":
	case "grpcs":
		secure = true
	default:
		return "", false, fmt.Errorf("invalid URL %q: scheme must be grpc or grpcs", raw)
	}
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", false, fmt.Errorf("invalid URL %q: want grpc://HOST:PORT or grpcs://HOST:PORT", raw)
	}
	host, port := u.Hostname(), u.Port()
	if host == "" {
		return "", false, fmt.Errorf("invalid URL %q: missing host", raw)
	}
	if port == "" {
		port = defaultPort
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", false, fmt.Errorf("invalid URL %q: bad port %q", raw, port)
	}
	return net.JoinHostPort(host, port), secure, nil
}

// dialOptions says how the CLI connects to the server, over TLS if sec asks
// for it. Its errors are about the TLS files: the command line named files
// that cannot be used.
func dialOptions(sec tlsSettings) ([]grpc.DialOption, error) {
	creds := insecure.NewCredentials()
	if sec.enabled {
		cfg, err := sec.clientConfig()
		if err != nil {
			return nil, err
		}
		// Without -tls-server-name, grpc-go verifies the -url host, as
		// cfg.ServerName is then empty.
		creds = credentials.NewTLS(cfg)
	}
	return []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		// Streams are long-lived and may be idle for minutes; pings find a
		// dead server. 30s stays above the server's enforcement MinTime
		// (20s), which would otherwise close the connection with
		// "too_many_pings".
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                30 * time.Second,
			Timeout:             10 * time.Second,
			PermitWithoutStream: true,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMessageSize)),
		grpc.WithUserAgent("streamhub-cli"),
	}, nil
}

// endRecorder remembers the raw gRPC error that ended the stream. The
// generated client hides it: its endpoint flattens a failure to open into a
// goa.Fault string, and its Recv turns a status carrying a Goa error response
// into a *goa.ServiceError, which loses the code when the server's error was
// not a design error (Goa then names it "fault"). The generated Recv also
// returns validation errors about a single message; the recorder is how the
// CLI tells those apart from the end of the stream.
type endRecorder struct {
	mu  sync.Mutex
	end error // guarded by mu; io.EOF or a status error once the stream has ended, nil before
}

// interceptor is a grpc.StreamClientInterceptor that records the first error
// opening or reading the stream.
func (r *endRecorder) interceptor(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cs, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		r.record(err)
		return nil, err
	}
	return &recordingStream{ClientStream: cs, r: r}, nil
}

func (r *endRecorder) record(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.end == nil {
		r.end = err
	}
}

// err returns the error that ended the stream (io.EOF for OK), or nil while
// the stream is open.
func (r *endRecorder) err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.end
}

// recordingStream reports RecvMsg's errors to its recorder. Once RecvMsg
// fails the stream is over, so its error is the stream's status.
type recordingStream struct {
	grpc.ClientStream
	r *endRecorder
}

func (s *recordingStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil {
		s.r.record(err)
	}
	return err
}

// openStream opens the stream with the generated endpoint. The stream lives
// as long as ctx, so the open timeout cannot be a context deadline: a timer
// cancels ctx only if opening is still under way when it fires.
func openStream(ctx context.Context, cancel context.CancelFunc, endpoint goa.Endpoint, payload any, timeout time.Duration, ends *endRecorder) (*streamsvcc.StreamDataClientStream, error) {
	timer := time.AfterFunc(timeout, cancel)
	res, err := endpoint(ctx, payload)
	if !timer.Stop() {
		// The timer fired, so ctx is canceled even if the endpoint
		// returned a stream just after.
		return nil, status.Errorf(codes.DeadlineExceeded, "not connected within %s", timeout)
	}
	if err != nil {
		if raw := ends.err(); raw != nil {
			err = raw
		}
		return nil, err
	}
	stream, ok := res.(*streamsvcc.StreamDataClientStream)
	if !ok {
		return nil, fmt.Errorf("unexpected stream type %T", res)
	}
	return stream, nil
}

// statusOf returns the gRPC status an error stands for: OK for io.EOF (how
// Recv reports a stream the server ended with OK), the status itself for a
// gRPC status error, and for a *goa.ServiceError the code its name maps to.
func statusOf(err error) *status.Status {
	if err == nil || errors.Is(err, io.EOF) {
		return status.New(codes.OK, "")
	}
	if st, ok := status.FromError(err); ok {
		return st
	}
	var se *goa.ServiceError
	if errors.As(err, &se) {
		return status.New(codeOfErrorName(se.Name), se.Message)
	}
	// Canceled and DeadlineExceeded for context errors, Unknown otherwise.
	return status.FromContextError(err)
}

// codeOfErrorName maps the name of a Goa error back to the gRPC code the
// server sent it with. The design names its errors after their codes
// ("resource_exhausted" is sent as RESOURCE_EXHAUSTED, see the GRPC Response
// DSL in design/design.go), so the canonical code name, lower case, is the
// error name. Goa's validation errors are sent as INVALID_ARGUMENT.
func codeOfErrorName(name string) codes.Code {
	switch name {
	case goa.InvalidFieldType, goa.MissingField, goa.InvalidEnumValue,
		goa.InvalidFormat, goa.InvalidPattern, goa.InvalidRange, goa.InvalidLength,
		goa.DecodePayload, goa.MissingPayload:
		return codes.InvalidArgument
	}
	var c codes.Code
	if err := c.UnmarshalJSON([]byte(strconv.Quote(strings.ToUpper(name)))); err != nil {
		return codes.Unknown
	}
	return c
}

// describe formats a stream's status for stderr the way grpc-go formats
// status errors.
func describe(err error) string {
	st := statusOf(err)
	return fmt.Sprintf("code = %s desc = %s", st.Code(), st.Message())
}

// bearer returns the authorization value for a token. The wire contract is
// "Bearer <JWT>" while the generated client sends the token as given; the
// generated server strips any scheme prefix, so adding it costs nothing and
// lets proxies and non-Goa servers see the standard form.
func bearer(token string) string {
	if strings.Contains(token, " ") {
		return token // already has a scheme
	}
	return "Bearer " + token
}
