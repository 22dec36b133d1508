//go:build !race

package soak

// raceEnabled says the test binary was built with -race.
const raceEnabled = false
