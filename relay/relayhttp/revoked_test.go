package relayhttp_test

import (
	"net/http"
	"testing"

	"github.com/sotto-im/sotto/relay/store"
)

// TestTokenOfRemovedDeviceRefused: a token stays validly signed after its
// device is removed from the account's device list or the account is
// deleted; the relay refuses it at once, for connections and for sends.
func TestTokenOfRemovedDeviceRefused(t *testing.T) {
	e := newEnv(t, envOptions{})
	a := e.account(1, 2)
	q2 := store.QueueID{Account: a, Device: 2}
	e.dial(q2) // the control: accepted while listed

	e.direct.set(a, 1) // device 2 removed
	if _, resp, err := e.dialErr(q2); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("removed device connected: %v", err)
	}
	e.dial(store.QueueID{Account: a, Device: 1}) // its sibling still connects

	gone := e.account() // no devices at all
	e.direct.mu.Lock()
	delete(e.direct.accounts, gone)
	e.direct.mu.Unlock()
	if _, resp, err := e.dialErr(store.QueueID{Account: gone, Device: 1}); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("token of an unknown account connected: %v", err)
	}
}
