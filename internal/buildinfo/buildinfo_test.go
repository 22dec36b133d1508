package buildinfo

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

func TestFromBuildInfo(t *testing.T) {
	stamped := &debug.BuildInfo{
		GoVersion: "go1.27.3",
		Main:      debug.Module{Path: "github.com/streamhub/streamhub", Version: "v0.0.0-20261129151553-891750dc7e73+dirty"},
		Settings: []debug.BuildSetting{
			{Key: "GOARCH", Value: "arm64"},
			{Key: "GOOS", Value: "linux"},
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: "891750dc7e737389e0e7442f03f2c28edd40e836"},
			{Key: "vcs.time", Value: "2026-11-29T15:15:53Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	for _, tc := range []struct {
		name string
		bi   *debug.BuildInfo
		want Info
		text []string // lines of Format("streamhub")
	}{
		{
			name: "stamped",
			bi:   stamped,
			want: Info{
				Version:   "v0.0.0-20261129151553-891750dc7e73+dirty",
				Revision:  "891750dc7e737389e0e7442f03f2c28edd40e836",
				Time:      time.Date(2026, 11, 29, 15, 15, 53, 0, time.UTC),
				Modified:  true,
				GoVersion: "go1.27.3",
				Platform:  "linux/arm64",
			},
			text: []string{
				"streamhub v0.0.0-20261129151553-891750dc7e73+dirty",
				"  revision: 891750dc7e737389e0e7442f03f2c28edd40e836 (modified)",
				"  time:     2026-11-29T15:15:53Z",
				"  go:       go1.27.3 linux/arm64",
			},
		},
		{
			name: "no VCS stamping",
			bi:   &debug.BuildInfo{GoVersion: "go1.27.3", Main: debug.Module{Path: "github.com/streamhub/streamhub", Version: "(devel)"}},
			want: Info{Version: "(devel)", GoVersion: "go1.27.3"},
			text: []string{
				"streamhub (devel)",
				"  revision: unknown",
				"  time:     unknown",
				"  go:       go1.27.3 ",
			},
		},
		{
			name: "no main module version",
			bi:   &debug.BuildInfo{GoVersion: "go1.27.3"},
			want: Info{Version: "(devel)", GoVersion: "go1.27.3"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := FromBuildInfo(tc.bi)
			if got != tc.want {
				t.Fatalf("FromBuildInfo = %+v, want %+v", got, tc.want)
			}
			if tc.text == nil {
				return
			}
			if text := got.Format("streamhub"); text != strings.Join(tc.text, "\n")+"\n" {
				t.Errorf("Format:\n%s\nwant:\n%s", text, strings.Join(tc.text, "\n"))
			}
		})
	}
}

// TestRead reads the test binary's own build information: the go command
// records the toolchain and, for test binaries too, the target platform.
func TestRead(t *testing.T) {
	i := Read()
	if i.GoVersion != runtime.Version() {
		t.Errorf("GoVersion = %q, want %q", i.GoVersion, runtime.Version())
	}
	if want := runtime.GOOS + "/" + runtime.GOARCH; i.Platform != want {
		t.Errorf("Platform = %q, want %q", i.Platform, want)
	}
	if i.Version == "" {
		t.Error("Version is empty, want a version or (devel)")
	}
}
