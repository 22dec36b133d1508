package main

import (
	"math"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// defaultMemoryBudget is --memory-budget when not given: half the cgroup
// memory limit when one is set (a container), else a quarter of physical
// memory, else 1 GiB.
func defaultMemoryBudget(cgroup, system memlimit.Provider) int64 {
	if limit, err := cgroup(); err == nil && limit > 0 && limit < math.MaxInt64 {
		return int64(limit / 2)
	}
	if total, err := system(); err == nil && total > 0 {
		return int64(total / 4)
	}
	return 1 << 30
}

// softMemoryLimit is the Go runtime's soft limit (GOMEMLIMIT) for a memory
// budget: the budget, a quarter more for what the runtime keeps beyond the
// live data between collections, and room for what is not client data
// (gRPC's buffers, goroutine stacks, the process itself).
func softMemoryLimit(budget int64) int64 {
	return budget + budget/4 + 64<<20
}

// setSoftMemoryLimit sets the runtime's soft memory limit from the budget,
// unless the environment sets one (GOMEMLIMIT, or AUTOMEMLIMIT=off). It
// returns the limit in effect.
func setSoftMemoryLimit(budget int64) (int64, error) {
	return memlimit.Set(memlimit.WithProvider(memlimit.Limit(uint64(softMemoryLimit(budget)))), memlimit.WithRatio(1))
}
