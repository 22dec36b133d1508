// Command streamhub-cli is the Goa-generated StreamHub CLI, extended so the
// bidirectional StreamData stream can be driven from a pipe or a terminal:
// JSON lines on stdin are sent, received messages are printed as JSON lines,
// and -session NAME offers a plain-text chat mode. Run it with --help.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	cli "github.com/streamhub/streamhub/gen/grpc/cli/streamhub"
	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	"github.com/streamhub/streamhub/internal/buildinfo"
	goa "goa.design/goa/v3/pkg"
	"google.golang.org/grpc"
)

// Exit statuses.
const (
	exitOK     = 0 // the server ended the stream with OK, or --help or --version
	exitStream = 1 // the stream could not be opened or ended with another status
	exitUsage  = 2 // bad command line, as for the flag package
)

func main() {
	// Ctrl-C cancels the stream; end of input (Ctrl-D) is the graceful way
	// out, letting the server flush and end the stream with OK.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the whole CLI: args is the command line including the program name,
// as os.Args. It returns the exit status. When the server ends the stream,
// run returns without waiting for stdin to end; see driver.drive.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	prog := "streamhub-cli"
	if len(args) > 0 {
		prog = filepath.Base(args[0])
	}
	cmd, code := parseCommand(args, stdout, stderr)
	if cmd == nil {
		return code
	}
	defer cmd.conn.Close()
	out := &output{prog: prog, stdout: stdout, stderr: stderr}
	if cmd.cfg.reconnect {
		return runReconnect(ctx, cmd, stdin, out)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := openStream(ctx, cancel, cmd.endpoint, cmd.payload, cmd.cfg.timeout, cmd.ends)
	if err != nil {
		out.errorf("could not open the stream to %s: %s", cmd.cfg.target, describe(err))
		if hint := openHint(cmd.cfg.tls, err); hint != "" {
			out.errorf("%s", hint)
		}
		return exitStream
	}
	if cmd.cfg.verbose {
		over := "plaintext"
		if cmd.cfg.tls.enabled {
			over = "TLS"
		}
		out.errorf("stream open to %s over %s", cmd.cfg.target, over)
	}

	d := &driver{
		stream:  stream,
		ended:   cmd.ends.err,
		session: cmd.cfg.session,
		verbose: cmd.cfg.verbose,
		out:     out,
	}
	end := d.drive(stdin, cancel)
	switch {
	case errors.Is(end, io.EOF):
		return exitOK
	case errors.Is(end, errOutput):
		out.errorf("%v", end)
	default:
		out.errorf("stream ended: %s", describe(end))
	}
	return exitStream
}

// config is what the global flags ask for.
type config struct {
	target  string        // host:port to dial, from -url
	tls     tlsSettings   // transport security, from -url's scheme and the -tls flags
	timeout time.Duration // longest wait for the stream to open; never a stream deadline
	session string        // text mode's session, "" for scripted mode
	verbose bool
	// reconnect drives the stream with the client package, which survives
	// faults, instead of the bare generated stream.
	reconnect bool
}

// command is a parsed command line, ready to run.
type command struct {
	cfg      config
	conn     *grpc.ClientConn
	endpoint goa.Endpoint // the generated stream-service stream-data endpoint
	payload  any
	ends     *endRecorder
}

// globalsMu serializes parseCommand's use of os.Args and flag.CommandLine.
var globalsMu sync.Mutex

// parseCommand parses the command line. On failure or --help it reports on
// stderr, on --version it prints the build on stdout, and it returns a nil
// command and the exit status.
//
// The generated cli.ParseEndpoint reads its global flags from
// flag.CommandLine and the command line from os.Args, and its usage texts
// name os.Args[0]. So that run can take its arguments as a parameter and be
// called again and again (tests do), parseCommand points both at this call's
// values while it parses and restores them afterwards, under globalsMu.
// Two things stay as generated: the usage of "stream-service [stream-data]
// --help" goes to os.Stderr, and the stream-data flag set exits the process
// on --help or a bad flag (flag.ExitOnError). Tests must avoid those two.
func parseCommand(args []string, stdout, stderr io.Writer) (*command, int) {
	globalsMu.Lock()
	defer globalsMu.Unlock()
	savedArgs, savedFlags := os.Args, flag.CommandLine
	defer func() { os.Args, flag.CommandLine = savedArgs, savedFlags }()
	if len(args) == 0 {
		args = []string{"streamhub-cli"}
	}
	os.Args = args

	fs, g := newGlobalFlags(args[0], stderr)
	flag.CommandLine = fs
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, exitOK
		}
		return nil, exitUsage // the flag package has reported it
	}
	if g.version {
		fmt.Fprint(stdout, buildinfo.Read().Format(filepath.Base(args[0])))
		return nil, exitOK
	}
	cfg, err := g.config()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return nil, exitUsage
	}

	opts, err := dialOptions(cfg.tls)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return nil, exitUsage
	}

	// NewClient does not connect: a command line that turns out to be bad
	// below costs nothing on the network.
	ends := &endRecorder{}
	conn, err := grpc.NewClient(cfg.target, append(opts, grpc.WithChainStreamInterceptor(ends.interceptor))...)
	if err != nil {
		fmt.Fprintf(stderr, "could not connect to gRPC server at %s: %v\n", cfg.target, err)
		return nil, exitStream
	}
	endpoint, payload, err := cli.ParseEndpoint(conn)
	if err != nil {
		conn.Close()
		if errors.Is(err, flag.ErrHelp) {
			return nil, exitOK
		}
		fmt.Fprintln(stderr, err.Error())
		fmt.Fprintln(stderr, "run '"+args[0]+" --help' for detailed usage.")
		return nil, exitUsage
	}
	if p, ok := payload.(*streamsvc.StreamDataPayload); ok && p.Token != nil {
		p.Token = ptr(bearer(*p.Token))
	}
	return &command{cfg: cfg, conn: conn, endpoint: endpoint, payload: payload, ends: ends}, exitOK
}

