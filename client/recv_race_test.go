//go:build race

package client

// recvRaceEnabled reports a -race build, where the receive tests send fewer
// messages (each costs several times as much CPU).
const recvRaceEnabled = true
