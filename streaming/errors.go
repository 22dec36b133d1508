package streaming

import (
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
)

// closeReason says why a stream ends. Each reason has one meaning for the
// client: the status the stream ends with, whether a goaway precedes it, and
// whether what is queued is flushed first.
type closeReason uint8

const (
	reasonNone closeReason = iota
	// reasonClientDone: the client half-closed. Flush, then end OK.
	reasonClientDone
	// reasonClientGone: the stream broke or the client cancelled it.
	reasonClientGone
	// reasonReceiveLimit: gRPC refused a message (too large).
	reasonReceiveLimit
	// reasonSendFailed: a send failed; the transport is gone.
	reasonSendFailed
	// reasonSlowConsumer: the client does not read fast enough.
	reasonSlowConsumer
	// reasonInactive: the client did not answer a health probe.
	reasonInactive
	// reasonReplaced: a newer stream with the same client ID took over.
	reasonReplaced
	// reasonShutdown: the server is draining.
	reasonShutdown
	// reasonInternal: a panic while serving the stream.
	reasonInternal
	// reasonStreamAge: the stream reached the maximum age; the client
	// should reconnect, to this server or another.
	reasonStreamAge
	// reasonUnauthenticated: the stream's token expired.
	reasonUnauthenticated
	// reasonEngine: the shared engine could not give the stream its
	// client's memberships; the client should come back.
	reasonEngine
)

var reasons = [...]struct {
	label  string // streamhub_disconnects_total{reason}; empty when the server did not end it
	goaway string // reason of the goaway sent first, if any
	flush  bool   // deliver what is queued before ending
	err    error  // what the handler returns; nil means the receive error or OK
}{
	reasonNone:            {},
	reasonClientDone:      {flush: true},
	reasonClientGone:      {},
	reasonReceiveLimit:    {label: "resource_exhausted"},
	reasonSendFailed:      {},
	reasonSlowConsumer:    {label: "slow_consumer", err: streamsvc.MakeResourceExhausted(errors.New("slow consumer"))},
	reasonInactive:        {label: "inactive", err: streamsvc.MakeUnavailable(errors.New("inactive"))},
	reasonReplaced:        {label: "replaced", goaway: "replaced", err: streamsvc.MakeAborted(errors.New("replaced by a newer stream with the same client ID"))},
	reasonShutdown:        {label: "shutdown", goaway: "shutdown", flush: true, err: streamsvc.MakeUnavailable(errors.New("server shutting down"))},
	reasonInternal:        {label: "internal", err: status.Error(codes.Internal, "internal error")},
	reasonStreamAge:       {label: "resource_exhausted", goaway: "max_stream_age", flush: true, err: streamsvc.MakeResourceExhausted(errors.New("maximum stream age reached"))},
	reasonUnauthenticated: {label: "unauthenticated", err: streamsvc.MakeUnauthenticated(errors.New("token expired"))},
	reasonEngine:          {err: streamsvc.MakeUnavailable(errors.New("engine unavailable: the client's memberships could not be restored"))},
}

// errPermissionDenied is the reason of the error a client gets for a
// session its token does not allow.
const errPermissionDenied = "permission denied"

func (r closeReason) String() string {
	if l := reasons[r].label; l != "" {
		return l
	}
	return [...]string{reasonNone: "none", reasonClientDone: "client_done", reasonClientGone: "client_gone", reasonSendFailed: "send_failed"}[r]
}

// errMemoryBudget refuses a publish that does not fit the memory budget
// even after eviction: what is left is pending for live streams, which the
// slow-consumer rules free.
var errMemoryBudget = errors.New("memory budget: the server holds as much as it may for its clients; try again later")

// Refusals of a new stream.
var (
	errMaxConnections = streamsvc.MakeResourceExhausted(errors.New("maximum connections reached"))
	errDraining       = streamsvc.MakeUnavailable(errors.New("server shutting down"))
)
