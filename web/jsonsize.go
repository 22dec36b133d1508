package web

import (
	"encoding/base64"
	"strconv"
	"unicode/utf8"

	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
)

// jsonSize is the size of m's JSON text frame as the generated stream
// writes it (encoding/json with HTML escaping, and a newline), computed
// without encoding: the byte counts of StreamHub's metrics. For a message
// a client sent, it is the size of its canonical encoding, whatever
// whitespace the client used.
func jsonSize(m *streamsvc.DataMessage) int {
	n := len(`{"type":}`+"\n") + jsonStringSize(m.Type)
	str := func(key string, v *string) {
		if v != nil {
			n += len(`,"":`) + len(key) + jsonStringSize(*v)
		}
	}
	str("session_id", m.SessionID)
	if len(m.Data) > 0 {
		n += len(`,"data":""`) + base64.StdEncoding.EncodedLen(len(m.Data))
	}
	if m.Timestamp != nil {
		n += len(`,"timestamp":`) + len(strconv.AppendInt(make([]byte, 0, 20), *m.Timestamp, 10))
	}
	if m.Seq != nil {
		n += len(`,"seq":`) + len(strconv.AppendUint(make([]byte, 0, 20), *m.Seq, 10))
	}
	str("action", m.Action)
	str("client_id", m.ClientID)
	str("id", m.ID)
	str("reason", m.Reason)
	if m.Recovered != nil {
		n += len(`,"recovered":`) + len(strconv.FormatBool(*m.Recovered))
	}
	str("epoch", m.Epoch)
	return n
}

// jsonStringSize is the size of s as a JSON string by encoding/json (as
// of the pinned go1.27): quotes, short escapes, \u00XX for other control
// characters and for <, > and &, \u2028 and \u2029 escaped, and each
// invalid byte replaced by U+FFFD, written as is. TestJSONSize checks it
// against the encoder, so a toolchain that encodes otherwise fails it.
func jsonStringSize(s string) int {
	n := 2
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			switch {
			case b == '"' || b == '\\' || b == '\b' || b == '\f' || b == '\n' || b == '\r' || b == '\t':
				n += 2
			case b < 0x20 || b == '<' || b == '>' || b == '&':
				n += 6
			default:
				n++
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			n += utf8.RuneLen(utf8.RuneError)
		case r == '\u2028', r == '\u2029':
			n += 6
		default:
			n += size
		}
		i += size
	}
	return n
}
