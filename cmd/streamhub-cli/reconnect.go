package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/streamhub/streamhub/client"
	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
)

// runReconnect is the CLI with -reconnect: the stream is driven by the
// client package, which reconnects and rejoins by itself, so the output
// has every message once, in seq order, across server restarts. It
// returns the exit status.
func runReconnect(ctx context.Context, cmd *command, stdin io.Reader, out *output) int {
	opts := []client.Option{}
	if p, ok := cmd.payload.(*streamsvc.StreamDataPayload); ok {
		if p.ClientID != nil {
			opts = append(opts, client.WithClientID(*p.ClientID))
		}
		if p.Token != nil {
			opts = append(opts, client.WithToken(*p.Token))
		}
	}
	if cmd.cfg.tls.enabled {
		cfg, err := cmd.cfg.tls.clientConfig()
		if err != nil {
			out.errorf("%v", err)
			return exitUsage
		}
		opts = append(opts, client.WithTLS(cfg))
	}
	dialCtx, cancel := context.WithTimeout(ctx, cmd.cfg.timeout)
	c, err := client.Dial(dialCtx, cmd.cfg.target, opts...)
	cancel()
	if err != nil {
		out.errorf("could not open the stream to %s: %s", cmd.cfg.target, describe(err))
		if hint := openHint(cmd.cfg.tls, err); hint != "" {
			out.errorf("%s", hint)
		}
		return exitStream
	}
	defer c.Close()
	if cmd.cfg.verbose {
		out.errorf("stream open to %s, reconnecting on faults", cmd.cfg.target)
	}
	d := &reconnectDriver{c: c, session: cmd.cfg.session, verbose: cmd.cfg.verbose, out: out}
	return d.drive(ctx, stdin)
}

// reconnectDriver drives a client: stdin lines become its calls, its
// events become output lines.
type reconnectDriver struct {
	c       *client.Client
	session string // text mode's session, "" for scripted mode
	verbose bool
	out     *output
}

// drive runs until stdin ends and every publication is done (exit 0), the
// client closes itself (replaced, refused token: exit 1), output fails, or
// ctx ends (exit 1). As in the plain driver, the stdin reader is the one
// goroutine it does not wait for; see driver.drive.
func (d *reconnectDriver) drive(ctx context.Context, stdin io.Reader) int {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	defer close(done)
	lines := make(chan input)
	go readLines(stdin, lines, done)

	var wg sync.WaitGroup
	defer wg.Wait()
	inputDone := make(chan struct{})
	wg.Go(func() {
		d.send(ctx, lines)
		close(inputDone)
	})
	printed := make(chan error, 1)
	wg.Go(func() { printed <- d.print() })

	select {
	case <-inputDone:
		d.c.Close()
		if err := <-printed; err != nil {
			d.out.errorf("%v", err)
			return exitStream
		}
		return exitOK
	case err := <-printed:
		// The client closed itself, or output failed: nothing more can be
		// shown, so stop sending too.
		cancel()
		if err == nil {
			err = d.c.Err()
		}
		d.out.errorf("stream ended: %v", describeEnd(err))
		return exitStream
	case <-ctx.Done():
		d.c.Close()
		<-printed
		d.out.errorf("stream ended: %s", describe(ctx.Err()))
		return exitStream
	}
}

// describeEnd formats why the client ended: a gRPC status as grpc-go
// formats it, anything else as is.
func describeEnd(err error) string {
	if errors.Is(err, client.ErrReplaced) {
		return err.Error()
	}
	if errors.Is(err, errOutput) {
		return err.Error()
	}
	return describe(err)
}

// send turns stdin lines into calls until stdin ends, then waits for the
// publications to be delivered back. Calls wait for the server's answer,
// so lines are served in order; a refusal shows as the error line the
// printer writes, other failures are reported on stderr.
func (d *reconnectDriver) send(ctx context.Context, lines <-chan input) {
	pubs := make(chan *client.Publication, 64)
	var watch sync.WaitGroup
	watch.Go(func() { d.watch(ctx, pubs) })
	defer watch.Wait()
	defer close(pubs)

	if d.session != "" {
		if _, err := d.c.Join(ctx, d.session); err != nil {
			d.report(0, "join", err)
			return
		}
	}
	n := 0
	for {
		var in input
		select {
		case in = <-lines:
		case <-ctx.Done():
			return
		}
		if in.err != nil {
			if !errors.Is(in.err, io.EOF) {
				d.out.errorf("reading stdin: %v; ending", in.err)
			}
			return
		}
		n++
		msg, err := parseLine(in.line, d.session, time.Now())
		if err != nil {
			d.out.errorf("line %d: %v; skipped", n, err)
			continue
		}
		if msg == nil {
			continue
		}
		if d.verbose {
			if line, err := encodeMessage(msg); err == nil {
				d.out.errorf("> %s", bytes.TrimSuffix(line, []byte("\n")))
			}
		}
		if p := d.call(ctx, n, msg); p != nil {
			select {
			case pubs <- p:
			case <-ctx.Done():
				return
			}
		}
	}
}

