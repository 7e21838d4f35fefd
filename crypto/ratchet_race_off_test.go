//go:build !race

package crypto

// ratchetRaceEnabled reports a build with the race detector, under which
// the most expensive exhaustive sweeps sample instead.
const ratchetRaceEnabled = false
