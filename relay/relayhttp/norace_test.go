//go:build !race

package relayhttp_test

const raceEnabled = false