// globalFlags are the flags before SERVICE ENDPOINT.
type globalFlags struct {
	url       string
	timeout   timeoutValue
	session   string
	verbose   bool
	version   bool
	reconnect bool

	tls           bool
	tlsCA         string
	tlsCert       string
	tlsKey        string
	tlsServerName string
}

// newGlobalFlags defines the global flags on a fresh flag set that reports
// to stderr.
func newGlobalFlags(prog string, stderr io.Writer) (*flag.FlagSet, *globalFlags) {
	g := &globalFlags{timeout: timeoutValue(10 * time.Second)}
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&g.url, "url", defaultURL, "server URL: grpc://HOST:PORT, grpcs://HOST:PORT (TLS) or HOST:PORT")
	fs.Var(&g.timeout, "timeout", "longest wait for the stream to open (a duration, or seconds)")
	fs.StringVar(&g.session, "session", "", "text mode: send plain lines as data to this session")
	fs.BoolVar(&g.verbose, "verbose", false, "echo sent messages on stderr")
	fs.BoolVar(&g.verbose, "v", false, "echo sent messages on stderr")
	fs.BoolVar(&g.version, "version", false, "print the build's version, VCS revision and time, and Go version, then exit")
	fs.BoolVar(&g.reconnect, "reconnect", false, "survive faults: reconnect, rejoin where left off, print each message once")
	fs.BoolVar(&g.tls, "tls", false, "connect over TLS, trusting the system's CA certificates")
	fs.StringVar(&g.tlsCA, "tls-ca", "", "trust the CA certificates in this PEM `file` instead of the system's (implies -tls)")
	fs.StringVar(&g.tlsCert, "tls-cert", "", "client certificate PEM `file` for mutual TLS, with -tls-key (implies -tls)")
	fs.StringVar(&g.tlsKey, "tls-key", "", "client private key PEM `file` for mutual TLS, with -tls-cert (implies -tls)")
	fs.StringVar(&g.tlsServerName, "tls-server-name", "", "verify the server's certificate for this `name` instead of the -url host (implies -tls)")
	fs.Usage = func() { usage(stderr, prog) }
	return fs, g
}

// identifierRE is the design's pattern and length for session IDs.
var identifierRE = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// config checks the parsed flags.
func (g *globalFlags) config() (config, error) {
	target, secure, err := parseTarget(g.url)
	if err != nil {
		return config{}, err
	}
	// Any TLS flag turns TLS on, even with a grpc:// URL (the default -url
	// is one): a flag asking for a CA or a client certificate must never
	// end in a plaintext connection.
	sec := tlsSettings{
		enabled:    secure || g.tls || g.tlsCA != "" || g.tlsCert != "" || g.tlsKey != "" || g.tlsServerName != "",
		caFile:     g.tlsCA,
		certFile:   g.tlsCert,
		keyFile:    g.tlsKey,
		serverName: g.tlsServerName,
	}
	if err := sec.check(); err != nil {
		return config{}, err
	}
	// Checked here because the server would refuse every line otherwise.
	if g.session != "" && !identifierRE.MatchString(g.session) {
		return config{}, fmt.Errorf("invalid -session %q: want 1-128 characters of A-Z a-z 0-9 . _ : -", g.session)
	}
	return config{target: target, tls: sec, timeout: time.Duration(g.timeout), session: g.session, verbose: g.verbose, reconnect: g.reconnect}, nil
}

// timeoutValue is the -timeout flag: a Go duration ("10s"), or a bare number
// of seconds as the -timeout of Goa-generated CLIs takes.
type timeoutValue time.Duration

func (t *timeoutValue) String() string { return time.Duration(*t).String() }

