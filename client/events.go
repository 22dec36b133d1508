package client

import (
	"fmt"
	"time"
)

// Event is what the client tells its user, in one ordered stream (see
// Client.Events): a *Message, a *Joined, a *ServerError or a *StateChange.
type Event interface {
	isEvent()
}

// Message is a data message delivered to a session the client is a member
// of, its own included. Within a session the client hands each (Epoch,
// Seq) over once, in Seq order.
type Message struct {
	// Session is the session the message was published to.
	Session string
	// Seq is the message's sequence number in its session.
	Seq uint64
	// Epoch identifies the incarnation of the session's history Seq
	// counts in. A new epoch starts again at 1.
	Epoch string
	// Sender is the client ID of the publisher.
	Sender string
	// ID is the publisher's message ID, "" if it gave none.
	ID string
	// Data is the payload. It belongs to the receiver.
	Data []byte
	// Time is when the server accepted the message.
	Time time.Time

	pub *Publication // the client's own publication this delivery completes, once the user has it
}

// Joined says the server made the client a member of a session, or made it
// one again: after Join, Resume, for every session after each reconnect,
// and when the session started a new epoch while the client was a member.
type Joined struct {
	// Session is the session joined.
	Session string
	// Seq is the session's last sequence number when the join was served:
	// messages up to it that the client had not received are replayed
	// next, then live ones follow.
	Seq uint64
	// Epoch is the session's current epoch.
	Epoch string
	// Recovered says every message after the client's position was
	// replayed. False means some were lost: history no longer held them,
	// or the session has a new epoch (the server lost its history, or the
	// session expired and its name was reused), in which case the client
	// goes on from the start of the new epoch.
	Recovered bool
	// Rejoin is set when the client was made a member again without a
	// call of its user: it rejoined by itself after a reconnect, or the
	// session started a new epoch under it (then Recovered is false, and
	// the new epoch's messages follow from seq 1, nothing of the old
	// epoch after them).
	Rejoin bool
	// Resume is set when the join answers Resume.
	Resume bool
}

// ServerError is a message the server refused, with the reason it gave.
// The stream stays open. Errors about a call the user made (Join, Publish,
// ...) are both returned by the call and sent as events.
type ServerError struct {
	// Session is the session the refused message was about, if known.
	Session string
	// ID is the refused message's ID, if known: a publication's ID for a
	// refused publish.
	ID string
	// Reason is the server's explanation.
	Reason string
}

// Error describes the refusal.
func (e *ServerError) Error() string {
	switch {
	case e.Session != "" && e.ID != "":
		return fmt.Sprintf("streamhub: refused (session %s, id %s): %s", e.Session, e.ID, e.Reason)
	case e.Session != "":
		return fmt.Sprintf("streamhub: refused (session %s): %s", e.Session, e.Reason)
	default:
		return "streamhub: refused: " + e.Reason
	}
}

// State is the client's connection state.
type State int

// The states a client goes through: Connecting once, then Connected and
// Reconnecting in turn, and Closed at the end.
const (
	// StateConnecting: Dial is opening the first stream.
	StateConnecting State = iota + 1
	// StateConnected: a stream is open and the server welcomed the client;
	// the client rejoins its sessions.
	StateConnected
	// StateReconnecting: the stream was lost (Cause says why); the client
	// tries again, with backoff, until it connects or is closed.
	StateReconnecting
	// StateClosed: the client is closed, by Close or for good (Cause:
	// ErrReplaced, an authentication failure, ...). No event follows.
	StateClosed
)

// String names the state as the documentation does.
func (s State) String() string {
	switch s {
	case StateConnecting:
		return "connecting"
	case StateConnected:
		return "connected"
	case StateReconnecting:
		return "reconnecting"
	case StateClosed:
		return "closed"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// StateChange says the connection state changed.
type StateChange struct {
	// State is the new state.
	State State
	// Cause is why the stream was lost (StateReconnecting) or why the
	// client closed itself (StateClosed; nil after Close). A stream the
	// server ended carries its gRPC status: status.Code(Cause).
	Cause error
	// ClientID is the identity the server welcomed the client with
	// (StateConnected).
	ClientID string
}

func (*Message) isEvent()     {}
func (*Joined) isEvent()      {}
func (*ServerError) isEvent() {}
func (*StateChange) isEvent() {}
