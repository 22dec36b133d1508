package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	gobuildinfo "debug/buildinfo"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/streamhub/streamhub/internal/buildinfo"
)

// buildServer builds cmd/streamhub as make image does into dir.
func buildServer(t *testing.T, dir string) string {
	t.Helper()
	goTool := "go"
	if root := os.Getenv("GOROOT"); root != "" { // set by go test: the toolchain running this test
		goTool = filepath.Join(root, "bin", "go")
	}
	bin := filepath.Join(dir, "streamhub")
	cmd := exec.Command(goTool, "build", "-trimpath", "-buildvcs=auto", "-ldflags=-s -w", "-o", bin, "github.com/streamhub/streamhub/cmd/streamhub")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestImageTarball builds the server and its image tarball, then reads the
// tarball back as an OCI image layout and checks what a container runtime
// would run: entrypoint, user, ports, labels, and a static binary that is
// the server.
func TestImageTarball(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("runs the linux server binary it builds")
	}
	dir := t.TempDir()
	bin := buildServer(t, dir)
	ca := filepath.Join(dir, "ca.pem")
	caPEM := []byte("-----BEGIN CERTIFICATE-----\nc3RyZWFtaHViIHRlc3Q=\n-----END CERTIFICATE-----\n")
	if err := os.WriteFile(ca, caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "image.tar")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-binary", bin, "-out", out, "-ca-certs", ca, "-tag", "streamhub:test"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit status %d, stderr:\n%s", code, stderr.String())
	}

	img := readArchive(t, out, "test")
	if err := validate.Image(img); err != nil { // digests, diff IDs and sizes agree
		t.Fatalf("invalid image: %v", err)
	}
	if mt, err := img.MediaType(); err != nil || mt != types.OCIManifestSchema1 {
		t.Errorf("manifest media type %q (%v), want %q", mt, err, types.OCIManifestSchema1)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s, want linux/%s", cf.OS, cf.Architecture, runtime.GOARCH)
	}
	if !slices.Equal(c.Entrypoint, []string{"/usr/local/bin/streamhub"}) || len(c.Cmd) != 0 {
		t.Errorf("entrypoint %q, cmd %q; want the server alone", c.Entrypoint, c.Cmd)
	}
	uid, gid, ok := strings.Cut(c.User, ":")
	if n, err := strconv.Atoi(uid); !ok || err != nil || n == 0 || gid == "0" {
		t.Errorf("user %q, want a numeric non-root UID:GID", c.User)
	}
	var ports []string
	for p := range c.ExposedPorts {
		ports = append(ports, p)
	}
	slices.Sort(ports)
	if want := []string{"50051/tcp", "8080/tcp", "8081/tcp"}; !slices.Equal(ports, want) {
		t.Errorf("exposed ports %v, want %v", ports, want)
	}

	files := extract(t, img)
	server, ok := files["usr/local/bin/streamhub"]
	if !ok {
		t.Fatalf("no usr/local/bin/streamhub in the image; files: %v", keys(files))
	}
	if server.mode&0o111 != 0o111 || server.mode&0o022 != 0 {
		t.Errorf("server mode %o, want executable by all, writable by root only", server.mode)
	}
	f, err := elf.NewFile(bytes.NewReader(server.data))
	if err != nil {
		t.Fatalf("the server is not an ELF file: %v", err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("the server is dynamically linked: it has a %v program header", p.Type)
		}
	}
	if f.Section(".interp") != nil || f.Section(".dynamic") != nil {
		t.Error("the server has an .interp or .dynamic section")
	}

	// The labels name the binary's own build, which --version prints.
	bi, err := gobuildinfo.Read(bytes.NewReader(server.data))
	if err != nil {
		t.Fatal(err)
	}
	build := buildinfo.FromBuildInfo(bi)
	if v := c.Labels["org.opencontainers.image.version"]; v != build.Version || v == "" {
		t.Errorf("version label %q, want %q", v, build.Version)
	}
	if r := c.Labels["org.opencontainers.image.revision"]; r != build.RevisionOrUnknown() {
		t.Errorf("revision label %q, want %q", r, build.RevisionOrUnknown())
	}
	extracted := filepath.Join(dir, "extracted-streamhub")
	if err := os.WriteFile(extracted, server.data, 0o755); err != nil {
		t.Fatal(err)
	}
	version, err := exec.Command(extracted, "--version").Output()
	if err != nil {
		t.Fatalf("streamhub --version from the image: %v", err)
	}
	if want := build.Format("streamhub"); string(version) != want {
		t.Errorf("streamhub --version from the image:\n%s\nwant:\n%s", version, want)
	}

	// What the non-root user and TLS clients need on an empty base.
	if !strings.Contains(string(files["etc/passwd"].data), ":"+uid+":"+gid+":") {
		t.Errorf("/etc/passwd has no entry for %s:\n%s", c.User, files["etc/passwd"].data)
	}
	if !bytes.Equal(files["etc/ssl/certs/ca-certificates.crt"].data, caPEM) {
		t.Error("/etc/ssl/certs/ca-certificates.crt is not the -ca-certs bundle")
	}
}

