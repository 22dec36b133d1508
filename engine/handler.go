package engine

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
