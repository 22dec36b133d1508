package main

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/partial"
)

// writeArchive writes img as an OCI image layout (oci-layout, index.json,
// blobs/) in a tar file at out, replacing out only once it is complete,
// and returns the image's manifest digest. The index names the image ref
// in both annotations that loaders read: org.opencontainers.image.ref.name
// (the tag, for skopeo and podman) and io.containerd.image.name (the whole
// reference, for docker load and containerd).
func writeArchive(out string, img v1.Image, ref string) (v1.Hash, error) {
	tag, err := name.NewTag(ref)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("-tag: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return v1.Hash{}, err
	}
	dir, err := os.MkdirTemp("", "streamhub-image-")
	if err != nil {
		return v1.Hash{}, err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := p.WriteImage(img); err != nil {
		return v1.Hash{}, err
	}
	desc, err := partial.Descriptor(img)
	if err != nil {
		return v1.Hash{}, err
	}
	desc.ArtifactType = "" // an image, not an artifact
	desc.Platform = cf.Platform()
	desc.Annotations = map[string]string{
		"org.opencontainers.image.ref.name": tag.TagStr(),
		"io.containerd.image.name":          ref,
	}
	if err := p.AppendDescriptor(*desc); err != nil {
		return v1.Hash{}, err
	}
	tmp := out + ".tmp"
	if err := tarDir(tmp, dir, cf.Created.Time); err != nil {
		os.Remove(tmp)
		return v1.Hash{}, err
	}
	if err := os.Rename(tmp, out); err != nil {
		return v1.Hash{}, err
	}
	return img.Digest()
}

// tarDir writes the tree under dir into a tar file at out, in lexical
// order and with fixed times, so that the same image gives the same file.
func tarDir(out, dir string, mtime time.Time) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel := filepath.ToSlash(strings.TrimPrefix(p, dir+string(filepath.Separator)))
		info, err := d.Info()
		if err != nil {
			return err
		}
		h := &tar.Header{Name: rel, Mode: 0o644, Size: info.Size(), Typeflag: tar.TypeReg}
		if d.IsDir() {
			h = &tar.Header{Name: rel + "/", Mode: 0o755, Typeflag: tar.TypeDir}
		}
		h.ModTime = mtime
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(tw, src)
		return err
	})
	if cerr := tw.Close(); err == nil {
		err = cerr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// tagOf turns a module version into an image tag: the characters a tag
// may not have (the + of +dirty, the parentheses of (devel)) become -.
func tagOf(version string) string {
	t := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-' {
			return r
		}
		return '-'
	}, version)
	t = strings.Trim(t, ".-")
	if t == "" {
		return "latest"
	}
	if len(t) > 128 {
		t = t[:128]
	}
	return t
}
