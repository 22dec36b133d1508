package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// runtimeOverhead is what the server process may hold beyond its memory
// budget: the runtime and its garbage between collections, gRPC's
// buffers, and the messages on their way in and out. The soft memory
// limit (a quarter more than the budget, plus 64 MiB) is what keeps it
// there. Measured on a 2-core machine with a 256 MiB budget: a peak of
// 383–384 MiB resident, 534 MiB without the soft limit.
const runtimeOverhead = 160 << 20

// A hog publishing far more than the budget into many sessions keeps the
// server's resident memory within the budget plus the runtime's overhead,
// and a quiet session's history survives it.
func TestHogStaysWithinTheBudgetInAProcess(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	const budget, size, sessions, total = 256 << 20, 1 << 20, 60, 1536 // 1.5 GiB
	bin := filepath.Join(t.TempDir(), "streamhub")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := exec.CommandContext(ctx, bin, "--grpc-addr", "127.0.0.1:0", "--admin-addr", "", "--log-format", "json",
		"--rate-limit", "0", "--memory-budget", fmt.Sprint(budget), "--metrics-log-interval", "0")
	srv.Env = slicesWithout(os.Environ(), "GOMEMLIMIT=", "AUTOMEMLIMIT=") // the server sets its own
	stdout, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		_ = srv.Wait()
	}()
	addr := serving(t, stdout)

	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(8<<20), grpc.MaxCallSendMsgSize(8<<20)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	quiet := openStream(t, ctx, cc, "quiet")
	for i := range 100 {
		publishAndEcho(t, quiet, "quiet", []byte(fmt.Sprint("quiet ", i)))
	}
	// The hog is a paused member of its sessions, so that it need not
	// read back what it sends (which would cost this test more than the
	// server).
	hog := openStream(t, ctx, cc, "hog")
	for i := range sessions {
		for _, action := range []string{"join", "pause"} {
			session := fmt.Sprint("hog", i)
			if err := hog.Send(&streamsvc.DataMessage{Type: "control", Action: &action, SessionID: &session}); err != nil {
				t.Fatal(err)
			}
		}
	}
	payload := make([]byte, size)
	var peak int64
	for i := range total {
		session := fmt.Sprint("hog", i%sessions)
		if err := hog.Send(&streamsvc.DataMessage{Type: "data", SessionID: &session, Data: payload}); err != nil {
			t.Fatal(err)
		}
		if i%64 == 0 {
			peak = max(peak, rss(t, srv.Process.Pid, "VmRSS"))
		}
	}
	if err := hog.Send(&streamsvc.DataMessage{Type: "health_check"}); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := hog.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if m.Action != nil && *m.Action == "error" {
			t.Fatalf("hog refused: %s", *m.Reason)
		}
		if m.Type == "health_check" {
			break // everything before it was served
		}
	}
	peak = max(peak, rss(t, srv.Process.Pid, "VmHWM"))
	t.Logf("budget %d MiB, peak resident %d MiB", budget>>20, peak>>20)
	if peak > budget+runtimeOverhead {
		t.Errorf("peak resident memory %d MiB, over the budget of %d MiB plus %d MiB", peak>>20, budget>>20, runtimeOverhead>>20)
	}

	reader := openStream(t, ctx, cc, "reader")
	join, room, zero := "join", "quiet", uint64(0)
	if err := reader.Send(&streamsvc.DataMessage{Type: "control", Action: &join, SessionID: &room, Seq: &zero}); err != nil {
		t.Fatal(err)
	}
	for seen := 0; seen < 100; {
		m, err := reader.Recv()
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case m.Action != nil && *m.Action == "joined":
			if !*m.Recovered {
				t.Fatal("the quiet session's history was evicted")
			}
		case m.Type == "data":
			if *m.Seq != uint64(seen+1) {
				t.Fatalf("quiet replay: seq %d, want %d", *m.Seq, seen+1)
			}
			seen++
		}
	}
}

// serving reads the server's JSON log until it says where it serves.
func serving(t *testing.T, stdout interface{ Read([]byte) (int, error) }) string {
	t.Helper()
	grpcAddr, _ := servingLine(t, stdout)["grpc"].(string)
	return grpcAddr
}

// servingLine reads the server's JSON log until its serving line, and
// returns that line's fields.
func servingLine(t *testing.T, stdout interface{ Read([]byte) (int, error) }) map[string]any {
	t.Helper()
	lines := bufio.NewScanner(stdout)
	for lines.Scan() {
		var line map[string]any
		if json.Unmarshal(lines.Bytes(), &line) == nil && line["msg"] == "serving" {
			go func() { // keep the pipe drained
				for lines.Scan() {
				}
			}()
			return line
		}
	}
	t.Fatal("the server exited before serving")
	return nil
}

// publishAndEcho publishes data to session and waits for its delivery.
func publishAndEcho(t *testing.T, s streamsvc.StreamDataClientStream, session string, data []byte) {
	t.Helper()
	if err := s.Send(&streamsvc.DataMessage{Type: "data", SessionID: &session, Data: data}); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case m.Type == "data":
			return
		case m.Action != nil && *m.Action == "error":
			t.Fatalf("publish refused: %s", *m.Reason)
		}
	}
}

// rss reads a memory figure of process pid, in bytes.
func rss(t *testing.T, pid int, field string) int64 {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(status)) {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// slicesWithout returns env without the variables named by the prefixes.
func slicesWithout(env []string, prefixes ...string) []string {
	out := env[:0]
	for _, kv := range env {
		keep := true
		for _, p := range prefixes {
			if strings.HasPrefix(kv, p) {
				keep = false
			}
		}
		if keep {
			out = append(out, kv)
		}
	}
	return out
}
