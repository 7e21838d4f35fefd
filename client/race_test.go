//go:build race

package client_test

// raceEnabled reports a -race build, where scrypt at the full work factor
// takes tens of seconds.
const raceEnabled = true
