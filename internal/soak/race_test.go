//go:build race

package soak

// raceEnabled says the test binary was built with -race: the server is then
// built with it too, so that the soak also hunts the server's data races.
const raceEnabled = true