func (t *timeoutValue) Set(s string) error {
	var d time.Duration
	if n, err := strconv.Atoi(s); err == nil {
		d = time.Duration(n) * time.Second
	} else if d, err = time.ParseDuration(s); err != nil {
		return errors.New("want a duration such as 10s, or a number of seconds")
	}
	if d <= 0 {
		return errors.New("must be positive")
	}
	*t = timeoutValue(d)
	return nil
}

// usage prints the generated CLI's usage followed by how the stream is
// driven. It reads os.Args[0] through cli.UsageExamples, which parseCommand
// has set.
func usage(w io.Writer, prog string) {
	fmt.Fprintf(w, `%[1]s is a command line client for the streamhub API.

Usage:
    %[1]s [-url URL] [-timeout DURATION] [-session NAME] [-reconnect] [-verbose|-v]
        [-tls] [-tls-ca FILE] [-tls-cert FILE -tls-key FILE] [-tls-server-name NAME]
        SERVICE ENDPOINT [flags]
    %[1]s -version

    -url URL:          server URL, grpc://HOST:PORT, grpcs://HOST:PORT (TLS)
                       or HOST:PORT (%[2]s)
    -timeout DURATION: longest wait for the stream to open, e.g. 10s, or seconds (10s);
                       the stream itself has no deadline
    -session NAME:     text mode, see below
    -reconnect:        survive faults, see below
    -verbose|-v:       echo sent messages on stderr (false)
    -version:          print the build's version, VCS revision and time, and
                       Go version, then exit

TLS (a grpcs:// URL or any of these flags turns it on; TLS 1.2 at least):
    -tls:                   connect over TLS, trusting the system's CA certificates
    -tls-ca FILE:           trust the CA certificates in this PEM file instead
    -tls-cert FILE:         client certificate (PEM) for mutual TLS, with -tls-key
    -tls-key FILE:          the client certificate's private key (PEM)
    -tls-server-name NAME:  name to verify in the server's certificate instead
                            of the -url host

Commands:
%[3]s

Additional help:
    %[1]s SERVICE [ENDPOINT] --help

Example:
%[4]s

Scripted mode (the default):
    Each line on stdin is one message, a JSON object with the keys type,
    session_id, data, timestamp, seq, action, client_id, id, reason, recovered
    and epoch. "type" is required, absent fields are omitted, "data" is base64,
    "seq" and "timestamp" are numbers. A line that is not valid is reported on
    stderr and skipped; blank lines are skipped. Each received message is
    printed on stdout as one such line, ready for jq or for another CLI.
    End of input half-closes the stream; the CLI exits when the server ends
    it: status 0 for OK, else 1 with the gRPC status on stderr.

Text mode (-session NAME):
    Joins NAME, then sends each plain line as a data message to it; a line
    starting with "{" is still a JSON message. Deliveries print as
    "[session] client: text", the server's other messages as sentences
    ("connected as alice", "joined lobby at seq 3"), heartbeats not at all.

Surviving faults (-reconnect):
    The stream is driven by StreamHub's Go client: when it breaks (network,
    server restart or drain) the CLI reconnects with backoff, rejoins every
    session from the last seq it printed, and prints each message exactly
    once, in seq order; a message lost on the way (history evicted, or a
    restarted server without it) shows as "recovered":false on the joined
    line. Input lines become the client's calls: data publishes (sent again
    after a reconnect unless the server had it; "id" defaults to a random
    one), join (with "seq" and "epoch" to replay), leave, pause, resume;
    heartbeats and health checks are the client's business and skipped.
    Output is the messages, joined and error lines, and a welcome line per
    connection; state changes go to stderr ("reconnecting: ...",
    "reconnected"), or in text mode to stdout ("reconnecting… (...)",
    "reconnected as alice"). End of input waits for the publications to be
    delivered back, then exits 0; another stream with the same client ID,
    or a refused token, ends the CLI with status 1.

Examples:
    echo '{"type":"control","action":"join","session_id":"lobby"}' | %[1]s stream-service stream-data --client-id alice
    echo '{"type":"data","session_id":"lobby","data":"aGVsbG8="}' | %[1]s stream-service stream-data --client-id bob
    %[1]s -session lobby stream-service stream-data --client-id carol
    %[1]s -reconnect stream-service stream-data --client-id dave < script.jsonl
    %[1]s -url grpcs://hub.example.com:50051 -tls-ca ca.pem stream-service stream-data --token "$JWT"
    %[1]s -url 10.0.0.7:50051 -tls-ca ca.pem -tls-cert me.pem -tls-key me-key.pem -tls-server-name hub.example.com stream-service stream-data
    ... | %[1]s stream-service stream-data | jq -r 'select(.type == "data") | .data | @base64d'
`, prog, defaultURL, indent(strings.Join(cli.UsageCommands(), "\n")), indent(strings.TrimSuffix(cli.UsageExamples(), "\n")))
}

// indent indents each line of s by four spaces, as Goa's generated usage does.
func indent(s string) string {
	if s == "" {
		return ""
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}
