// Package design declares StreamHub's API: one bidirectional gRPC method,
// StreamData, over which a client runs any number of named sessions.
package design

import (
	. "goa.design/goa/v3/dsl"
)

var _ = API("streamhub", func() {
	Title("StreamHub")
	Description("StreamHub is a real-time streaming service: one bidirectional gRPC stream carries " +
		"any number of named sessions, each with ordered, sequenced, resumable delivery.")
	Version("1.0")
	Server("streamhub", func() {
		Description("The StreamHub server.")
		Services("stream_service")
		Host("localhost", func() {
			Description("A server on this machine: gRPC, and WebSocket for browsers.")
			URI("grpc://localhost:50051")
			URI("http://localhost:8080")
		})
	})
})

// JWTAuth is the bearer token a client presents when the server runs with --auth jwt.
var JWTAuth = JWTSecurity("jwt", func() {
	Description("A JWT whose `sub` is the client ID and whose optional `sessions` claim lists " +
		"the sessions (names or `prefix*` patterns) the client may join or send to. " +
		"Ignored when the server runs with --auth none.")
})

// identifier constrains session IDs, client IDs and message IDs.
func identifier() {
	Pattern(`^[A-Za-z0-9._:-]+$`)
	MinLength(1)
	MaxLength(128)
}

// DataMessage is the one message type of a stream, in both directions.
var DataMessage = Type("DataMessage", func() {
	Description("A message of a StreamHub stream, in either direction. " +
		"What each field means depends on its type and action.")
	Field(1, "type", String, "Kind of message.", func() {
		Enum("data", "heartbeat", "control", "health_check")
		Example("data")
	})
	Field(2, "session_id", String, "The session a data or control message is about.", func() {
		identifier()
		Example("lobby")
	})
	Field(3, "data", Bytes, "Payload of a data message.")
	Field(4, "timestamp", Int64, "Unix milliseconds: set by the sender; on deliveries, the server's accept time.", func() {
		Meta("struct:field:proto", "int64") // the wire contract's type, not Goa's default sint64
	})
	Field(5, "seq", UInt64, "Per-session sequence number; on a join, replay what came after this.")
	Field(6, "action", String, "Control verb.", func() {
		Enum(
			// Client to server.
			"join", "leave", "pause", "resume",
			// Server to client.
			"welcome", "joined", "left", "paused", "resumed", "error", "goaway",
		)
	})
	Field(7, "client_id", String, "On deliveries the sender; on welcome your identity.", func() {
		identifier()
	})
	Field(8, "id", String, "Client-chosen message ID, echoed on the delivery and on any error about it.", func() {
		identifier()
	})
	Field(9, "reason", String, "Human-readable cause on error and goaway.")
	Field(10, "recovered", Boolean, "On joined and resumed: every message since the requested position was replayed.")
	Field(11, "epoch", String, "Identifies one incarnation of a session's history.")
	Required("type")
})

var _ = Service("stream_service", func() {
	Description("The StreamHub streaming service.")

	Error("unauthenticated", ErrorResult, "The token is missing, invalid or expired.")
	Error("resource_exhausted", ErrorResult, "A limit was crossed: too many connections, or the client reads too slowly.")
	Error("aborted", ErrorResult, "A newer stream with the same client ID replaced this one.")
	Error("unavailable", ErrorResult, "The server is shutting down, or the client was inactive.")

	GRPC(func() {
		Response("unauthenticated", CodeUnauthenticated)
		Response("resource_exhausted", CodeResourceExhausted)
		Response("aborted", CodeAborted)
		Response("unavailable", CodeUnavailable)
	})
	// Over HTTP these statuses answer the upgrade request; once the socket
	// is open, a stream ends with a WebSocket close instead.
	HTTP(func() {
		Response("unauthenticated", StatusUnauthorized)
		Response("resource_exhausted", StatusTooManyRequests)
		Response("aborted", StatusConflict)
		Response("unavailable", StatusServiceUnavailable)
	})

	Method("stream_data", func() {
		Description("Open a bidirectional stream of DataMessages. The server sends a welcome " +
			"first; the client then joins sessions and sends data to them.")
		Security(JWTAuth)
		Payload(func() {
			Attribute("client_id", String, "The client's chosen identity (development mode).", func() {
				identifier()
				Example("alice")
			})
			Token("token", String, "Bearer JWT (JWT mode).", func() {
				Example("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl")
			})
		})
		StreamingPayload(DataMessage)
		StreamingResult(DataMessage)
		GRPC(func() {
			Metadata(func() {
				Attribute("client_id:x-client-id")
				Attribute("token:authorization")
			})
		})
		// Browsers cannot set headers on a WebSocket: identity travels in
		// the query string. Messages are JSON text frames.
		HTTP(func() {
			GET("/v1/stream")
			Param("client_id")
			Param("token")
			Response(StatusOK)
		})
	})
})
