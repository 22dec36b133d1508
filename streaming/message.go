package streaming

import (
	"time"

	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
)

// Message types and control actions of SPEC §2.
const (
	typeData        = "data"
	typeHeartbeat   = "heartbeat"
	typeControl     = "control"
	typeHealthCheck = "health_check"
)

// Control actions. They are variables because outgoing messages point at
// them; nothing may assign to them.
var (
	actJoin    = "join"
	actLeave   = "leave"
	actPause   = "pause"
	actResume  = "resume"
	actWelcome = "welcome"
	actJoined  = "joined"
	actLeft    = "left"
	actPaused  = "paused"
	actResumed = "resumed"
	actError   = "error"
	actGoaway  = "goaway"
)

// control builds a control message about a session.
func control(action *string, session *string) *streamsvc.DataMessage {
	return &streamsvc.DataMessage{Type: typeControl, Action: action, SessionID: session}
}

// stamped builds a message of the given type carrying only the time.
func stamped(typ string, now time.Time) *streamsvc.DataMessage {
	ts := now.UnixMilli()
	return &streamsvc.DataMessage{Type: typ, Timestamp: &ts}
}

func ptr[T any](v T) *T { return &v }
