package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	streampb "github.com/streamhub/streamhub/gen/grpc/stream_service/pb"
	"google.golang.org/grpc"
)

// Message types and actions the bench speaks (SPEC §2).
const (
	typeData        = "data"
	typeHeartbeat   = "heartbeat"
	typeControl     = "control"
	typeHealthCheck = "health_check"
	actJoin         = "join"
	actJoined       = "joined"
	actWelcome      = "welcome"
)

// baseline is what StreamHub is compared with: the generated protobuf
// service implemented directly on grpc-go, with none of StreamHub's layers
// (no Goa endpoint or validation, no queues, history, limits or metrics).
//
// A data message is echoed back on its own stream, unless its sender joined
// the session: then it is sent to every member of the session in a plain
// loop, from the sender's handler. A join is answered with joined, a
// health_check with a health_check, and every stream that was sent nothing
// during a heartbeat interval is sent a heartbeat, so that idle streams cost
// what they cost in StreamHub: a handler and a peer that talks.
type baseline struct {
	streampb.UnimplementedStreamServiceServer

	heartbeat time.Duration // 0: no heartbeats
	stop      chan struct{} // closed by close to end the heartbeat loop
	done      chan struct{} // closed when the heartbeat loop ended

	mu       sync.RWMutex // guards sessions and streams
	sessions map[string]*bsession
	streams  map[*bstream]struct{}
}

// bstream is one stream of the baseline.
type bstream struct {
	ss streampb.StreamService_StreamDataServer

	mu   sync.Mutex // serializes Send: echoes, broadcasts and heartbeats all send
	sent bool       // something was sent since the last heartbeat tick

	joined map[string]*bsession // owned by the stream's handler
}

// bsession is a baseline session: just its members.
type bsession struct {
	mu      sync.RWMutex // guards members
	members []*bstream
}

func newBaseline(heartbeat time.Duration) *baseline {
	b := &baseline{
		heartbeat: heartbeat,
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
		sessions:  make(map[string]*bsession),
		streams:   make(map[*bstream]struct{}),
	}
	go b.heartbeats()
	return b
}

// close ends the heartbeat loop and waits for it.
func (b *baseline) close() {
	close(b.stop)
	<-b.done
}

func (s *bstream) send(m *streampb.StreamDataResponse) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent = true
	return s.ss.Send(m)
}

// StreamData serves one stream.
func (b *baseline) StreamData(ss streampb.StreamService_StreamDataServer) error {
	s := &bstream{ss: ss}
	b.mu.Lock()
	b.streams[s] = struct{}{}
	b.mu.Unlock()
	defer b.forget(s)

	welcome := actWelcome
	if err := s.send(&streampb.StreamDataResponse{Type: typeControl, Action: &welcome}); err != nil {
		return err
	}
	for {
		req, err := ss.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := b.handle(s, req); err != nil {
			return err
		}
	}
}

func (b *baseline) handle(s *bstream, req *streampb.StreamDataStreamingRequest) error {
	switch req.Type {
	case typeData:
		resp := &streampb.StreamDataResponse{Type: typeData, SessionId: req.SessionId, Data: req.Data, Id: req.Id, Timestamp: req.Timestamp}
		sess := s.joined[req.GetSessionId()]
		if sess == nil {
			return s.send(resp)
		}
		sess.mu.RLock()
		defer sess.mu.RUnlock()
		for _, m := range sess.members {
			_ = m.send(resp) // a member that is gone is its own handler's business
		}
	case typeControl:
		if req.GetAction() != actJoin || req.SessionId == nil || s.joined[*req.SessionId] != nil {
			return nil
		}
		name := *req.SessionId
		b.mu.Lock()
		sess := b.sessions[name]
		if sess == nil {
			sess = &bsession{}
			b.sessions[name] = sess
		}
		b.mu.Unlock()
		sess.mu.Lock()
		sess.members = append(sess.members, s)
		sess.mu.Unlock()
		if s.joined == nil {
			s.joined = make(map[string]*bsession)
		}
		s.joined[name] = sess
		joined := actJoined
		return s.send(&streampb.StreamDataResponse{Type: typeControl, Action: &joined, SessionId: req.SessionId})
	case typeHealthCheck:
		ts := time.Now().UnixMilli()
		return s.send(&streampb.StreamDataResponse{Type: typeHealthCheck, Timestamp: &ts})
	}
	return nil
}

// forget removes an ended stream from its sessions and the heartbeat loop.
func (b *baseline) forget(s *bstream) {
	for _, sess := range s.joined {
		sess.mu.Lock()
		for i, m := range sess.members {
			if m == s {
				sess.members = append(sess.members[:i], sess.members[i+1:]...)
				break
			}
		}
		sess.mu.Unlock()
	}
	b.mu.Lock()
	delete(b.streams, s)
	b.mu.Unlock()
}

