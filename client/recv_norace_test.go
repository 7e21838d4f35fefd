//go:build !race

package client

const recvRaceEnabled = false
