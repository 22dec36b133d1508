package streaming

import (
	"context"
	"encoding/binary"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of DataMessage (SPEC §2), for deliveries encoded by hand.
const (
	fieldType      protowire.Number = 1
	fieldSessionID protowire.Number = 2
	fieldData      protowire.Number = 3
	fieldTimestamp protowire.Number = 4
	fieldSeq       protowire.Number = 5
	fieldClientID  protowire.Number = 7
	fieldID        protowire.Number = 8
	fieldEpoch     protowire.Number = 11
)

// seqTimeRoom is what the seq and the timestamp take at most, appended
// last: a tag and a ten-byte varint each.
const seqTimeRoom = 2 * (1 + binary.MaxVarintLen64)

// encodeDelivery encodes the fields of a delivery known before the
// session's lock, everything but its seq and timestamp, which
// appendSeqTime adds under it (protobuf takes fields in any order), with
// room for them. payload is data's copy inside the encoding, which the
// entry keeps instead of data, so the payload is held once.
func encodeDelivery(session, clientID, id, epoch *string, data []byte) (b, payload []byte) {
	size := protowire.SizeTag(fieldType) + protowire.SizeBytes(len(typeData)) + seqTimeRoom
	for _, f := range []*string{session, clientID, id, epoch} {
		if f != nil {
			size += 1 + protowire.SizeBytes(len(*f))
		}
	}
	if data != nil {
		size += 1 + protowire.SizeBytes(len(data))
	}
	b = make([]byte, 0, size)
	b = protowire.AppendTag(b, fieldType, protowire.BytesType)
	b = protowire.AppendString(b, typeData)
	b = appendString(b, fieldSessionID, session)
	if data != nil {
		b = protowire.AppendTag(b, fieldData, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(len(data)))
		start := len(b)
		b = append(b, data...)
		payload = b[start:len(b):len(b)]
	}
	b = appendString(b, fieldClientID, clientID)
	b = appendString(b, fieldID, id)
	b = appendString(b, fieldEpoch, epoch)
	return b, payload
}

func appendString(b []byte, n protowire.Number, s *string) []byte {
	if s == nil {
		return b
	}
	b = protowire.AppendTag(b, n, protowire.BytesType)
	return protowire.AppendString(b, *s)
}

// appendSeqTime completes an encoding started by encodeDelivery, in the
// room it left.
func appendSeqTime(b []byte, seq uint64, ts int64) []byte {
	b = protowire.AppendTag(b, fieldTimestamp, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(ts))
	b = protowire.AppendTag(b, fieldSeq, protowire.VarintType)
	return protowire.AppendVarint(b, seq)
}

// rawSender sends a message on the gRPC stream under the generated one:
// with wire.Codec, an encoded delivery as is.
type rawSender interface{ SendMsg(m any) error }

type rawStreamKey struct{}

// EncodedDeliveries returns a stream interceptor that lets the service send
// on method's streams each delivery's protobuf encoding, made once per
// publish, instead of encoding it again for every member. The server must
// use wire.Codec (grpc.ForceServerCodecV2). Put it last in the chain, so
// that the interceptors before it still see every message.
func EncodedDeliveries(method string) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if info.FullMethod != method {
			return handler(srv, ss)
		}
		return handler(srv, rawStream{ss, context.WithValue(ss.Context(), rawStreamKey{}, ss)})
	}
}

// rawStream is a stream whose context carries the stream itself.
type rawStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s rawStream) Context() context.Context { return s.ctx }

// rawSenderFrom returns the stream EncodedDeliveries put in ctx, or nil.
func rawSenderFrom(ctx context.Context) rawSender {
	s, _ := ctx.Value(rawStreamKey{}).(rawSender)
	return s
}
