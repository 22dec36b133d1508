package web

import (
	"errors"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	goa "goa.design/goa/v3/pkg"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Close codes of the streams the server ends. Besides the standard ones,
// the service's refusals get 4000 plus the HTTP status the design maps
// them to, so a page can tell them apart.
const (
	CloseUnauthenticated   = 4401 // the token expired
	CloseReplaced          = 4409 // a newer stream with the same client ID took over
	CloseResourceExhausted = 4429 // slow consumer
	CloseUnavailable       = 4503 // inactive: no answer to the health probe
)

// maxCloseText is the longest close reason: a control frame's 125 bytes
// less the code's two.
const maxCloseText = 123

// closeCode says why a stream ended, as a WebSocket close code and
// reason: err is what the service returned, goaway the reason of the last
// goaway sent, draining whether the server is shutting down.
func closeCode(err error, goaway string, draining bool) (int, string) {
	if err == nil {
		return websocket.CloseNormalClosure, ""
	}
	code := websocket.CloseInternalServerErr
	var se *goa.ServiceError
	switch {
	case goaway == "shutdown" || goaway == "max_stream_age":
		code = websocket.CloseGoingAway
	case errors.As(err, &se):
		switch se.Name {
		case "unavailable":
			code = CloseUnavailable
			if draining {
				code = websocket.CloseGoingAway
			}
		case "unauthenticated":
			code = CloseUnauthenticated
		case "aborted":
			code = CloseReplaced
		case "resource_exhausted":
			code = CloseResourceExhausted
		}
	default:
		switch status.Code(err) {
		case codes.ResourceExhausted:
			code = websocket.CloseMessageTooBig
		case codes.Canceled:
			code = websocket.CloseNormalClosure // the client left; it will hardly read this
		}
	}
	return code, closeText(err)
}

// closeText is err's message, cut to fit a close frame.
func closeText(err error) string {
	var msg string
	var se *goa.ServiceError
	if errors.As(err, &se) {
		msg = se.Message
	} else {
		msg = status.Convert(err).Message()
	}
	for len(msg) > maxCloseText {
		_, size := utf8.DecodeLastRuneInString(msg)
		msg = msg[:len(msg)-size]
	}
	return msg
}

// grpcStatus is err as the gRPC transport would end the stream: the
// service's named errors get the codes the design maps them to.
func grpcStatus(err error) error {
	var se *goa.ServiceError
	if err == nil || !errors.As(err, &se) {
		return err
	}
	code := codes.Unknown
	switch se.Name {
	case "unauthenticated":
		code = codes.Unauthenticated
	case "resource_exhausted":
		code = codes.ResourceExhausted
	case "aborted":
		code = codes.Aborted
	case "unavailable":
		code = codes.Unavailable
	}
	return status.Error(code, se.Message)
}
