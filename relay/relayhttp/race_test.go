//go:build race

package relayhttp_test

// raceEnabled is true when the race detector is on; the pipelining tests
// then send fewer messages (the detector makes each one tens of times
// slower, and what they check of ordering does not depend on the count).
const raceEnabled = true
