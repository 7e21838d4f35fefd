//go:build race

package loadtest

// raceEnabled is true when the race detector is on; the crash test then
// skips (it checks durability across process kills, not data races, and
// the detector would only slow its senders down).
const raceEnabled = true
