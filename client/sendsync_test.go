package client

import (
	"context"
	"errors"
	"sync"
	"testing"
)

// TestConcurrentSendsShareSyncs: Sends from many goroutines at once are
// made durable by far fewer store syncs than Sends, and a Send never
// returns success when the sync that covers it failed.
func TestConcurrentSendsShareSyncs(t *testing.T) {
	env := StartTestEnv(t)
	st := openSyncStore(t, t.TempDir(), true)
	ctx := context.Background()
	// Offline: the outbox does not run, so every sync counted is a Send's.
	c, err := Create(ctx, Options{Store: st, KeyServerURL: env.KeyServerURL, RelayURL: env.RelayURL,
		TrustRoots: env.TrustRoots, Offline: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	alice := &recvParty{t: t, c: c}
	bob := startRecvParty(t, env, openSyncStore(t, t.TempDir(), true), true)
	ab := recvBefriend(t, alice, bob)

	sendAll := func(goroutines, each int) []error {
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			errs []error
		)
		for range goroutines {
			wg.Go(func() {
				for range each {
					_, err := alice.c.Send(ctx, ab, Text("concurrent"))
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return errs
	}

	const goroutines, each = 16, 25
	before := st.syncs.Load()
	for _, err := range sendAll(goroutines, each) {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Generous, for loaded machines and the race detector (70–120 syncs
	// there, a Send on its own syncs at once): the point is that they are
	// shared at all.
	if syncs := st.syncs.Load() - before; syncs > goroutines*each*3/4 {
		t.Fatalf("%d Sends took %d syncs", goroutines*each, syncs)
	} else {
		t.Logf("%d Sends, %d syncs", goroutines*each, syncs)
	}

	st.fail.Store(true)
	for _, err := range sendAll(8, 4) {
		if !errors.Is(err, errSyncRefused) {
			t.Fatalf("Send with a failing sync returned %v", err)
		}
	}
	st.fail.Store(false)
}
