package streaming

import "time"

// Metrics receives the events only the streaming service knows about.
// Message and byte counts, stream lifetimes and statuses are the monitoring
// interceptor's; open streams and sessions are read from Connections and
// Sessions. Implementations must be cheap and safe for concurrent use:
// Delivered sits on the per-message path.
type Metrics interface {
	// Disconnected counts a stream the server ended, by reason:
	// slow_consumer, inactive, replaced, shutdown, unauthenticated or
	// resource_exhausted.
	Disconnected(reason string)
	// Delivered records the time from a data message's acceptance to its
	// live send to one member.
	Delivered(latency time.Duration)
	// Replayed counts n messages sent from history: on a join at a
	// position, a resume or a reconnect.
	Replayed(n int)
	// RetainedEvicted counts retained state dropped to make room: a
	// retained client beyond the bound, or an idle session beyond the
	// session limit.
	RetainedEvicted()
	// HistoryEvicted counts n history entries evicted to keep within the
	// memory budget.
	HistoryEvicted(n int)
	// SendFailed and ReceiveFailed count failed writes and reads.
	SendFailed()
	ReceiveFailed()
}

// nopMetrics is the Metrics of a service configured without any.
type nopMetrics struct{}

func (nopMetrics) Disconnected(string)     {}
func (nopMetrics) Delivered(time.Duration) {}
func (nopMetrics) Replayed(int)            {}
func (nopMetrics) RetainedEvicted()        {}
func (nopMetrics) HistoryEvicted(int)      {}
func (nopMetrics) SendFailed()             {}
func (nopMetrics) ReceiveFailed()          {}
