// Package buildinfo tells which build of StreamHub is running: the module
// version, the VCS revision and its commit time, and the Go version, as the
// go command recorded them in the binary. The server and the CLI print it
// for --version; the server also logs it at startup and exports it as the
// streamhub_build_info gauge.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"time"
)

// Unknown stands for a value the build did not record: a revision or a time
// of a build without VCS stamping (go build -buildvcs=false, or outside a
// checkout).
const Unknown = "unknown"

// Info describes one build of a StreamHub binary.
type Info struct {
	// Version is the main module's version: a release tag, a pseudo-version
	// the go command derived from the VCS commit (with a +dirty suffix when
	// the checkout had uncommitted changes), or "(devel)" when the build
	// recorded none.
	Version string
	// Revision is the VCS commit the binary was built from, "" when the
	// build did not record one.
	Revision string
	// Time is the commit time of Revision, the zero time when not recorded.
	Time time.Time
	// Modified reports that the checkout had uncommitted changes.
	Modified bool
	// GoVersion is the toolchain that built the binary, e.g. "go1.27.3".
	GoVersion string
	// Platform is the target, GOOS/GOARCH, e.g. "linux/amd64".
	Platform string
}

// Read returns the build information of the running binary.
func Read() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok { // a binary built without module support
		return Info{Version: "(devel)", GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	}
	i := FromBuildInfo(bi)
	if i.Platform == "" {
		i.Platform = runtime.GOOS + "/" + runtime.GOARCH
	}
	return i
}

// FromBuildInfo extracts the Info of a binary from its recorded build
// information: the running one's (runtime/debug.ReadBuildInfo) or a file's
// (debug/buildinfo.ReadFile).
func FromBuildInfo(bi *debug.BuildInfo) Info {
	i := Info{Version: bi.Main.Version, GoVersion: bi.GoVersion}
	if i.Version == "" {
		i.Version = "(devel)"
	}
	var goos, goarch string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			i.Revision = s.Value
		case "vcs.time":
			if t, err := time.Parse(time.RFC3339, s.Value); err == nil {
				i.Time = t
			}
		case "vcs.modified":
			i.Modified = s.Value == "true"
		case "GOOS":
			goos = s.Value
		case "GOARCH":
			goarch = s.Value
		}
	}
	if goos != "" && goarch != "" {
		i.Platform = goos + "/" + goarch
	}
	return i
}

// RevisionOrUnknown is Revision, or Unknown when the build recorded none.
func (i Info) RevisionOrUnknown() string {
	if i.Revision == "" {
		return Unknown
	}
	return i.Revision
}

// TimeOrUnknown is Time in RFC 3339, or Unknown when the build recorded none.
func (i Info) TimeOrUnknown() string {
	if i.Time.IsZero() {
		return Unknown
	}
	return i.Time.UTC().Format(time.RFC3339)
}

// Format is what prog --version prints: the program and its version on the
// first line, then the full revision, its time and the Go version.
func (i Info) Format(prog string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s\n", prog, i.Version)
	rev := i.RevisionOrUnknown()
	if i.Modified {
		rev += " (modified)"
	}
	fmt.Fprintf(&b, "  revision: %s\n", rev)
	fmt.Fprintf(&b, "  time:     %s\n", i.TimeOrUnknown())
	fmt.Fprintf(&b, "  go:       %s %s\n", i.GoVersion, i.Platform)
	return b.String()
}
