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
	alice := startRecvParty(t, env, st, true)
	bob := startRecvParty(t, env, openSyncStore(t, t.TempDir(), true), true)
	ab := recvBefriend(t, alice, bob)
	ctx := context.Background()

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
	// The outbox syncs too (once per batch it encrypts): count generously.
	if syncs := st.syncs.Load() - before; syncs > goroutines*each/2 {
		t.Fatalf("%d Sends took %d syncs", goroutines*each, syncs)
	} else {
		t.Logf("%d Sends, %d syncs (Sends and outbox)", goroutines*each, syncs)
	}

	st.fail.Store(true)
	for _, err := range sendAll(8, 4) {
		if !errors.Is(err, errSyncRefused) {
			t.Fatalf("Send with a failing sync returned %v", err)
		}
	}
	st.fail.Store(false)
}
