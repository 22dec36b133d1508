package main

import (
	"testing"

	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
)

func TestTextMessage(t *testing.T) {
	control := func(action string, f func(*streamsvc.DataMessage)) *streamsvc.DataMessage {
		m := &streamsvc.DataMessage{Type: "control", Action: ptr(action)}
		if f != nil {
			f(m)
		}
		return m
	}
	tests := []struct {
		name string
		msg  *streamsvc.DataMessage
		want string
	}{
		{"delivery", &streamsvc.DataMessage{Type: "data", SessionID: ptr("lobby"), ClientID: ptr("bob"), Data: []byte("hi")}, "[lobby] bob: hi\n"},
		{"heartbeat", &streamsvc.DataMessage{Type: "heartbeat"}, ""},
		{"probe", &streamsvc.DataMessage{Type: "health_check"}, "the server checks that you are there: any line answers it\n"},
		{"welcome", control("welcome", func(m *streamsvc.DataMessage) { m.ClientID = ptr("alice") }), "connected as alice\n"},
		{"joined", control("joined", func(m *streamsvc.DataMessage) {
			m.SessionID, m.Seq, m.Recovered = ptr("lobby"), ptr(uint64(7)), ptr(true)
		}), "joined lobby at seq 7\n"},
		{"joined with a loss", control("joined", func(m *streamsvc.DataMessage) {
			m.SessionID, m.Seq, m.Recovered = ptr("lobby"), ptr(uint64(7)), ptr(false)
		}), "joined lobby at seq 7, but messages were lost (recovered: false)\n"},
		{"resumed", control("resumed", func(m *streamsvc.DataMessage) { m.SessionID, m.Seq = ptr("lobby"), ptr(uint64(9)) }), "resumed lobby at seq 9\n"},
		{"left", control("left", func(m *streamsvc.DataMessage) { m.SessionID = ptr("lobby") }), "left lobby\n"},
		{"paused", control("paused", func(m *streamsvc.DataMessage) { m.SessionID = ptr("lobby") }), "paused lobby\n"},
		{"error", control("error", func(m *streamsvc.DataMessage) {
			m.Reason, m.SessionID, m.ID = ptr("permission denied"), ptr("vip"), ptr("m1")
		}), "error: permission denied (session vip, id m1)\n"},
		{"error about nothing known", control("error", func(m *streamsvc.DataMessage) { m.Reason = ptr("bad\nline") }), "error: \"bad\\nline\"\n"},
		{"goaway", control("goaway", func(m *streamsvc.DataMessage) { m.Reason = ptr("shutdown") }), "the server is ending the stream: shutdown\n"},
		{"no words for it", &streamsvc.DataMessage{Type: "control"}, `{"type":"control"}` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := textMessage(tt.msg)
			if err != nil || string(got) != tt.want {
				t.Errorf("textMessage = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}
