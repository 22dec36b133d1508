package main

import (
	"errors"
	"testing"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

func TestDefaultMemoryBudget(t *testing.T) {
	none := func() (uint64, error) { return 0, memlimit.ErrNoLimit }
	broken := func() (uint64, error) { return 0, errors.New("no cgroup file system") }
	for _, tc := range []struct {
		name           string
		cgroup, system memlimit.Provider
		want           int64
	}{
		{"cgroup limit", memlimit.Limit(2 << 30), memlimit.Limit(64 << 30), 1 << 30},
		{"no cgroup limit", none, memlimit.Limit(64 << 30), 16 << 30},
		{"no cgroup", broken, memlimit.Limit(8 << 30), 2 << 30},
		{"nothing known", none, none, 1 << 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := defaultMemoryBudget(tc.cgroup, tc.system); got != tc.want {
				t.Fatalf("got %d, want %d", got, tc.want)
			}
		})
	}
}

func TestMemoryBudgetFlag(t *testing.T) {
	o, err := parseOptions([]string{"--memory-budget", "256MiB"}, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if o.stream.MemoryBudget != 256<<20 {
		t.Fatalf("budget %d", o.stream.MemoryBudget)
	}
	o, err = parseOptions(nil, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if want := defaultMemoryBudget(memlimit.FromCgroup, memlimit.FromSystem); o.stream.MemoryBudget != want || want <= 0 {
		t.Fatalf("default budget %d, want %d", o.stream.MemoryBudget, want)
	}
}

func noEnv(string) (string, bool) { return "", false }
