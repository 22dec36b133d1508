package main

import (
	"bytes"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/streamhub/streamhub/internal/buildinfo"
)

// TestVersionFlag: --version prints the build and exits 0, whatever the
// rest of the configuration says.
func TestVersionFlag(t *testing.T) {
	t.Setenv("STREAMHUB_QUEUE_SIZE", "many") // would fail a start
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--version"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit status %d, stderr:\n%s", code, stderr.String())
	}
	b := buildinfo.Read()
	if got, want := stdout.String(), b.Format("streamhub"); got != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", got, want)
	}
	if !strings.HasPrefix(stdout.String(), "streamhub "+b.Version+"\n") || !strings.Contains(stdout.String(), runtime.Version()) {
		t.Errorf("stdout does not name the version and %s:\n%s", runtime.Version(), stdout.String())
	}
}

// TestVersionIsNotAnEnvironmentVariable: STREAMHUB_VERSION does not turn a
// start into a print-and-exit.
func TestVersionIsNotAnEnvironmentVariable(t *testing.T) {
	o, err := parseOptions(nil, func(k string) (string, bool) { return "true", k == "STREAMHUB_VERSION" })
	if err != nil {
		t.Fatal(err)
	}
	if o.version {
		t.Fatal("STREAMHUB_VERSION=true set --version")
	}
}

// TestBuildReported: the startup log line and the streamhub_build_info
// gauge name the running build.
func TestBuildReported(t *testing.T) {
	s, logs := startLogged(t)
	b := buildinfo.Read()

	resp, err := http.Get("http://" + s.adminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	f, ok := families["streamhub_build_info"]
	if !ok || len(f.GetMetric()) != 1 {
		t.Fatalf("streamhub_build_info: %v", f)
	}
	m := f.GetMetric()[0]
	if m.GetGauge().GetValue() != 1 {
		t.Errorf("streamhub_build_info = %v, want 1", m.GetGauge().GetValue())
	}
	labels := map[string]string{}
	for _, l := range m.GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	for k, want := range map[string]string{"version": b.Version, "revision": b.RevisionOrUnknown(), "go_version": runtime.Version()} {
		if labels[k] != want {
			t.Errorf("streamhub_build_info label %s = %q, want %q (labels %v)", k, labels[k], want, labels)
		}
	}

	eventually(t, "the serving line", func() bool { return strings.Contains(logs.String(), "msg=serving") })
	var line string
	for l := range strings.Lines(logs.String()) {
		if strings.Contains(l, "msg=serving") {
			line = l
		}
	}
	for _, want := range []string{"version=", "revision=" + b.RevisionOrUnknown(), "vcs_time=" + b.TimeOrUnknown(), "go_version=" + runtime.Version()} {
		if !strings.Contains(line, want) {
			t.Errorf("serving line lacks %q: %s", want, line)
		}
	}
	if !strings.Contains(line, b.Version) {
		t.Errorf("serving line lacks the version %q: %s", b.Version, line)
	}
}
