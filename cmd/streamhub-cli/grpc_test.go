package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	goagrpc "goa.design/goa/v3/grpc"
	goapb "goa.design/goa/v3/grpc/pb"
	goa "goa.design/goa/v3/pkg"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestParseTarget(t *testing.T) {
	tests := []struct {
		url        string
		want       string
		wantSecure bool
		wantErr    bool
	}{
		{url: "grpc://localhost:50051", want: "localhost:50051"},
		{url: "grpc://127.0.0.1:4000/", want: "127.0.0.1:4000"},
		{url: "localhost:4000", want: "localhost:4000"},
		{url: "example.com", want: "example.com:50051"},
		{url: "grpc://example.com", want: "example.com:50051"},
		{url: "[::1]:4000", want: "[::1]:4000"},
		{url: "grpc://[::1]", want: "[::1]:50051"},
		{url: "grpcs://example.com:443", want: "example.com:443", wantSecure: true},
		{url: "grpcs://example.com", want: "example.com:50051", wantSecure: true},
		{url: "grpcs://[::1]:4000/", want: "[::1]:4000", wantSecure: true},
		{url: "grpcs://example.com/path", wantErr: true},
		{url: "grpcs://:443", wantErr: true},
		{url: "https://example.com:443", wantErr: true},
		{url: "http://localhost:50051", wantErr: true},
		{url: "grpc://localhost:50051/path", wantErr: true},
		{url: "grpc://user@localhost:50051", wantErr: true},
		{url: "grpc://localhost:0", wantErr: true},
		{url: "grpc://localhost:70000", wantErr: true},
		{url: "grpc://localhost:port", wantErr: true},
		{url: "grpc://:50051", wantErr: true},
		{url: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			got, secure, err := parseTarget(tt.url)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("parseTarget(%q) = %q, %v; want an error", tt.url, got, secure)
				}
				return
			}
			if err != nil || got != tt.want || secure != tt.wantSecure {
				t.Fatalf("parseTarget(%q) = %q, %v, %v; want %q, %v", tt.url, got, secure, err, tt.want, tt.wantSecure)
			}
		})
	}
}

func TestStatusOf(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		wantCode codes.Code
		wantMsg  string
	}{
		{"server ended OK", io.EOF, codes.OK, ""},
		{"plain status", status.Error(codes.ResourceExhausted, "slow consumer"), codes.ResourceExhausted, "slow consumer"},
		// grpc-go keeps the wrapping text in the message.
		{"wrapped status", fmt.Errorf("recv: %w", status.Error(codes.Aborted, "replaced")), codes.Aborted, "recv: rpc error: code = Aborted desc = replaced"},
		// What the generated Recv makes of a status carrying a Goa error response.
		{"design error", serviceError("resource_exhausted", "maximum connections reached"), codes.ResourceExhausted, "maximum connections reached"},
		{"aborted", serviceError("aborted", "replaced"), codes.Aborted, "replaced"},
		{"unavailable", serviceError("unavailable", "inactive"), codes.Unavailable, "inactive"},
		{"unauthenticated", serviceError("unauthenticated", "token expired"), codes.Unauthenticated, "token expired"},
		{"validation error", serviceError(goa.InvalidPattern, "bad client_id"), codes.InvalidArgument, "bad client_id"},
		{"fault", serviceError("fault", "boom"), codes.Unknown, "boom"},
		{"canceled", context.Canceled, codes.Canceled, context.Canceled.Error()},
		{"other", errors.New("what"), codes.Unknown, "what"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := statusOf(tt.err)
			if st.Code() != tt.wantCode || st.Message() != tt.wantMsg {
				t.Errorf("statusOf(%v) = %v %q, want %v %q", tt.err, st.Code(), st.Message(), tt.wantCode, tt.wantMsg)
			}
		})
	}
}

func serviceError(name, msg string) error {
	return goagrpc.NewServiceError(&goapb.ErrorResponse{Name: name, Msg: msg})
}

func TestBearer(t *testing.T) {
	for token, want := range map[string]string{
		"abc.def.ghi":        "Bearer abc.def.ghi",
		"Bearer abc.def.ghi": "Bearer abc.def.ghi",
		"bearer abc":         "bearer abc",
	} {
		if got := bearer(token); got != want {
			t.Errorf("bearer(%q) = %q, want %q", token, got, want)
		}
	}
}

func TestEndRecorderKeepsFirstError(t *testing.T) {
	var r endRecorder
	if err := r.err(); err != nil {
		t.Fatalf("err() before the end = %v, want nil", err)
	}
	first := status.Error(codes.Unavailable, "shutdown")
	r.record(first)
	r.record(io.EOF)
	if err := r.err(); err != first {
		t.Fatalf("err() = %v, want %v", err, first)
	}
}
