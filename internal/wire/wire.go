// Package wire lets StreamHub encode a message once and send the same
// bytes on many gRPC streams: a delivery is the same for every member of a
// session, so its protobuf encoding is made once per publish, not once per
// member.
package wire

import (
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
)

// Encoded is a message already in protobuf wire format. Sent on a stream
// of a server whose codec is Codec, it goes out as is. Once set it is
// immutable and safe to send on many streams at once; it must not be
// copied.
type Encoded struct {
	one  [1]mem.Buffer
	bufs mem.BufferSlice // one[:]: the buffer list every send returns
	size int
}

// Set makes e the encoding b, which must not change afterwards.
func (e *Encoded) Set(b []byte) {
	e.one[0] = mem.SliceBuffer(b)
	e.bufs, e.size = e.one[:], len(b)
}

// EncodedSize is the size of the encoding, what a monitor counts as the
// message's bytes.
func (e *Encoded) EncodedSize() int { return e.size }

// Bytes returns the encoding. The caller must not change it.
func (e *Encoded) Bytes() []byte { return e.bufs[0].ReadOnlyData() }

// Codec is gRPC's protobuf codec, except that it writes an Encoded as is.
// A server that sends Encoded messages uses it (grpc.ForceServerCodecV2);
// everything else it encodes and decodes exactly as the protobuf codec.
type Codec struct{}

var protoCodec = encoding.GetCodecV2(proto.Name)

// Marshal encodes v; an Encoded is already encoded. Its buffer is never
// freed (a slice buffer's Free does nothing), so the same one can go out
// on every stream.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	if e, ok := v.(*Encoded); ok {
		return e.bufs, nil
	}
	return protoCodec.Marshal(v)
}

// Unmarshal decodes as the protobuf codec does.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	return protoCodec.Unmarshal(data, v)
}

// Name is the protobuf codec's: clients see no difference.
func (Codec) Name() string { return proto.Name }