// call makes the client call msg asks for, and returns the publication a
// data message makes.
func (d *reconnectDriver) call(ctx context.Context, n int, msg *streamsvc.DataMessage) *client.Publication {
	session := deref(msg.SessionID)
	action := deref(msg.Action)
	switch {
	case msg.Type == "heartbeat" || msg.Type == "health_check":
		return nil // the client sends its own
	case msg.Type == "data":
		if session == "" {
			d.out.errorf("line %d: a data message needs a session_id; skipped", n)
			return nil
		}
		p, err := d.c.PublishAsync(ctx, session, deref(msg.ID), msg.Data)
		if err != nil {
			d.report(n, "publish", err)
			return nil
		}
		return p
	case msg.Type != "control":
		d.out.errorf("line %d: unknown type %q; skipped", n, msg.Type)
		return nil
	case session == "":
		d.out.errorf("line %d: a control message needs a session_id; skipped", n)
		return nil
	}
	var err error
	switch action {
	case "join":
		var opts []client.JoinOption
		if msg.Seq != nil {
			opts = append(opts, client.From(*msg.Seq, deref(msg.Epoch)))
		}
		_, err = d.c.Join(ctx, session, opts...)
	case "leave":
		err = d.c.Leave(ctx, session)
	case "pause":
		err = d.c.Pause(ctx, session)
	case "resume":
		_, err = d.c.Resume(ctx, session)
	default:
		d.out.errorf("line %d: action %q is not a client action; skipped", n, action)
		return nil
	}
	if err != nil {
		d.report(n, action, err)
	}
	return nil
}

// report tells of a call that failed (made for line n of stdin; 0 for
// none), unless the printer shows it already
// (a refusal by the server is an error line on stdout) or the client is
// ending (the end is reported once, by drive).
func (d *reconnectDriver) report(n int, what string, err error) {
	var refused *client.ServerError
	switch {
	case errors.As(err, &refused), errors.Is(err, context.Canceled),
		errors.Is(err, client.ErrClosed), errors.Is(err, client.ErrReplaced), d.c.Err() != nil:
		return
	case n <= 0:
		d.out.errorf("%s: %v", what, err)
	default:
		d.out.errorf("line %d: %s: %v", n, what, err)
	}
}

// watch waits for each publication in turn and reports those that fail.
func (d *reconnectDriver) watch(ctx context.Context, pubs <-chan *client.Publication) {
	for p := range pubs {
		if _, err := p.Wait(ctx); err != nil {
			d.report(-1, "publish "+p.ID(), err)
		}
	}
}

// print writes every event until the client closes, and returns why it
// closed: nil after Close, the cause when it closed itself, or an error
// wrapping errOutput.
func (d *reconnectDriver) print() error {
	lost := false // the stream was lost: the next connection is a reconnection
	for ev := range d.c.Events() {
		var line []byte
		var err error
		switch ev := ev.(type) {
		case *client.Message:
			m := &streamsvc.DataMessage{Type: "data", SessionID: &ev.Session, Data: ev.Data, Seq: &ev.Seq,
				ClientID: &ev.Sender, Epoch: &ev.Epoch}
			if ev.ID != "" {
				m.ID = &ev.ID
			}
			if !ev.Time.IsZero() {
				ts := ev.Time.UnixMilli()
				m.Timestamp = &ts
			}
			line, err = d.format(m)
		case *client.Joined:
			if d.session != "" {
				verb := "joined"
				switch {
				case ev.Resume:
					verb = "resumed"
				case ev.Rejoin:
					verb = "rejoined"
				}
				line = joinedLine(verb, ev.Session, ev.Seq, ev.Recovered)
				break
			}
			line, err = encodeMessage(&streamsvc.DataMessage{Type: "control", Action: ptr("joined"), SessionID: &ev.Session,
				Seq: &ev.Seq, Epoch: &ev.Epoch, Recovered: &ev.Recovered})
		case *client.ServerError:
			m := &streamsvc.DataMessage{Type: "control", Action: ptr("error"), Reason: &ev.Reason}
			if ev.Session != "" {
				m.SessionID = &ev.Session
			}
			if ev.ID != "" {
				m.ID = &ev.ID
			}
			line, err = d.format(m)
		case *client.StateChange:
			switch ev.State {
			case client.StateConnected:
				if lost {
					d.state("reconnected", "reconnected as "+ev.ClientID)
				}
				if d.session == "" || !lost {
					line, err = d.format(&streamsvc.DataMessage{Type: "control", Action: ptr("welcome"), ClientID: &ev.ClientID})
				}
				lost = false
			case client.StateReconnecting:
				lost = true
				d.state("reconnecting: "+describe(ev.Cause), "reconnecting… ("+describe(ev.Cause)+")")
			case client.StateClosed:
				return ev.Cause
			}
		}
		if err != nil {
			d.out.errorf("an event that cannot be printed: %v; skipped", err)
			continue
		}
		if line != nil {
			if err := d.out.print(line); err != nil {
				return fmt.Errorf("%w: %w", errOutput, err)
			}
		}
	}
	return nil
}

// format renders a message the way the plain driver does.
func (d *reconnectDriver) format(m *streamsvc.DataMessage) ([]byte, error) {
	if d.session != "" {
		return textMessage(m)
	}
	return encodeMessage(m)
}

// state reports a connection state change: on stderr in scripted mode, so
// that stdout stays JSON lines, and as a line of the conversation in text
// mode.
func (d *reconnectDriver) state(scripted, text string) {
	if d.session == "" {
		d.out.errorf("%s", scripted)
		return
	}
	_ = d.out.print([]byte(text + "\n")) // a failing stdout shows on the next line printed
}
