package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseRSS(t *testing.T) {
	status := "Name:\tstreamhub\nVmPeak:\t  999 kB\nVmRSS:\t   20480 kB\nRssAnon:\t 100 kB\n"
	got, err := parseRSS(status)
	if err != nil || got != 20480<<10 {
		t.Fatalf("parseRSS = %d, %v; want %d", got, err, 20480<<10)
	}
	for _, bad := range []string{"Name: x\n", "VmRSS: lots kB\n", "VmRSS: 12 MB\n"} {
		if _, err := parseRSS(bad); err == nil {
			t.Errorf("parseRSS(%q) did not fail", bad)
		}
	}
}

func TestParseStatCPU(t *testing.T) {
	// The command name may hold spaces and parentheses.
	stat := "4242 (stream hub) (x)) S 1 4242 4242 0 -1 4194560 2315 0 0 0 250 120 0 0 20 0 9 0 12345 1337 42 18446744073709551615\n"
	got, err := parseStatCPU(stat)
	if err != nil || got != 3700*time.Millisecond {
		t.Fatalf("parseStatCPU = %v, %v; want 3.7s (250+120 ticks)", got, err)
	}
	if _, err := parseStatCPU("4242 (x) S 1 2"); err == nil {
		t.Fatal("a short stat line parsed")
	}
	if cpu, err := processCPU(os.Getpid()); err != nil || cpu < 0 {
		t.Fatalf("processCPU(self) = %v, %v", cpu, err)
	}
}

func TestParseMemStats(t *testing.T) {
	profile := "heap profile: 1: 2 [3: 4] @ heap/1048576\n" +
		"#\t0x4a8004\tinternal/sync.newEntryNode+0x304\t/usr/local/go/src/internal/sync/hashtriemap.go:572\n" +
		"\n# runtime.MemStats\n# Alloc = 1155368\n# HeapAlloc = 1155368\n# HeapInuse = 2269184\n" +
		"# Stack = 557056 / 786432\n# PauseNs = [0 0 0]\n# GCCPUFraction = 0.5\n"
	stats := parseMemStats(profile)
	for name, want := range map[string]uint64{
		"HeapAlloc": 1155368, "HeapInuse": 2269184, "StackInuse": 557056, "StackSys": 786432,
	} {
		if got, ok := stats[name]; !ok || got != want {
			t.Errorf("%s = %d (present %v), want %d", name, got, ok, want)
		}
	}
	for _, absent := range []string{"PauseNs", "GCCPUFraction", "runtime.MemStats"} {
		if _, ok := stats[absent]; ok {
			t.Errorf("%s parsed", absent)
		}
	}
}

func TestParseGoroutines(t *testing.T) {
	n, err := parseGoroutines("goroutine profile: total 6012\n3000 @ 0x1 0x2\n")
	if err != nil || n != 6012 {
		t.Fatalf("parseGoroutines = %d, %v", n, err)
	}
	if _, err := parseGoroutines("heap profile: 1\n"); err == nil {
		t.Fatal("a heap profile parsed as a goroutine profile")
	}
}

func TestServingWatcherFindsTheLineAcrossWrites(t *testing.T) {
	w := newServingWatcher()
	out := `{"level":"info","msg":"starting"}` + "\n" + `{"msg":"serving","grpc":"127.0.0.1:1","admin":"127.0.0.1:2"}` + "\nmore\n"
	for chunk := range strings.SplitSeq(out, ",") { // split inside lines
		if n, err := w.Write([]byte(chunk + ",")); err != nil || n != len(chunk)+1 {
			t.Fatalf("Write: %d, %v", n, err)
		}
	}
	select {
	case l := <-w.serving:
		if l.GRPC != "127.0.0.1:1" || l.Admin != "127.0.0.1:2" {
			t.Fatalf("serving line %+v", l)
		}
	default:
		t.Fatal("serving line not found")
	}
	if _, err := w.Write([]byte(`{"msg":"serving","grpc":"x","admin":"y"}` + "\n")); err != nil || len(w.serving) != 0 {
		t.Fatal("a second serving line was reported")
	}
}
