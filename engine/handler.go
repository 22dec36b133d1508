package engine

// HandlerFuncs adapts two functions to a Handler; a nil one is not called.
type HandlerFuncs struct {
	// Entry is called by HandleEntry.
	Entry func(session string, e Entry)
	// Resync is called by HandleResync.
	Resync func()
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
