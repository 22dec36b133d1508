// Command streamhub-image builds the StreamHub server's container image
// without a Docker daemon, as an OCI image layout in a tar file that
// docker load, podman load and skopeo (oci-archive:) take:
//
//	CGO_ENABLED=0 GOOS=linux go build -trimpath -buildvcs=auto -ldflags='-s -w' -o streamhub ./cmd/streamhub
//	streamhub-image -binary streamhub -out streamhub-image.tar
//
// make image runs both. The image is the one the Dockerfile describes: the
// static binary on an empty base with the files a static Go server needs
// (a passwd entry for its non-root user, CA certificates), run as UID 65532,
// exposing 50051 (gRPC), 8080 (HTTP) and 8081 (admin). Its version,
// revision and platform come from the binary's own build information.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// defaultCACerts is where Debian's ca-certificates package keeps the bundle.
const defaultCACerts = "/etc/ssl/certs/ca-certificates.crt"

// run is the whole command: args are the command line after the program
// name. It returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("streamhub-image", flag.ContinueOnError)
	fs.SetOutput(stderr)
	binary := fs.String("binary", "", "the server binary: static (CGO_ENABLED=0), built for linux (required)")
	out := fs.String("out", "streamhub-image.tar", "the image tarball to write (an OCI image layout)")
	ref := fs.String("tag", "", "the image reference recorded in the tarball (default streamhub:VERSION, from the binary)")
	caCerts := fs.String("ca-certs", defaultCACerts, "CA certificate bundle to put at "+caCertsPath+" (Debian: apt-get install ca-certificates); empty leaves it out")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: streamhub-image -binary FILE [-out FILE] [-tag REF] [-ca-certs FILE]\n\n"+
			"Builds StreamHub's container image, without Docker, as an OCI image layout tarball.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *binary == "" || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	spec, err := newSpec(*binary, *caCerts)
	if err != nil {
		fmt.Fprintln(stderr, "streamhub-image:", err)
		return 1
	}
	if *ref == "" {
		*ref = "streamhub:" + tagOf(spec.build.Version)
	}
	img, err := spec.image()
	if err != nil {
		fmt.Fprintln(stderr, "streamhub-image:", err)
		return 1
	}
	digest, err := writeArchive(*out, img, *ref)
	if err != nil {
		fmt.Fprintln(stderr, "streamhub-image:", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: %s %s (%s, revision %s)\n", *out, *ref, digest, spec.platform(), spec.build.RevisionOrUnknown())
	return 0
}
