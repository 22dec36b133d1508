package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"time"

	gobuildinfo "debug/buildinfo"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/streamhub/streamhub/internal/buildinfo"
)

// The image's shape; the Dockerfile says the same.
const (
	binaryPath  = "/usr/local/bin/streamhub"
	caCertsPath = "/etc/ssl/certs/ca-certificates.crt"
	// user is the non-root user and group the server runs as, named
	// nonroot in rootfs/etc/passwd (the UID distroless images use).
	user = "65532:65532"
)

// exposedPorts are the server's default ports: gRPC (--grpc-addr), HTTP
// and WebSocket (--http-addr), admin (--admin-addr).
var exposedPorts = []string{"50051/tcp", "8080/tcp", "8081/tcp"}

// rootfs holds the files of the base layer that the Dockerfile copies too:
// the passwd and group entries of the non-root user (a server that looks
// up its user finds it), and nsswitch.conf so that name lookups read
// /etc/hosts before DNS.
//
//go:embed rootfs
var rootfs embed.FS

// spec is what goes into the image.
type spec struct {
	binary  []byte
	build   buildinfo.Info
	goarch  string
	variant string // the ARM version, "" elsewhere
	caCerts []byte // nil: none
	// created is the commit time of the build (the Unix epoch when the
	// build recorded none): every file's time and the image's creation
	// time, so that one commit always gives the same image digest.
	created time.Time
}

// newSpec reads the server binary, which must be a static Linux
// executable, and the CA bundle (none when caCertsFile is "").
func newSpec(binaryFile, caCertsFile string) (*spec, error) {
	bin, err := os.ReadFile(binaryFile)
	if err != nil {
		return nil, err
	}
	if err := checkStatic(bytes.NewReader(bin)); err != nil {
		return nil, fmt.Errorf("%s: %w", binaryFile, err)
	}
	bi, err := gobuildinfo.Read(bytes.NewReader(bin))
	if err != nil {
		return nil, fmt.Errorf("%s: no Go build information: %w", binaryFile, err)
	}
	s := &spec{binary: bin, build: buildinfo.FromBuildInfo(bi), created: time.Unix(0, 0).UTC()}
	if !s.build.Time.IsZero() {
		s.created = s.build.Time.UTC()
	}
	settings := map[string]string{}
	for _, kv := range bi.Settings {
		settings[kv.Key] = kv.Value
	}
	if goos := settings["GOOS"]; goos != "linux" {
		return nil, fmt.Errorf("%s is built for GOOS=%q; the image needs GOOS=linux", binaryFile, goos)
	}
	s.goarch = settings["GOARCH"]
	if s.goarch == "arm" && settings["GOARM"] != "" {
		s.variant = "v" + strings.TrimSuffix(strings.TrimSuffix(settings["GOARM"], ",softfloat"), ",hardfloat")
	}
	if caCertsFile != "" {
		if s.caCerts, err = os.ReadFile(caCertsFile); err != nil {
			return nil, fmt.Errorf("CA certificates: %w (Debian: apt-get install ca-certificates; or -ca-certs '' to leave them out)", err)
		}
	}
	return s, nil
}

// checkStatic refuses anything but a statically linked ELF executable: the
// image has no dynamic loader and no libc. A Go binary built with
// CGO_ENABLED=0 has neither an interpreter nor a dynamic section.
func checkStatic(r io.ReaderAt) error {
	f, err := elf.NewFile(r)
	if err != nil {
		return fmt.Errorf("not an ELF executable: %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			return errors.New("dynamically linked; build it with CGO_ENABLED=0")
		}
	}
	return nil
}

// platform is the image's OS/architecture[/variant].
func (s *spec) platform() string {
	p := "linux/" + s.goarch
	if s.variant != "" {
		p += "/" + s.variant
	}
	return p
}

// labels are the image's OCI annotations of its build.
func (s *spec) labels() map[string]string {
	l := map[string]string{
		"org.opencontainers.image.title":       "streamhub",
		"org.opencontainers.image.description": "StreamHub real-time streaming server",
		"org.opencontainers.image.version":     s.build.Version,
		"org.opencontainers.image.revision":    s.build.RevisionOrUnknown(),
	}
	if !s.build.Time.IsZero() {
		l["org.opencontainers.image.created"] = s.created.Format(time.RFC3339)
	}
	return l
}

// image assembles the image: a base layer with /etc, a layer with the
// binary (so that a new build changes only that layer), and the config.
func (s *spec) image() (v1.Image, error) {
	base, err := s.baseFiles()
	if err != nil {
		return nil, err
	}
	baseLayer, err := tarLayer(base, s.created)
	if err != nil {
		return nil, err
	}
	binLayer, err := tarLayer([]file{{name: binaryPath, mode: 0o755, data: s.binary}}, s.created)
	if err != nil {
		return nil, err
	}
	created := v1.Time{Time: s.created}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.Append(img,
		mutate.Addendum{Layer: baseLayer, History: v1.History{Created: created, CreatedBy: "streamhub-image: /etc (passwd, group, nsswitch.conf, CA certificates)"}},
		mutate.Addendum{Layer: binLayer, History: v1.History{Created: created, CreatedBy: "streamhub-image: " + binaryPath}},
	)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = "linux", s.goarch, s.variant
	cf.Created = created
	ports := map[string]struct{}{}
	for _, p := range exposedPorts {
		ports[p] = struct{}{}
	}
	cf.Config = v1.Config{
		Entrypoint:   []string{binaryPath},
		User:         user,
		ExposedPorts: ports,
		Labels:       s.labels(),
	}
	return mutate.ConfigFile(img, cf)
}

// baseFiles are rootfs's files and the CA bundle.
func (s *spec) baseFiles() ([]file, error) {
	var files []file
	err := fs.WalkDir(rootfs, "rootfs", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := rootfs.ReadFile(p)
		files = append(files, file{name: strings.TrimPrefix(p, "rootfs"), mode: 0o644, data: data})
		return err
	})
	if s.caCerts != nil {
		files = append(files, file{name: caCertsPath, mode: 0o644, data: s.caCerts})
	}
	return files, err
}

// file is a regular file of a layer, owned by root.
type file struct {
	name string // absolute path in the image
	mode int64
	data []byte
}

// tarLayer makes a gzip-compressed OCI layer of files and their parent
// directories, every entry dated mtime.
func tarLayer(files []file, mtime time.Time) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	var addDir func(dir string) error
	addDir = func(dir string) error {
		if dir == "/" || dirs[dir] {
			return nil
		}
		if err := addDir(path.Dir(dir)); err != nil {
			return err
		}
		dirs[dir] = true
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir[1:] + "/", Mode: 0o755, ModTime: mtime, Uname: "root", Gname: "root"})
	}
	for _, f := range files {
		if err := addDir(path.Dir(f.name)); err != nil {
			return nil, err
		}
		h := &tar.Header{Typeflag: tar.TypeReg, Name: f.name[1:], Mode: f.mode, Size: int64(len(f.data)), ModTime: mtime, Uname: "root", Gname: "root"}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
		tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
}
