package client

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any goroutine outlives the tests: the
// client's, its gRPC connections', or the test servers'.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
