package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/streamhub/streamhub/client"
	"github.com/streamhub/streamhub/engine"
	streampb "github.com/streamhub/streamhub/gen/grpc/stream_service/pb"
	streamsvr "github.com/streamhub/streamhub/gen/grpc/stream_service/server"
	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	"github.com/streamhub/streamhub/internal/faultproxy"
	"github.com/streamhub/streamhub/internal/redistest"
	"github.com/streamhub/streamhub/internal/testpki"
	"github.com/streamhub/streamhub/streaming"
	"google.golang.org/grpc"
)

// hub is a StreamHub server that can be killed and started again on the
// same address, as a crashed and restarted server would be.
type hub struct {
	t     *testing.T
	cfg   streaming.Config
	addr  string
	redis *redistest.Server // nil: the memory engine

	mu     sync.Mutex // guards the fields below
	svc    *streaming.Service
	eng    engine.Engine // nil: the memory engine
	gs     *grpc.Server
	served chan struct{}
}

// startHub serves StreamHub on a loopback port until the test ends.
func startHub(t *testing.T) *hub {
	t.Helper()
	return startHubWith(t, streaming.Config{})
}

// startHubWith is startHub with a configuration.
func startHubWith(t *testing.T, cfg streaming.Config) *hub {
	t.Helper()
	h := &hub{t: t, cfg: cfg, addr: "127.0.0.1:0"}
	h.start()
	t.Cleanup(h.kill)
	return h
}

// service returns the service being served.
func (h *hub) service() *streaming.Service {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.svc
}

// url is the CLI's -url for the hub.
func (h *hub) url() string { return "grpc://" + h.addr }

// start serves a fresh service, on the port of the last one if any,
// polling until the old listener has let go of it.
func (h *hub) start() {
	h.t.Helper()
	deadline := time.Now().Add(e2eTimeout)
	var lis net.Listener
	for {
		var err error
		if lis, err = net.Listen("tcp", h.addr); err == nil {
			break
		}
		if !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			h.t.Fatalf("listen on %s: %v", h.addr, err)
		}
		time.Sleep(10 * time.Millisecond) // polling for the port
	}
	var opts []streaming.Option
	var eng engine.Engine
	if h.redis != nil {
		// A new instance, as a restarted process is.
		instance := fmt.Sprintf("hub-%d", time.Now().UnixNano())
		var relay *engine.Relay
		eng, relay = h.redis.Engine(streaming.EngineBounds(h.cfg), instance)
		opts = append(opts, streaming.WithEngine(eng, instance))
		defer func() { relay.Set(h.svc) }()
	}
	svc := streaming.New(h.cfg, opts...)
	gs := grpc.NewServer()
	streampb.RegisterStreamServiceServer(gs, streamsvr.New(streamsvc.NewEndpoints(svc), nil))
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = gs.Serve(lis)
	}()
	h.mu.Lock()
	h.addr, h.svc, h.eng, h.gs, h.served = lis.Addr().String(), svc, eng, gs, served
	h.mu.Unlock()
}

// kill stops the server without a goodbye; its history is gone.
func (h *hub) kill() {
	h.mu.Lock()
	svc, eng, gs, served := h.svc, h.eng, h.gs, h.served
	h.svc, h.eng, h.gs, h.served = nil, nil, nil, nil
	h.mu.Unlock()
	if gs == nil {
		return
	}
	if eng != nil {
		_ = eng.Close() // first: a crash says nothing more to Redis
	}
	gs.Stop()
	<-served
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = svc.Shutdown(ctx)
}

// dialClient connects a client-package client that reads and drops its
// events, closed when the test ends.
func dialClient(t *testing.T, addr, id string) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), e2eTimeout)
	defer cancel()
	c, err := client.Dial(ctx, addr, client.WithClientID(id), client.WithBackoff(10*time.Millisecond, 100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for range c.Events() {
		}
	}()
	t.Cleanup(func() {
		c.Close()
		<-drained
	})
	return c
}

// publish publishes one message per ID, each waiting for its delivery.
func publish(t *testing.T, c *client.Client, session string, ids ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), e2eTimeout)
	defer cancel()
	for _, id := range ids {
		if _, err := c.Publish(ctx, session, id, []byte(id)); err != nil {
			t.Fatalf("Publish %s: %v", id, err)
		}
	}
}

func msgIDs(prefix string, from, to int) []string {
	var ids []string
	for i := from; i < to; i++ {
		ids = append(ids, fmt.Sprintf("%s-%d", prefix, i))
	}
	return ids
}

