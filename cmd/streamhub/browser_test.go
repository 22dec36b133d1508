package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	streamsvcc "github.com/streamhub/streamhub/gen/grpc/stream_service/client"
	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	"github.com/streamhub/streamhub/internal/faultproxy"
	"goa.design/clue/log"
)

// The demo page in a real browser: Debian's chromium, headless, driven by
// chromedp. Without chromium the tests skip.

// browser starts a headless chromium for the test and returns its context;
// each chromedp.NewContext of it is a tab. Without chromium on PATH the test
// skips, or fails with STREAMHUB_REQUIRE_CHROMIUM=1 (CI).
func browser(t *testing.T) context.Context {
	t.Helper()
	path := ""
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		const msg = "chromium is not on PATH; install it to run the browser tests: apt-get install -y chromium"
		if os.Getenv("STREAMHUB_REQUIRE_CHROMIUM") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	profile := t.TempDir()
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1280, 800),
	)...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc() // waits for the browser to exit, before its profile is removed
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// tab is one browser tab showing the demo page.
type tab struct {
	t    *testing.T
	ctx  context.Context
	name string
}

// openPage opens a tab on the page at base, signed in as name in session.
func openPage(t *testing.T, browserCtx context.Context, base, name, session string) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browserCtx)
	t.Cleanup(cancel)
	tb := &tab{t: t, ctx: ctx, name: name}
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/?name="+name+"&session="+session)); err != nil {
		tb.fatalf("opening the page: %v", err)
	}
	tb.waitFor("connected", `document.querySelector('#status').dataset.state === 'connected'`)
	return tb
}

