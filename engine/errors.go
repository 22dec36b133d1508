package engine

import (
	"context"
	"errors"
)

// ErrUnavailable is wrapped by errors that mean the engine's store could not
// be reached or did not answer in time; callers tell clients the engine is
// unavailable and may retry later.
var ErrUnavailable = errors.New("engine unavailable")

// ErrClosed is returned by calls made after Close.
var ErrClosed = errors.New("engine closed")

// ErrFenced is returned by a fenced write whose fence is not the client's
// current one: another stream claimed the client since.
var ErrFenced = errors.New("engine: client claimed by a newer stream")

// Result names the outcome of an operation for metrics: "ok", "unavailable",
// "canceled", "closed", "fenced" or "error".
func Result(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrUnavailable):
		return "unavailable"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "canceled"
	case errors.Is(err, ErrClosed):
		return "closed"
	case errors.Is(err, ErrFenced):
		return "fenced"
	default:
		return "error"
	}
}