// checkDataOnce checks that the data lines of session are the IDs want,
// each once, in that order, with seqs rising within each epoch.
func checkDataOnce(t *testing.T, msgs []jsonMessage, session string, want []string) {
	t.Helper()
	var got []string
	last := map[string]uint64{}
	for _, m := range msgs {
		if m.Type != "data" || deref(m.SessionID) != session {
			continue
		}
		epoch, seq := deref(m.Epoch), *m.Seq
		if seq <= last[epoch] {
			t.Errorf("seq %d (epoch %s) after %d", seq, epoch, last[epoch])
		}
		last[epoch] = seq
		got = append(got, deref(m.ID))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("data IDs:\n got %v\nwant %v", got, want)
	}
}

// TestE2EReconnectScripted subscribes with -reconnect in JSON-lines mode
// while the server is killed and restarted on the same address: the
// output has each of 100 messages once, in seq order, and the joined line
// after the restart says what was lost (a new epoch).
func TestE2EReconnectScripted(t *testing.T) {
	h := startHub(t)
	in, w := stdinPipe(t)
	sub := startCLI(t, in, "-reconnect", "-url", h.url(), "stream-service", "stream-data", "--client-id", "sub")
	writeLine(t, w, joinLobby)
	sub.waitOutput(t, "the joined", isControl("joined", "lobby"))
	pub := dialClient(t, h.addr, "pub")

	publish(t, pub, "lobby", msgIDs("m", 0, 50)...)
	sub.waitOutput(t, "m-49", func(m jsonMessage) bool { return deref(m.ID) == "m-49" })
	h.kill()
	h.start()
	publish(t, pub, "lobby", msgIDs("m", 50, 100)...)
	sub.waitOutput(t, "m-99", func(m jsonMessage) bool { return deref(m.ID) == "m-99" })

	w.Close()
	if code := sub.wait(t, "the subscriber"); code != exitOK {
		t.Fatalf("exit status %d; stderr:\n%s", code, sub.stderr.String())
	}
	msgs := parseOutput(t, sub.stdout.String())
	checkDataOnce(t, msgs, "lobby", msgIDs("m", 0, 100))
	var welcomes, joined, lost int
	for _, m := range msgs {
		switch {
		case isControl("welcome", "")(m):
			welcomes++
		case isControl("joined", "lobby")(m):
			joined++
			if m.Recovered != nil && !*m.Recovered {
				lost++
			}
		}
	}
	if welcomes != 2 || joined != 2 || lost != 1 {
		t.Errorf("%d welcomes, %d joined (%d not recovered); want 2, 2 (1):\n%s", welcomes, joined, lost, sub.stdout.String())
	}
	for _, want := range []string{"reconnecting: code = Unavailable", "reconnected"} {
		if !strings.Contains(sub.stderr.String(), want) {
			t.Errorf("stderr does not say %q:\n%s", want, sub.stderr.String())
		}
	}
}

// TestE2EReconnectRedis is TestE2EReconnectScripted on the Redis engine:
// the instance is killed and another started on the same address, and
// the subscriber goes on where it was, nothing lost and nothing twice.
func TestE2EReconnectRedis(t *testing.T) {
	h := &hub{t: t, addr: "127.0.0.1:0", redis: redistest.Start(t)}
	h.start()
	t.Cleanup(h.kill)
	in, w := stdinPipe(t)
	sub := startCLI(t, in, "-reconnect", "-url", h.url(), "stream-service", "stream-data", "--client-id", "sub")
	writeLine(t, w, joinLobby)
	sub.waitOutput(t, "the joined", isControl("joined", "lobby"))
	pub := dialClient(t, h.addr, "pub")

	publish(t, pub, "lobby", msgIDs("m", 0, 50)...)
	sub.waitOutput(t, "m-49", func(m jsonMessage) bool { return deref(m.ID) == "m-49" })
	h.kill()
	h.start()
	publish(t, pub, "lobby", msgIDs("m", 50, 100)...)
	sub.waitOutput(t, "m-99", func(m jsonMessage) bool { return deref(m.ID) == "m-99" })

	w.Close()
	if code := sub.wait(t, "the subscriber"); code != exitOK {
		t.Fatalf("exit status %d; stderr:\n%s", code, sub.stderr.String())
	}
	msgs := parseOutput(t, sub.stdout.String())
	checkDataOnce(t, msgs, "lobby", msgIDs("m", 0, 100))
	epochs := map[string]bool{}
	for _, m := range msgs {
		if isControl("joined", "lobby")(m) && m.Recovered != nil && !*m.Recovered {
			t.Errorf("a joined says recovered: false, though Redis kept the history:\n%s", sub.stdout.String())
		}
		if m.Type == "data" {
			epochs[deref(m.Epoch)] = true
		}
	}
	if len(epochs) != 1 {
		t.Errorf("deliveries in %d epochs, want one:\n%s", len(epochs), sub.stdout.String())
	}
}

