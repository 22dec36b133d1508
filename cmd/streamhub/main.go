// Command streamhub is the StreamHub server.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/streamhub/streamhub/internal/buildinfo"
	"goa.design/clue/log"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole server: args are the command line after the program
// name. It returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseOptions(args, os.LookupEnv)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "streamhub:", err)
		return 2
	}
	if o.version {
		fmt.Fprint(stdout, buildinfo.Read().Format("streamhub"))
		return 0
	}
	ctx := logContext(o)
	soft, err := setSoftMemoryLimit(o.stream.MemoryBudget)
	if err != nil {
		log.Error(ctx, err, log.KV{K: "msg", V: "cannot set the runtime's soft memory limit"})
	}
	log.Print(ctx, log.KV{K: "msg", V: "memory"}, log.KV{K: "budget", V: o.stream.MemoryBudget}, log.KV{K: "soft_limit", V: soft})
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, err := newServer(ctx, o)
	if err != nil {
		log.Error(ctx, err, log.KV{K: "msg", V: "cannot start"})
		return 1
	}
	if err := s.serve(ctx); err != nil {
		log.Error(ctx, err, log.KV{K: "msg", V: "server failed"})
		return 1
	}
	return 0
}

func logContext(o *options) context.Context {
	format := log.FormatJSON
	switch o.logFormat {
	case "text":
		format = log.FormatText
	case "terminal":
		format = log.FormatTerminal
	case "auto":
		if log.IsTerminal() {
			format = log.FormatTerminal
		}
	}
	opts := []log.LogOption{log.WithFormat(format)}
	if o.debug {
		opts = append(opts, log.WithDebug())
	}
	return log.Context(context.Background(), opts...)
}
