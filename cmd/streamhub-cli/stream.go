package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
)

// errOutput marks a failure to write the CLI's own output, as opposed to the
// stream ending.
var errOutput = errors.New("writing output")

// driver drives one open stream: stdin lines become sent messages, received
// messages become stdout lines.
type driver struct {
	stream streamsvc.StreamDataClientStream
	// ended returns the error that ended the stream (io.EOF for OK), or nil
	// while it is open; see endRecorder.
	ended func() error
	// session is the -session flag: "" for scripted mode, else text mode.
	session string
	// verbose echoes sent messages on stderr.
	verbose bool
	out     *output
}

// input is one read from stdin: a line, or the error that ended stdin.
type input struct {
	line []byte
	err  error
}

// drive sends stdin to the stream and prints what the server sends until the
// stream ends, and returns the error that ended it: io.EOF when the server
// ended it with OK, a gRPC error otherwise, or an error wrapping errOutput.
// cancel must end the stream: drive calls it on its way out to release a
// Send that flow control is holding.
//
// The sender runs on its own goroutine and drive waits for it. The stdin
// reader is the one goroutine drive does not wait for: a Read cannot be
// interrupted, and when the server ends the stream while stdin is still open
// drive must return without waiting for more input. The reader touches
// nothing but stdin and its channel, and exits as soon as its Read returns
// (in tests: when the test closes the pipe). For the process's main that
// Read is on os.Stdin and the process exits anyway.
func (d *driver) drive(stdin io.Reader, cancel context.CancelFunc) error {
	done := make(chan struct{})
	lines := make(chan input)
	go readLines(stdin, lines, done)

	var wg sync.WaitGroup
	wg.Go(func() { d.send(lines, done) })

	end := d.receive()
	close(done)
	cancel()
	wg.Wait()
	return end
}

// readLines hands stdin to lines one line at a time, then the error that
// ended it (io.EOF at end of input). It stops early when done closes.
func readLines(r io.Reader, lines chan<- input, done <-chan struct{}) {
	br := bufio.NewReader(r)
	for {
		// ReadBytes, unlike bufio.Scanner, has no line length limit: a
		// message may carry megabytes of base64.
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			select {
			case lines <- input{line: line}:
			case <-done:
				return
			}
		}
		if err != nil {
			select {
			case lines <- input{err: err}:
			case <-done:
			}
			return
		}
	}
}

// send is the sender: it sends each line as a message until stdin ends, then
// half-closes the stream, so the server flushes what is queued for this
// client and ends the stream with OK.
func (d *driver) send(lines <-chan input, done <-chan struct{}) {
	if d.session != "" {
		// Join first so the user sees the others' messages at once, not
		// only after typing something.
		join := &streamsvc.DataMessage{Type: "control", Action: ptr("join"), SessionID: ptr(d.session)}
		if !d.sendOne(join, 0) {
			return
		}
	}
	n := 0 // line number, blank lines included, to match an editor's
	for {
		var in input
		select {
		case in = <-lines:
		case <-done:
			return
		}
		if in.err != nil {
			if !errors.Is(in.err, io.EOF) {
				d.out.errorf("reading stdin: %v; closing the stream", in.err)
			}
			if err := d.stream.Close(); err != nil {
				d.out.errorf("closing the stream: %v", err)
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
			continue // blank line
		}
		if !d.sendOne(msg, n) {
			return
		}
	}
}

// sendOne sends msg, read from line n of stdin (0 for the join of text
// mode), and reports whether the stream can take more.
func (d *driver) sendOne(msg *streamsvc.DataMessage, n int) bool {
	if d.verbose {
		if line, err := encodeMessage(msg); err == nil {
			d.out.errorf("> %s", bytes.TrimSuffix(line, []byte("\n")))
		}
	}
	err := d.stream.Send(msg)
	switch {
	case err == nil:
		return true
	case errors.Is(err, io.EOF):
		// The stream is over; the receiver reports its status.
		return false
	default:
		// grpc-go fails a Send with anything but io.EOF only for a
		// problem with this message (e.g. it cannot be encoded); if the
		// stream did end, the next Send says io.EOF.
		if n == 0 {
			d.out.errorf("send join: %v", err)
		} else {
			d.out.errorf("line %d: send: %v", n, err)
		}
		return true
	}
}

// receive is the receiver: it prints every message until the stream ends,
// and returns what ended it.
func (d *driver) receive() error {
	for {
		msg, err := d.stream.Recv()
		if err != nil {
			if end := d.ended(); end != nil {
				return end
			}
			// The generated Recv validates each message; its error is
			// about this one message and the stream is still usable.
			d.out.errorf("received an invalid message: %v; skipped", err)
			continue
		}
		line, err := d.format(msg)
		if err != nil {
			d.out.errorf("received a message that cannot be printed: %v; skipped", err)
			continue
		}
		if line == nil {
			continue // nothing to show in text mode
		}
		if err := d.out.print(line); err != nil {
			return fmt.Errorf("%w: %w", errOutput, err)
		}
	}
}

// format renders a received message as an output line, or nil for none.
func (d *driver) format(m *streamsvc.DataMessage) ([]byte, error) {
	if d.session != "" {
		return textMessage(m)
	}
	return encodeMessage(m)
}

// parseLine turns one stdin line into the message to send, or nil for a
// blank line. In text mode (session set) a line is the payload of a data
// message to the session, unless it starts with "{" and so is JSON.
func parseLine(line []byte, session string, now time.Time) (*streamsvc.DataMessage, error) {
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(bytes.TrimSpace(line)) == 0 {
		return nil, nil
	}
	if session == "" || line[0] == '{' {
		return decodeMessage(line)
	}
	return &streamsvc.DataMessage{
		Type:      "data",
		SessionID: ptr(session),
		Data:      line,
		Timestamp: ptr(now.UnixMilli()), // the sender's clock, per the wire contract
	}, nil
}

// output serializes the CLI's writes: the sender reports bad lines on stderr
// while the receiver prints messages, and their lines must not interleave.
type output struct {
	mu     sync.Mutex // guards writes to stdout and stderr
	prog   string     // prefix of stderr lines
	stdout io.Writer
	stderr io.Writer
}

// print writes one line to stdout.
func (o *output) print(line []byte) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, err := o.stdout.Write(line)
	return err
}

// errorf writes one line to stderr. Its write errors are dropped: stderr is
// where they would be reported.
func (o *output) errorf(format string, args ...any) {
	line := fmt.Appendf(nil, "%s: "+format+"\n", append([]any{o.prog}, args...)...)
	o.mu.Lock()
	defer o.mu.Unlock()
	_, _ = o.stderr.Write(line)
}

func ptr[T any](v T) *T { return &v }

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
