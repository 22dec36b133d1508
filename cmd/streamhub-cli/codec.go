package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
)

// jsonMessage is the JSON line form of a DataMessage, the same in both
// directions: the keys are the field names of the wire contract (SPEC §2).
// Pointers with omitempty keep "absent" and "zero" apart, so a join with
// "seq":0 (replay everything) survives the trip while an absent seq stays
// absent.
type jsonMessage struct {
	Type      string  `json:"type"`
	SessionID *string `json:"session_id,omitempty"`
	Data      []byte  `json:"data,omitempty"` // base64, as encoding/json does for []byte
	Timestamp *int64  `json:"timestamp,omitempty"`
	Seq       *uint64 `json:"seq,omitempty"`
	Action    *string `json:"action,omitempty"`
	ClientID  *string `json:"client_id,omitempty"`
	ID        *string `json:"id,omitempty"`
	Reason    *string `json:"reason,omitempty"`
	Recovered *bool   `json:"recovered,omitempty"`
	Epoch     *string `json:"epoch,omitempty"`
}

// jsonKeys are the only keys a JSON line may have. encoding/json matches
// keys case-insensitively even with DisallowUnknownFields, so decodeMessage
// checks them against this list itself; codec_test.go keeps it in step with
// the struct tags above.
var jsonKeys = map[string]bool{
	"type": true, "session_id": true, "data": true, "timestamp": true,
	"seq": true, "action": true, "client_id": true, "id": true,
	"reason": true, "recovered": true, "epoch": true,
}

// decodeMessage parses one JSON line into a message to send. It checks only
// what the design requires of every message (a type); whether the message
// makes sense is the server's call, and its "control error" reply is more
// useful to someone exploring the API than a client-side refusal.
func decodeMessage(line []byte) (*streamsvc.DataMessage, error) {
	// The first pass rejects anything but a single object (json.Unmarshal
	// also refuses trailing data) and any key that is not spelled exactly.
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(line, &fields); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	for k := range fields {
		if !jsonKeys[k] {
			return nil, fmt.Errorf("unknown key %q", k)
		}
	}
	var m jsonMessage
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("invalid message: %w", err)
	}
	if m.Type == "" {
		return nil, errors.New(`missing "type"`)
	}
	return m.dataMessage(), nil
}

// encodeMessage renders a message as one JSON line, newline included.
func encodeMessage(m *streamsvc.DataMessage) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	// Reasons and IDs are shown to people and piped to jq; "<" is clearer
	// than "\u003c" and just as valid.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(newJSONMessage(m)); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// newJSONMessage converts a received message to its JSON form.
func newJSONMessage(m *streamsvc.DataMessage) jsonMessage {
	return jsonMessage{
		Type:      m.Type,
		SessionID: m.SessionID,
		Data:      m.Data,
		Timestamp: m.Timestamp,
		Seq:       m.Seq,
		Action:    m.Action,
		ClientID:  m.ClientID,
		ID:        m.ID,
		Reason:    m.Reason,
		Recovered: m.Recovered,
		Epoch:     m.Epoch,
	}
}

// dataMessage converts a parsed JSON line to the message the generated
// client sends.
func (j jsonMessage) dataMessage() *streamsvc.DataMessage {
	return &streamsvc.DataMessage{
		Type:      j.Type,
		SessionID: j.SessionID,
		Data:      j.Data,
		Timestamp: j.Timestamp,
		Seq:       j.Seq,
		Action:    j.Action,
		ClientID:  j.ClientID,
		ID:        j.ID,
		Reason:    j.Reason,
		Recovered: j.Recovered,
		Epoch:     j.Epoch,
	}
}
