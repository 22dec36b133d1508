package main

import (
	"reflect"
	"strings"
	"testing"

	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
)

// fullMessage has every field set; fullLine is its JSON line.
var (
	fullMessage = &streamsvc.DataMessage{
		Type:      "data",
		SessionID: ptr("lobby"),
		Data:      []byte("hello\x00world"),
		Timestamp: ptr(int64(1700000000123)),
		Seq:       ptr(uint64(18446744073709551615)),
		Action:    ptr("joined"),
		ClientID:  ptr("alice"),
		ID:        ptr("m-1"),
		Reason:    ptr("a <reason> & more"),
		Recovered: ptr(true),
		Epoch:     ptr("e1"),
	}
	fullLine = `{"type":"data","session_id":"lobby","data":"aGVsbG8Ad29ybGQ=","timestamp":1700000000123,` +
		`"seq":18446744073709551615,"action":"joined","client_id":"alice","id":"m-1",` +
		`"reason":"a <reason> & more","recovered":true,"epoch":"e1"}`
)

func TestEncodeMessage(t *testing.T) {
	tests := []struct {
		name string
		msg  *streamsvc.DataMessage
		want string
	}{
		{"every field", fullMessage, fullLine},
		{"absent fields omitted", &streamsvc.DataMessage{Type: "heartbeat"}, `{"type":"heartbeat"}`},
		{
			// A join with seq 0 asks for the whole history: zero is not absent.
			"zero values kept",
			&streamsvc.DataMessage{Type: "control", Seq: ptr(uint64(0)), Recovered: ptr(false), Timestamp: ptr(int64(0)), Reason: ptr("")},
			`{"type":"control","timestamp":0,"seq":0,"reason":"","recovered":false}`,
		},
		{"negative timestamp", &streamsvc.DataMessage{Type: "data", Timestamp: ptr(int64(-1))}, `{"type":"data","timestamp":-1}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := encodeMessage(tt.msg)
			if err != nil {
				t.Fatalf("encodeMessage: %v", err)
			}
			if string(got) != tt.want+"\n" {
				t.Errorf("encodeMessage =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestDecodeMessage(t *testing.T) {
	tests := []struct {
		name    string
		line    string
		want    *streamsvc.DataMessage
		wantErr string // substring of the error; "" for success
	}{
		{name: "every field", line: fullLine, want: fullMessage},
		{name: "type only", line: `{"type":"heartbeat"}`, want: &streamsvc.DataMessage{Type: "heartbeat"}},
		{
			name: "join with seq 0",
			line: ` {"type":"control","action":"join","session_id":"s","seq":0} `,
			want: &streamsvc.DataMessage{Type: "control", Action: ptr("join"), SessionID: ptr("s"), Seq: ptr(uint64(0))},
		},
		{
			name: "base64 data",
			line: `{"type":"data","session_id":"s","data":"aGk="}`,
			want: &streamsvc.DataMessage{Type: "data", SessionID: ptr("s"), Data: []byte("hi")},
		},
		{
			// Whether the type is one the server knows is the server's call.
			name: "unknown type passed on",
			line: `{"type":"bogus"}`,
			want: &streamsvc.DataMessage{Type: "bogus"},
		},
		{name: "unknown key", line: `{"type":"data","colour":"red"}`, wantErr: `unknown key "colour"`},
		{name: "key in other case", line: `{"Type":"data"}`, wantErr: `unknown key "Type"`},
		{name: "missing type", line: `{"session_id":"s"}`, wantErr: `missing "type"`},
		{name: "empty type", line: `{"type":""}`, wantErr: `missing "type"`},
		{name: "null", line: `null`, wantErr: `missing "type"`},
		{name: "not JSON", line: `hello`, wantErr: "invalid JSON"},
		{name: "not an object", line: `["type"]`, wantErr: "invalid JSON"},
		{name: "trailing data", line: `{"type":"data"} {"type":"data"}`, wantErr: "invalid JSON"},
		{name: "bad base64", line: `{"type":"data","data":"***"}`, wantErr: "base64"},
		{name: "seq as string", line: `{"type":"data","seq":"5"}`, wantErr: "seq"},
		{name: "negative seq", line: `{"type":"data","seq":-1}`, wantErr: "seq"},
		{name: "fractional timestamp", line: `{"type":"data","timestamp":1.5}`, wantErr: "timestamp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeMessage([]byte(tt.line))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("decodeMessage error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("decodeMessage: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("decodeMessage =\n%+v\nwant\n%+v", newJSONMessage(got), newJSONMessage(tt.want))
			}
		})
	}
}

// TestCodecRoundTrip checks that output can be fed back as input unchanged,
// as the CLI promises for piping one CLI into another.
func TestCodecRoundTrip(t *testing.T) {
	for _, line := range []string{
		fullLine,
		`{"type":"heartbeat"}`,
		`{"type":"control","session_id":"s","seq":0,"action":"join","epoch":"x"}`,
		`{"type":"control","action":"error","id":"m-2","reason":"quote \" and \\ and ünïcode"}`,
	} {
		msg, err := decodeMessage([]byte(line))
		if err != nil {
			t.Fatalf("decodeMessage(%s): %v", line, err)
		}
		got, err := encodeMessage(msg)
		if err != nil {
			t.Fatalf("encodeMessage: %v", err)
		}
		if string(got) != line+"\n" {
			t.Errorf("round trip of\n%s\ngave\n%s", line, got)
		}
	}
}

// TestJSONKeysMatchTags keeps decodeMessage's key check in step with the
// struct tags that encodeMessage writes.
func TestJSONKeysMatchTags(t *testing.T) {
	typ := reflect.TypeFor[jsonMessage]()
	tags := map[string]bool{}
	for i := range typ.NumField() {
		name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
		tags[name] = true
	}
	if !reflect.DeepEqual(tags, jsonKeys) {
		t.Errorf("struct tags %v, jsonKeys %v", tags, jsonKeys)
	}
	// Every field of the generated type has a key: a field added to the
	// design must be added here too.
	if n, m := reflect.TypeFor[streamsvc.DataMessage]().NumField(), typ.NumField(); n != m {
		t.Errorf("DataMessage has %d fields, jsonMessage %d", n, m)
	}
}