// fatalf fails the test with a screenshot of the tab and what the page
// showed. The screenshot goes to the test's artifact directory: a temporary
// directory, kept with go test -artifacts.
func (tb *tab) fatalf(format string, args ...any) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 5*time.Second)
	defer cancel()
	if png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot()); err == nil {
		file := filepath.Join(tb.t.ArtifactDir(), tb.name+".png")
		if err := os.WriteFile(file, png, 0o644); err == nil {
			tb.t.Logf("screenshot of %s's tab: %s", tb.name, file)
		}
	}
	if text, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('#app').innerText`)); err == nil {
		tb.t.Logf("%s's page:\n%s", tb.name, text)
	}
	tb.t.Fatalf(tb.name+": "+format, args...)
}

// waitFor polls a JavaScript condition until it holds.
func (tb *tab) waitFor(what, cond string) {
	tb.t.Helper()
	deadline := time.Now().Add(2 * waitTimeout)
	for {
		ok, err := chromedp.Run(tb.ctx, chromedp.Evaluate[bool](cond))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			tb.fatalf("timed out waiting for %s (last error %v)", what, err)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronization
	}
}

// say types text into the composer and sends it with Enter.
func (tb *tab) say(text string) {
	tb.t.Helper()
	if err := chromedp.Do(tb.ctx, chromedp.SendKeys(chromedp.ID("composer"), text+"\r")); err != nil {
		tb.fatalf("typing: %v", err)
	}
}

// pageMsg is a message as the page shows it.
type pageMsg struct {
	Seq  uint64 `json:"seq"`
	From string `json:"from"`
	Text string `json:"text"`
}

func (m pageMsg) String() string { return fmt.Sprintf("#%d %s: %s", m.Seq, m.From, m.Text) }

// messages are the delivered messages the page shows for session, in order.
func (tb *tab) messages(session string) []pageMsg {
	tb.t.Helper()
	msgs, err := chromedp.Run(tb.ctx, chromedp.Evaluate[[]pageMsg](fmt.Sprintf(
		`[...document.querySelectorAll('ol.messages[data-session=%q] > li.msg')].map(li => ({seq: +li.dataset.seq, from: li.dataset.from, text: li.querySelector('.text').textContent}))`,
		session)))
	if err != nil {
		tb.fatalf("reading the messages: %v", err)
	}
	return msgs
}

// waitMessages waits until the page shows exactly want for session.
func (tb *tab) waitMessages(session string, want []pageMsg) {
	tb.t.Helper()
	deadline := time.Now().Add(2 * waitTimeout)
	for {
		got := tb.messages(session)
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		if len(got) > len(want) || time.Now().After(deadline) {
			tb.fatalf("messages\n got %v\nwant %v", got, want)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronization
	}
}

// grpcMember is a gRPC client in a session, reading in the background.
type grpcMember struct {
	t       *testing.T
	stream  *streamsvcc.StreamDataClientStream
	session string
}

func joinGRPC(t *testing.T, s *server, id, session string) *grpcMember {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st := openStream(t, ctx, dialPlain(t, s), id)
	join := "join"
	if err := st.Send(&streamsvc.DataMessage{Type: "control", Action: &join, SessionID: &session}); err != nil {
		t.Fatal(err)
	}
	go func() { // deliveries are not this test's business; keep the stream read
		for {
			if _, err := st.Recv(); err != nil {
				return
			}
		}
	}()
	return &grpcMember{t: t, stream: st, session: session}
}

func (g *grpcMember) say(text string) {
	g.t.Helper()
	if err := g.stream.Send(&streamsvc.DataMessage{Type: "data", SessionID: &g.session, Data: []byte(text)}); err != nil {
		g.t.Fatal(err)
	}
}

// TestDemoPage: two tabs and a gRPC client chat in one session; every
// page shows every message once, in seq order. The network drops while a
// message is sent: the pages reconnect and show it, once. The server
// restarts, losing its history: the page says so and carries on.
func TestDemoPage(t *testing.T) {
	b := browser(t)
	srv, stopSrv := startStoppable(t)
	proxy, err := faultproxy.New(srv.httpAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	base := "http://" + proxy.Addr()

	alice := openPage(t, b, base, "alice", "room")
	bea := openPage(t, b, base, "bea", "room")
	bob := joinGRPC(t, srv, "bob", "room")

	alice.say("hello from alice")
	want := []pageMsg{{1, "alice", "hello from alice"}}
	bea.waitMessages("room", want)
	bob.say("hi from gRPC")
	bea.say("hey from bea")
	want = append(want, pageMsg{2, "bob", "hi from gRPC"}, pageMsg{3, "bea", "hey from bea"})
	alice.waitMessages("room", want)
	bea.waitMessages("room", want)

	// The network drops, and stays down while bob talks.
	proxy.Refuse(true)
	proxy.Cut()
	alice.waitFor("reconnecting", `document.querySelector('#status').dataset.state === 'reconnecting'`)
	bea.waitFor("reconnecting", `document.querySelector('#status').dataset.state === 'reconnecting'`)
	bob.say("while you were away")
	bob.say("and another one")
	proxy.Refuse(false)
	want = append(want, pageMsg{4, "bob", "while you were away"}, pageMsg{5, "bob", "and another one"})
	alice.waitMessages("room", want)
	bea.waitMessages("room", want)
	alice.say("back")
	want = append(want, pageMsg{6, "alice", "back"})
	alice.waitMessages("room", want)
	bea.waitMessages("room", want)
	for _, tb := range []*tab{alice, bea} {
		if n, err := chromedp.Run(tb.ctx, chromedp.Evaluate[int](`document.querySelectorAll('.notice.warn').length`)); err != nil || n != 0 {
			tb.fatalf("%d warnings after a recovered drop (%v)", n, err)
		}
	}

	// The server restarts: its history is gone, the page says so, and takes
	// the new history from its start.
	stopSrv()
	srv2, _ := startStoppable(t)
	if err := proxy.Retarget(srv2.httpAddr()); err != nil {
		t.Fatal(err)
	}
	alice.waitFor("the notice", `[...document.querySelectorAll('ol.messages[data-session="room"] .notice.warn')].some(n => n.textContent.includes('could not be recovered'))`)
	alice.waitFor("connected", `document.querySelector('#status').dataset.state === 'connected'`)
	joinGRPC(t, srv2, "carol", "room").say("first after the restart")
	alice.waitMessages("room", append(want, pageMsg{1, "carol", "first after the restart"}))
}

// TestDemoPageScreenshot takes the README's screenshot of the page when
// STREAMHUB_SCREENSHOT names the file to write (make screenshot).
func TestDemoPageScreenshot(t *testing.T) {
	file := os.Getenv("STREAMHUB_SCREENSHOT")
	if file == "" {
		t.Skip("STREAMHUB_SCREENSHOT not set: make screenshot writes docs/demo-page.png")
	}
	b := browser(t)
	s := startMain(t)
	alice := openPage(t, b, "http://"+s.httpAddr(), "alice", "lobby")
	if err := chromedp.Do(alice.ctx, chromedp.EmulateViewport(1280, 720)); err != nil {
		alice.fatalf("viewport: %v", err)
	}
	bob := joinGRPC(t, s, "bob", "lobby")
	carol := joinGRPC(t, s, "carol", "lobby")
	shown := 0
	next := func(say func(string), text string) { // one at a time, so the conversation reads in order
		t.Helper()
		say(text)
		shown++
		alice.waitFor("the message", fmt.Sprintf(`document.querySelectorAll('ol.messages[data-session="lobby"] > li.msg').length === %d`, shown))
	}
	next(bob.say, "Morning! The v2.3 rollout starts at 10:00.")
	next(carol.say, "Thanks. I'm watching the dashboards from the gRPC side.")
	next(alice.say, "Browser here, following along.")
	next(bob.say, "Canary is at 10%, error rate flat.")
	next(carol.say, "Latency p99 unchanged. Going to 50%.")
	if err := chromedp.Do(alice.ctx, chromedp.SendKeys(chromedp.ID("join-input"), "deploys\r")); err != nil {
		alice.fatalf("joining: %v", err)
	}
	alice.waitFor("deploys joined", `window.streamhub.sessions.get('deploys').epoch !== null`)
	if err := chromedp.Do(alice.ctx, chromedp.Click(chromedp.CSS(`#sessions li[data-session="lobby"] .name`))); err != nil {
		alice.fatalf("back to the lobby: %v", err)
	}
	joinGRPC(t, s, "dave", "deploys").say("Rollout paused for the lunch window.")
	alice.waitFor("an unread count", `document.querySelector('#sessions li[data-session="deploys"] .count:not([hidden])') !== null`)
	if err := chromedp.Do(alice.ctx, chromedp.SendKeys(chromedp.ID("composer"), "Sounds good")); err != nil {
		alice.fatalf("typing: %v", err)
	}
	png, err := chromedp.Run(alice.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		alice.fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(file, png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// startStoppable runs a server as main does; stop drains it and waits.
func startStoppable(t *testing.T) (*server, func()) {
	t.Helper()
	o := testOptions(t, "--drain-timeout", "2s")
	ctx, cancel := context.WithCancel(log.Context(context.Background(), log.WithOutput(io.Discard)))
	s, err := newServer(ctx, o)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.serve(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-served; err != nil {
				t.Errorf("serve: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return s, stop
}