// TestE2EReconnectSessionRecreated subscribes with -reconnect in
// JSON-lines mode through a proxy that then cuts it off. Meanwhile the
// session is removed with its history and the subscriber's retained
// membership (the server keeps one session at a time: another evicts it),
// and started again with fewer messages than the subscriber had printed.
// The output must have the new epoch's messages from seq 1, once each
// (dedup by seq is per epoch), after a joined line that says
// recovered: false with the new epoch.
func TestE2EReconnectSessionRecreated(t *testing.T) {
	h := startHubWith(t, streaming.Config{MaxSessions: 1})
	p, err := faultproxy.New(h.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	in, w := stdinPipe(t)
	sub := startCLI(t, in, "-reconnect", "-url", "grpc://"+p.Addr(), "stream-service", "stream-data", "--client-id", "sub")
	writeLine(t, w, joinLobby)
	first := sub.waitOutput(t, "the joined", isControl("joined", "lobby"))
	pub := dialClient(t, h.addr, "pub")
	publish(t, pub, "lobby", msgIDs("old", 0, 5)...)
	sub.waitOutput(t, "old-4", func(m jsonMessage) bool { return deref(m.ID) == "old-4" })

	ctx, cancel := context.WithTimeout(context.Background(), e2eTimeout)
	defer cancel()
	if err := pub.Leave(ctx, "lobby"); err != nil {
		t.Fatal(err)
	}
	svc := h.service()
	connections := svc.Connections()
	p.Refuse(true)
	p.Cut()
	pollUntil(t, "the server saw the subscriber go", func() bool { return svc.Connections() < connections })
	if _, err := pub.Join(ctx, "evictor"); err != nil { // evicts lobby: it has no live member
		t.Fatal(err)
	}
	if err := pub.Leave(ctx, "evictor"); err != nil { // removes evictor: it has no history
		t.Fatal(err)
	}
	pollUntil(t, "no session left", func() bool { return svc.Sessions() == 0 })
	publish(t, pub, "lobby", msgIDs("new", 0, 3)...)
	p.Refuse(false)
	sub.waitOutput(t, "new-2", func(m jsonMessage) bool { return deref(m.ID) == "new-2" })

	w.Close()
	if code := sub.wait(t, "the subscriber"); code != exitOK {
		t.Fatalf("exit status %d; stderr:\n%s", code, sub.stderr.String())
	}
	msgs := parseOutput(t, sub.stdout.String())
	checkDataOnce(t, msgs, "lobby", append(msgIDs("old", 0, 5), msgIDs("new", 0, 3)...))
	var joined []jsonMessage
	for _, m := range msgs {
		if isControl("joined", "lobby")(m) {
			joined = append(joined, m)
		}
	}
	if len(joined) != 2 || joined[1].Recovered == nil || *joined[1].Recovered ||
		deref(joined[1].Epoch) == "" || deref(joined[1].Epoch) == deref(first.Epoch) {
		t.Fatalf("joined lines %+v; want the join, then recovered: false in a new epoch:\n%s", joined, sub.stdout.String())
	}
	type position struct {
		seq   uint64
		epoch string
	}
	want := map[string]position{}
	for i, id := range msgIDs("old", 0, 5) {
		want[id] = position{uint64(i + 1), deref(first.Epoch)}
	}
	for i, id := range msgIDs("new", 0, 3) {
		want[id] = position{uint64(i + 1), deref(joined[1].Epoch)}
	}
	for _, m := range msgs {
		if m.Type != "data" {
			continue
		}
		got := position{derefSeq(m.Seq), deref(m.Epoch)}
		if w := want[deref(m.ID)]; got != w {
			t.Errorf("%s: seq %d of epoch %s, want seq %d of %s", deref(m.ID), got.seq, got.epoch, w.seq, w.epoch)
		}
	}
}

// pollUntil polls cond until it holds, failing the test at the deadline.
func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(e2eTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond) // polling
	}
}

// TestE2EReconnectText checks text mode with -reconnect: readable lines
// for the welcome and joins, "reconnecting…" and "reconnected" lines
// instead of an exit, and typed lines published after the restart.
func TestE2EReconnectText(t *testing.T) {
	h := startHub(t)
	in, w := stdinPipe(t)
	carol := startCLI(t, in, "-reconnect", "-session", "lobby", "-url", h.url(), "stream-service", "stream-data", "--client-id", "carol")
	pub := dialClient(t, h.addr, "pub")
	waitText(t, carol, "joined lobby at seq 0\n")
	publish(t, pub, "lobby", "before")
	waitText(t, carol, "[lobby] pub: before\n")

	h.kill()
	waitText(t, carol, "reconnecting… (code = Unavailable")
	h.start()
	waitText(t, carol, "reconnected as carol\n")
	waitText(t, carol, "rejoined lobby at seq 0, but messages were lost (recovered: false)\n")
	writeLine(t, w, "hello again")
	waitText(t, carol, "[lobby] carol: hello again\n")
	publish(t, pub, "lobby", "after")
	waitText(t, carol, "[lobby] pub: after\n")

	w.Close()
	if code := carol.wait(t, "carol"); code != exitOK {
		t.Fatalf("exit status %d; stderr:\n%s", code, carol.stderr.String())
	}
	out := carol.stdout.String()
	if !strings.HasPrefix(out, "connected as carol\n") || strings.Count(out, "[lobby] pub: before") != 1 || strings.Contains(out, "{") {
		t.Errorf("stdout:\n%s", out)
	}
	if s := carol.stderr.String(); s != "" {
		t.Errorf("stderr = %q, want nothing", s)
	}
}