// TestRefusesDynamicBinary: the image has no dynamic loader, so a binary
// that needs one is refused.
func TestRefusesDynamicBinary(t *testing.T) {
	dynamic := "/bin/ls" // dynamically linked on every Linux distribution this runs on
	if f, err := elf.Open(dynamic); err != nil || f.Section(".interp") == nil {
		t.Skipf("no dynamically linked %s here", dynamic)
	}
	var stdout, stderr bytes.Buffer
	code := run([]string{"-binary", dynamic, "-out", filepath.Join(t.TempDir(), "image.tar"), "-ca-certs", ""}, &stdout, &stderr)
	if code == 0 || !strings.Contains(stderr.String(), "dynamically linked") {
		t.Fatalf("exit status %d, stderr:\n%s\nwant a refusal of a dynamically linked binary", code, stderr.String())
	}
}

func TestTagOf(t *testing.T) {
	for version, want := range map[string]string{
		"v1.2.0": "v1.2.0",
		"v0.0.0-20261129151553-891750dc7e73+dirty": "v0.0.0-20261129151553-891750dc7e73-dirty",
		"(devel)": "devel",
		"":        "latest",
	} {
		if got := tagOf(version); got != want {
			t.Errorf("tagOf(%q) = %q, want %q", version, got, want)
		}
	}
}

// readArchive untars the OCI image layout at path and returns the one image
// its index names with tag.
func readArchive(t *testing.T, path, tag string) v1.Image {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		target := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(target, dir+string(filepath.Separator)) {
			t.Fatalf("entry %q leaves the layout", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(target, 0o755)
		case tar.TypeReg:
			var data []byte
			if data, err = io.ReadAll(tr); err == nil {
				err = os.WriteFile(target, data, 0o644)
			}
		default:
			t.Fatalf("entry %q of type %c", h.Name, h.Typeflag)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 1 {
		t.Fatalf("index lists %d manifests, want 1", len(m.Manifests))
	}
	d := m.Manifests[0]
	if d.Annotations["org.opencontainers.image.ref.name"] != tag || d.Annotations["io.containerd.image.name"] != "streamhub:"+tag {
		t.Errorf("index annotations %v, want the reference streamhub:%s", d.Annotations, tag)
	}
	if d.Platform == nil || d.Platform.OS != "linux" || d.Platform.Architecture != runtime.GOARCH {
		t.Errorf("index platform %v, want linux/%s", d.Platform, runtime.GOARCH)
	}
	img, err := idx.Image(d.Digest)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// entry is a regular file of the image's file system.
type entry struct {
	mode int64
	data []byte
}

// extract returns the regular files of img's flattened file system.
func extract(t *testing.T, img v1.Image) map[string]entry {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	files := map[string]entry{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[strings.TrimPrefix(h.Name, "/")] = entry{mode: h.Mode, data: data}
	}
}

func keys(m map[string]entry) []string {
	var k []string
	for name := range m {
		k = append(k, name)
	}
	slices.Sort(k)
	return k
}