// heartbeats sends a heartbeat, every interval, to each stream that was sent
// nothing since the previous tick.
func (b *baseline) heartbeats() {
	defer close(b.done)
	if b.heartbeat <= 0 {
		<-b.stop
		return
	}
	tick := time.NewTicker(b.heartbeat)
	defer tick.Stop()
	var all []*bstream
	for {
		select {
		case <-b.stop:
			return
		case <-tick.C:
		}
		b.mu.RLock()
		for s := range b.streams {
			all = append(all, s)
		}
		b.mu.RUnlock()
		for _, s := range all {
			s.mu.Lock()
			if !s.sent {
				ts := time.Now().UnixMilli()
				_ = s.ss.Send(&streampb.StreamDataResponse{Type: typeHeartbeat, Timestamp: &ts})
			}
			s.sent = false
			s.mu.Unlock()
		}
		clear(all)
		all = all[:0]
	}
}

// adminMux serves the pprof endpoints the bench reads a server's memory and
// profiles from, as StreamHub's admin server does.
func adminMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	for _, p := range []string{"heap", "allocs", "goroutine", "mutex", "block"} {
		mux.Handle("/debug/pprof/"+p, pprof.Handler(p))
	}
	return mux
}

// baselineServer is a baseline behind a gRPC server and an admin server.
type baselineServer struct {
	b     *baseline
	grpc  *grpc.Server
	admin *http.Server
	grpcL net.Listener
	admL  net.Listener
	wg    sync.WaitGroup
}

// startBaseline serves a baseline on the two listeners until shutdown. By
// default its gRPC server has grpc-go's default options: that is the point
// of it; opts are there to try what an option would buy StreamHub.
func startBaseline(grpcL, adminL net.Listener, heartbeat time.Duration, opts ...grpc.ServerOption) *baselineServer {
	s := &baselineServer{
		b:     newBaseline(heartbeat),
		grpc:  grpc.NewServer(opts...),
		admin: &http.Server{Handler: adminMux(), ReadHeaderTimeout: 10 * time.Second},
		grpcL: grpcL,
		admL:  adminL,
	}
	streampb.RegisterStreamServiceServer(s.grpc, s.b)
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		_ = s.grpc.Serve(grpcL) // returns when stopped
	}()
	go func() {
		defer s.wg.Done()
		_ = s.admin.Serve(adminL) // returns when closed
	}()
	return s
}

// shutdown ends every stream and stops both servers.
func (s *baselineServer) shutdown() {
	s.grpc.Stop()
	_ = s.admin.Close()
	s.wg.Wait()
	s.b.close()
}

// servingLine is what a server prints once it listens; StreamHub's JSON log
// line has the same fields.
type servingLine struct {
	Msg   string `json:"msg"`
	GRPC  string `json:"grpc"`
	Admin string `json:"admin"`
}

// serveBaselineMain is the hidden -serve-baseline mode: the bench starts
// itself as the baseline's process, so that the baseline is measured as a
// process of its own, like StreamHub.
func serveBaselineMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("streamhub-bench -serve-baseline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	grpcAddr := fs.String("grpc-addr", "127.0.0.1:0", "gRPC listen address")
	adminAddr := fs.String("admin-addr", "127.0.0.1:0", "admin (pprof) listen address")
	heartbeat := fs.Duration("heartbeat-interval", 20*time.Second, "heartbeat to streams sent nothing for this long; 0 disables")
	writeBuf := fs.Int("write-buffer-size", -1, "grpc.WriteBufferSize; -1 leaves grpc-go's default")
	readBuf := fs.Int("read-buffer-size", -1, "grpc.ReadBufferSize; -1 leaves grpc-go's default")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var opts []grpc.ServerOption
	if *writeBuf >= 0 {
		opts = append(opts, grpc.WriteBufferSize(*writeBuf))
	}
	if *readBuf >= 0 {
		opts = append(opts, grpc.ReadBufferSize(*readBuf))
	}
	grpcL, err := net.Listen("tcp", *grpcAddr)
	if err != nil {
		fmt.Fprintln(stderr, "baseline:", err)
		return 1
	}
	adminL, err := net.Listen("tcp", *adminAddr)
	if err != nil {
		grpcL.Close()
		fmt.Fprintln(stderr, "baseline:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s := startBaseline(grpcL, adminL, *heartbeat, opts...)
	line, _ := json.Marshal(servingLine{Msg: "serving", GRPC: grpcL.Addr().String(), Admin: adminL.Addr().String()})
	fmt.Fprintf(stdout, "%s\n", line)
	<-ctx.Done()
	s.shutdown()
	return 0
}