// waitText polls a text-mode CLI's stdout for want.
func waitText(t *testing.T, c *cliRun, want string) {
	t.Helper()
	deadline := time.Now().Add(e2eTimeout)
	for !strings.Contains(c.stdout.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %q; stdout:\n%s\nstderr:\n%s", want, c.stdout.String(), c.stderr.String())
		}
		time.Sleep(5 * time.Millisecond) // polling
	}
}

// TestE2EReconnectPublisher publishes from a script with -reconnect
// across a restart: every line is delivered once, and end of input waits
// for the deliveries before exiting 0.
func TestE2EReconnectPublisher(t *testing.T) {
	h := startHub(t)
	in, w := stdinPipe(t)
	cli := startCLI(t, in, "-reconnect", "-url", h.url(), "stream-service", "stream-data", "--client-id", "scripter")
	cli.waitOutput(t, "the welcome", isControl("welcome", ""))
	line := func(id string) string {
		return fmt.Sprintf(`{"type":"data","session_id":"lobby","id":%q,"data":"aGk="}`, id)
	}
	for _, id := range msgIDs("p", 0, 10) {
		writeLine(t, w, line(id))
	}
	cli.waitOutput(t, "p-9", func(m jsonMessage) bool { return deref(m.ID) == "p-9" })
	h.kill()
	for _, id := range msgIDs("p", 10, 20) {
		writeLine(t, w, line(id)) // sent once the server is back
	}
	h.start()
	w.Close()
	if code := cli.wait(t, "the publisher"); code != exitOK {
		t.Fatalf("exit status %d; stderr:\n%s", code, cli.stderr.String())
	}
	checkDataOnce(t, parseOutput(t, cli.stdout.String()), "lobby", msgIDs("p", 0, 20))
}

// TestE2EReconnectReplaced checks that a stream replaced by another with
// the same client ID ends the CLI, status 1, instead of a fight for the ID.
func TestE2EReconnectReplaced(t *testing.T) {
	h := startHub(t)
	in, _ := stdinPipe(t)
	cli := startCLI(t, in, "-reconnect", "-url", h.url(), "stream-service", "stream-data", "--client-id", "twin")
	cli.waitOutput(t, "the welcome", isControl("welcome", ""))
	dialClient(t, h.addr, "twin")
	if code := cli.wait(t, "the replaced CLI"); code != exitStream {
		t.Fatalf("exit status %d, want %d", code, exitStream)
	}
	if s := cli.stderr.String(); !strings.Contains(s, "replaced") {
		t.Errorf("stderr does not say replaced:\n%s", s)
	}
}

// TestE2EReconnectTLS checks that -reconnect connects with the TLS flags:
// mutual TLS works, and a server it cannot verify is reported once the
// -timeout for the first connection runs out.
func TestE2EReconnectTLS(t *testing.T) {
	pki := testpki.New(t)
	addr := startTLSStreamHub(t, pki, true)
	in := strings.NewReader(publishHiM1 + "\n")
	ok := startCLI(t, in, "-reconnect", "-url", "grpcs://"+addr, "-tls-ca", pki.CAFile,
		"-tls-cert", pki.ClientCertFile, "-tls-key", pki.ClientKeyFile, "stream-service", "stream-data", "--client-id", "secure")
	if code := ok.wait(t, "the TLS client"); code != exitOK {
		t.Fatalf("exit status %d; stderr:\n%s", code, ok.stderr.String())
	}
	checkDataOnce(t, parseOutput(t, ok.stdout.String()), "lobby", []string{"m1"})

	bad := startCLI(t, strings.NewReader(""), "-reconnect", "-timeout", "500ms", "-url", "grpc://"+addr, "-tls",
		"stream-service", "stream-data")
	if code := bad.wait(t, "the unverified client"); code != exitStream {
		t.Fatalf("exit status %d, want %d", code, exitStream)
	}
	if s := bad.stderr.String(); !strings.Contains(s, "certificate signed by unknown authority") {
		t.Errorf("stderr does not say why:\n%s", s)
	}
}
