package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// memSample is a server's memory at one moment.
type memSample struct {
	RSS        uint64 `json:"rss_bytes"`        // VmRSS of its process
	HeapAlloc  uint64 `json:"heap_alloc_bytes"` // live Go heap, right after a GC
	HeapInuse  uint64 `json:"heap_inuse_bytes"` // Go heap spans in use
	StackInuse uint64 `json:"stack_inuse_bytes"`
	Goroutines int    `json:"goroutines"`
}

// sampleMemory reads a server's RSS from /proc and its Go memory from its
// admin server: the heap profile in text form ends with runtime.MemStats
// lines, and gc=1 collects garbage first, so HeapAlloc is the live heap.
func sampleMemory(ctx context.Context, t *target) (memSample, error) {
	var m memSample
	var err error
	if m.RSS, err = readRSS(t.pid); err != nil {
		return m, err
	}
	heap, err := httpGet(ctx, "http://"+t.adminAddr+"/debug/pprof/heap?gc=1&debug=1")
	if err != nil {
		return m, err
	}
	stats := parseMemStats(heap)
	var ok bool
	if m.HeapAlloc, ok = stats["HeapAlloc"]; !ok {
		return m, fmt.Errorf("%s: no HeapAlloc in the heap profile", t.kind)
	}
	m.HeapInuse, m.StackInuse = stats["HeapInuse"], stats["StackInuse"]
	gr, err := httpGet(ctx, "http://"+t.adminAddr+"/debug/pprof/goroutine?debug=1")
	if err != nil {
		return m, err
	}
	if m.Goroutines, err = parseGoroutines(gr); err != nil {
		return m, fmt.Errorf("%s: %w", t.kind, err)
	}
	return m, nil
}

// readRSS is the VmRSS of process pid, in bytes.
func readRSS(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseRSS(string(b))
}

// processCPU is the user and system CPU time process pid has used.
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(string(b))
}

// userHZ is the unit of the times in /proc/PID/stat: fixed by the Linux
// ABI, whatever the kernel's own tick.
const userHZ = 100

// parseStatCPU reads utime and stime, the 14th and 15th fields of a
// /proc/PID/stat line. The 2nd, the command name, may hold spaces and
// parentheses, so fields are counted from its closing one.
func parseStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected process stat %q", stat)
	}
	f := strings.Fields(stat[i+1:]) // f[0] is field 3, the state
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected process stat %q", stat)
	}
	var ticks uint64
	for _, s := range f[11:13] {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("unexpected process stat %q", stat)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// parseRSS finds "VmRSS:   1234 kB" in a /proc/PID/status text.
func parseRSS(status string) (uint64, error) {
	for line := range strings.Lines(status) {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("unexpected VmRSS line %q", strings.TrimSpace(line))
		}
		kb, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("unexpected VmRSS line %q", strings.TrimSpace(line))
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("no VmRSS in the process status")
}

// parseMemStats reads the "# Name = value" lines that end a text heap
// profile (debug=1) into a map; "# Name = a / b" lines become NameInuse and
// NameSys. Lines with other values are skipped.
func parseMemStats(profile string) map[string]uint64 {
	stats := make(map[string]uint64)
	for line := range strings.Lines(profile) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "# ")
		if !ok {
			continue
		}
		name, value, ok := strings.Cut(rest, " = ")
		if !ok {
			continue
		}
		// "# Stack = 557056 / 557056" is in use / obtained from the OS.
		if inuse, sys, ok := strings.Cut(value, " / "); ok {
			if v, err := strconv.ParseUint(inuse, 10, 64); err == nil {
				stats[name+"Inuse"] = v
			}
			if v, err := strconv.ParseUint(sys, 10, 64); err == nil {
				stats[name+"Sys"] = v
			}
			continue
		}
		if v, err := strconv.ParseUint(value, 10, 64); err == nil {
			stats[name] = v
		}
	}
	return stats
}

// parseGoroutines reads the count from a text goroutine profile's first
// line, "goroutine profile: total N".
func parseGoroutines(profile string) (int, error) {
	first, _, _ := strings.Cut(profile, "\n")
	rest, ok := strings.CutPrefix(first, "goroutine profile: total ")
	if !ok {
		return 0, fmt.Errorf("unexpected goroutine profile header %q", first)
	}
	return strconv.Atoi(strings.TrimSpace(rest))
}

func httpGet(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	return string(b), nil
}

// saveProfile fetches a pprof profile from a server's admin server into
// dir/name.
func saveProfile(ctx context.Context, t *target, query, dir, name string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+t.adminAddr+"/debug/pprof/"+query, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile %s of %s: %s", query, t.kind, resp.Status)
	}
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
