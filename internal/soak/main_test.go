package soak

import (
	"flag"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The run's settings. The defaults are the short run of go test ./...; make
// soak passes the long run's.
var (
	flagFaults      = flag.Int("soak.faults", 100, "faults to inject")
	flagSeed        = flag.Int64("soak.seed", 0, "seed of the fault schedule and the clients' choices; 0 picks one from the clock (printed, for a replay)")
	flagPace        = flag.Duration("soak.pace", 250*time.Millisecond, "time between one fault and the next")
	flagServer      = flag.String("soak.server", "", "streamhub binary to run; empty builds ./cmd/streamhub into the test's temporary directory")
	flagRaceServer  = flag.Bool("soak.race-server", raceEnabled, "build the server with the race detector (default: as this test binary is built)")
	flagLogDir      = flag.String("soak.logdir", "", "directory to keep the servers' and Redis's logs in (default: the test's temporary directory, removed after it)")
	flagPublishers  = flag.Int("soak.publishers", 3, "publishing clients")
	flagSubscribers = flag.Int("soak.subscribers", 4, "subscribing clients, each a member of every session from its start")
	flagSessions    = flag.Int("soak.sessions", 3, "sessions")
	flagRate        = flag.Float64("soak.rate", 20, "publications per second of each publisher")
	flagKinds       = flag.String("soak.kinds", "", "comma-separated kinds of fault to inject (default: all of them), e.g. stall-redis,cut-client to chase one problem")
	flagStrict      = flag.Bool("soak.strict", false, "also fail on a publication refused with an engine error yet delivered: the reply of Redis was lost, not the publish (SPEC §9 says nothing is half-applied; a known server issue, counted in the figures either way)")
)

// TestMain fails the package if any goroutine outlives the tests: the
// clients', the fault proxies', the process watchers'.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
