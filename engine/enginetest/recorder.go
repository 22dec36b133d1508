package enginetest

import (
	"sync"
	"testing"
	"time"

	"github.com/streamhub/streamhub/engine"
)

// Recorder is a Handler that keeps everything it is given, for tests to
// inspect.
type Recorder struct {
	mu      sync.Mutex                // guards the fields below
	entries map[string][]engine.Entry // by session, in arrival order
	resyncs int
	// replaced holds the HandleReplaced calls, in arrival order.
	replaced []Replacement
}

// Replacement is one HandleReplaced call a Recorder got.
type Replacement struct {
	// ClientID is the client claimed elsewhere.
	ClientID string
	// Fence is the new owner's fence.
	Fence uint64
}

var (
	_ engine.Handler         = (*Recorder)(nil)
	_ engine.ReplacedHandler = (*Recorder)(nil)
)

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder {
	return &Recorder{entries: make(map[string][]engine.Entry)}
}

// HandleEntry implements engine.Handler.
func (r *Recorder) HandleEntry(session string, e engine.Entry) {
	r.mu.Lock()
	r.entries[session] = append(r.entries[session], e)
	r.mu.Unlock()
}

// HandleResync implements engine.Handler.
func (r *Recorder) HandleResync() {
	r.mu.Lock()
	r.resyncs++
	r.mu.Unlock()
}

// HandleReplaced implements engine.ReplacedHandler.
func (r *Recorder) HandleReplaced(clientID string, fence uint64) {
	r.mu.Lock()
	r.replaced = append(r.replaced, Replacement{ClientID: clientID, Fence: fence})
	r.mu.Unlock()
}

// Replaced returns a copy of the HandleReplaced calls so far.
func (r *Recorder) Replaced() []Replacement {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Replacement(nil), r.replaced...)
}

// Entries returns a copy of what the handler got for session.
func (r *Recorder) Entries(session string) []engine.Entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]engine.Entry(nil), r.entries[session]...)
}

// Resyncs returns how many times HandleResync was called.
func (r *Recorder) Resyncs() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.resyncs
}

// WaitFor waits until the handler holds at least n entries of session.
func (r *Recorder) WaitFor(t testing.TB, session string, n int) {
	t.Helper()
	Eventually(t, "the handler to get entries", func() bool {
		return len(r.Entries(session)) >= n
	})
}

// Eventually polls cond until it holds, failing the test after Wait.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Wait)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %v waiting for %s", Wait, what)
		}
		<-tick.C
	}
}
