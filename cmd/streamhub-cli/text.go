package main

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
)

// textMessage renders a received message for text mode (-session): a
// delivery as "[session] client: text", the server's control messages as
// sentences, and nothing for heartbeats. A message text mode has no words
// for stays a JSON line.
func textMessage(m *streamsvc.DataMessage) ([]byte, error) {
	session := deref(m.SessionID)
	switch m.Type {
	case "data":
		return textLine(m), nil
	case "heartbeat":
		return nil, nil
	case "health_check":
		return []byte("the server checks that you are there: any line answers it\n"), nil
	case "control":
		switch deref(m.Action) {
		case "welcome":
			return fmt.Appendf(nil, "connected as %s\n", deref(m.ClientID)), nil
		case "joined":
			return joinedLine("joined", session, derefSeq(m.Seq), m.Recovered == nil || *m.Recovered), nil
		case "resumed":
			return joinedLine("resumed", session, derefSeq(m.Seq), m.Recovered == nil || *m.Recovered), nil
		case "left":
			return fmt.Appendf(nil, "left %s\n", session), nil
		case "paused":
			return fmt.Appendf(nil, "paused %s\n", session), nil
		case "error":
			return errorLine(deref(m.Reason), session, deref(m.ID)), nil
		case "goaway":
			return fmt.Appendf(nil, "the server is ending the stream: %s\n", deref(m.Reason)), nil
		}
	}
	return encodeMessage(m)
}

// joinedLine says a session was joined (or rejoined, or resumed) at seq,
// and whether messages were lost on the way.
func joinedLine(verb, session string, seq uint64, recovered bool) []byte {
	line := fmt.Appendf(nil, "%s %s at seq %d", verb, session, seq)
	if !recovered {
		line = append(line, ", but messages were lost (recovered: false)"...)
	}
	return append(line, '\n')
}

// errorLine renders a refusal by the server.
func errorLine(reason, session, id string) []byte {
	var about []string
	if session != "" {
		about = append(about, "session "+session)
	}
	if id != "" {
		about = append(about, "id "+id)
	}
	if len(about) == 0 {
		return fmt.Appendf(nil, "error: %s\n", printable([]byte(reason)))
	}
	return fmt.Appendf(nil, "error: %s (%s)\n", printable([]byte(reason)), strings.Join(about, ", "))
}

// textLine renders a delivery for text mode as "[session] client: text".
func textLine(m *streamsvc.DataMessage) []byte {
	return fmt.Appendf(nil, "[%s] %s: %s\n", deref(m.SessionID), deref(m.ClientID), printable(m.Data))
}

// printable returns data as text when it is readable as such, and quoted
// otherwise, so binary payloads or embedded newlines cannot garble the
// terminal or break the one-line-per-message output.
func printable(data []byte) string {
	s := string(data)
	if !utf8.ValidString(s) {
		return strconv.Quote(s)
	}
	for _, r := range s {
		if r != '\t' && !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

func derefSeq(p *uint64) uint64 {
	if p == nil {
		return 0
	}
	return *p
}
