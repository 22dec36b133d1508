package wire

import (
	"testing"

	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestCodecPassesEncodedThrough(t *testing.T) {
	msg := wrapperspb.String("hello")
	b, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	var e Encoded
	e.Set(b)
	var c encoding.CodecV2 = Codec{}
	for range 3 { // the same buffers, send after send
		out, err := c.Marshal(&e)
		if err != nil {
			t.Fatal(err)
		}
		if got := out.Materialize(); string(got) != string(b) || e.EncodedSize() != len(b) {
			t.Fatalf("marshalled %q, want %q", got, b)
		}
		out.Free()
	}
	if string(e.Bytes()) != string(b) {
		t.Fatal("Bytes changed")
	}

	// Everything else is the protobuf codec's.
	out, err := c.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	var back wrapperspb.StringValue
	if err := c.Unmarshal(out, &back); err != nil || back.GetValue() != "hello" {
		t.Fatalf("round trip: %v %q", err, back.GetValue())
	}
	if c.Name() != "proto" {
		t.Fatalf("name %q", c.Name())
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = c.Marshal(&e) }); n != 0 {
		t.Fatalf("%v allocations per pass-through", n)
	}
}
