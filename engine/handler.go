package engine

import "sync/atomic"

// HandlerFuncs adapts functions to a Handler and a ReplacedHandler; a nil one
// is not called.
type HandlerFuncs struct {
	// Entry is called by HandleEntry.
	Entry func(session string, e Entry)
	// Resync is called by HandleResync.
	Resync func()
	// Replaced is called by HandleReplaced.
	Replaced func(clientID string, fence uint64)
}

// HandleEntry implements Handler.
func (h HandlerFuncs) HandleEntry(session string, e Entry) {
	if h.Entry != nil {
		h.Entry(session, e)
	}
}

// HandleResync implements Handler.
func (h HandlerFuncs) HandleResync() {
	if h.Resync != nil {
		h.Resync()
	}
}

// HandleReplaced implements ReplacedHandler.
func (h HandlerFuncs) HandleReplaced(clientID string, fence uint64) {
	if h.Replaced != nil {
		h.Replaced(clientID, fence)
	}
}

// Relay is a Handler and ReplacedHandler that forwards to the handler given
// to Set, so that an engine can be created before what handles its entries
// (which usually needs the engine). Until Set, and after Set(nil), calls are
// dropped.
type Relay struct {
	h atomic.Pointer[relayed]
}

type relayed struct{ Handler }

// Set makes r forward to h from now on.
func (r *Relay) Set(h Handler) {
	if h == nil {
		r.h.Store(nil)
		return
	}
	r.h.Store(&relayed{h})
}

// HandleEntry implements Handler.
func (r *Relay) HandleEntry(session string, e Entry) {
	if h := r.h.Load(); h != nil {
		h.HandleEntry(session, e)
	}
}

// HandleResync implements Handler.
func (r *Relay) HandleResync() {
	if h := r.h.Load(); h != nil {
		h.HandleResync()
	}
}

// HandleReplaced implements ReplacedHandler; it is dropped when the handler
// set is not a ReplacedHandler.
func (r *Relay) HandleReplaced(clientID string, fence uint64) {
	if h := r.h.Load(); h != nil {
		if rh, ok := h.Handler.(ReplacedHandler); ok {
			rh.HandleReplaced(clientID, fence)
		}
	}
}
