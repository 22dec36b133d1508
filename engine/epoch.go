package engine

import (
	"crypto/rand"
	"encoding/hex"
)

// NewEpoch returns a fresh random epoch: 16 hex digits.
func NewEpoch() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}
