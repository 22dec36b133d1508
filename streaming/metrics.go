package streaming

import "time"

// Metrics receives the events the service counts. Implementations must be
// cheap and safe for concurrent use: they sit on the per-message path.
type Metrics interface {
	// StreamOpened counts a stream accepted into the pool.
	StreamOpened()
	// StreamClosed counts a stream's end; reason is the
	// streamhub_disconnects_total label when the server ended it, else "".
	StreamClosed(reason string, lifetime time.Duration)
	// MessageReceived counts a message read from a client.
	MessageReceived(payloadBytes int)
	// MessageSent counts a message written to a client.
	MessageSent(payloadBytes int)
	// ReceiveFailed and SendFailed count failed reads and writes.
	ReceiveFailed()
	SendFailed()
	// Delivered records the time from a data message's acceptance to its
	// send to one member.
	Delivered(latency time.Duration)
}

// nopMetrics is the Metrics of a service configured without any.
type nopMetrics struct{}

func (nopMetrics) StreamOpened()                      {}
func (nopMetrics) StreamClosed(string, time.Duration) {}
func (nopMetrics) MessageReceived(int)                {}
func (nopMetrics) MessageSent(int)                    {}
func (nopMetrics) ReceiveFailed()                     {}
func (nopMetrics) SendFailed()                        {}
func (nopMetrics) Delivered(time.Duration)            {}
