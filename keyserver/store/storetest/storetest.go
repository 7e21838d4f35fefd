// Package storetest is the conformance suite for implementations of the
// key server's store.Store. Run it from an implementation's tests:
//
//	storetest.Run(t, func(t *testing.T) store.Store { ... })
package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/keyserver/store"
)

// Run runs the suite. open must return a new, empty store for each call;
// the suite closes it.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Accounts", testAccounts},
		{"DeviceList", testDeviceList},
		{"PreKeys", testPreKeys},
		{"ClaimOnce", testClaimOnce},
		{"ClaimConcurrent", testClaimConcurrent},
		{"ClaimAllDevices", testClaimAllDevices},
		{"DeleteAccount", testDeleteAccount},
		{"Handles", testHandles},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			defer func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			}()
			tc.fn(t, s)
		})
	}
}

// accountID derives a distinct test account ID from n.
func accountID(n int) crypto.AccountID {
	sum := sha256.Sum256(binary.BigEndian.AppendUint64(nil, uint64(n)))
	var id crypto.AccountID
	copy(id[:], sum[:])
	return id
}

func newAccount(n int, version uint64, devices ...crypto.DeviceID) *store.Account {
	a := &store.Account{ID: accountID(n), Version: version}
	a.Key[0] = byte(n)
	for _, d := range devices {
		dev := store.Device{ID: d}
		dev.Identity[0] = byte(d)
		a.Devices = append(a.Devices, dev)
	}
	a.DeviceList = fmt.Appendf(nil, "list %d v%d %v", n, version, devices)
	return a
}

func preKeys(kind string, from, n int) []store.PreKey {
	out := make([]store.PreKey, n)
	for i := range out {
		id := uint32(from + i)
		out[i] = store.PreKey{ID: id, Encoded: fmt.Appendf(nil, "%s-%d", kind, id)}
	}
	return out
}

func fullKeys(ec, kem int) store.DeviceKeys {
	return store.DeviceKeys{
		SignedPreKey: &store.PreKey{ID: 1, Encoded: []byte("spk-1")},
		LastResort:   &store.PreKey{ID: 1, Encoded: []byte("lrk-1")},
		OneTimeEC:    preKeys("ec", 1, ec),
		OneTimeKEM:   preKeys("kem", 1, kem),
	}
}

func mustCreate(t *testing.T, s store.Store, a *store.Account, d crypto.DeviceID, k store.DeviceKeys) {
	t.Helper()
	if err := s.CreateAccount(context.Background(), a, d, k); err != nil {
		t.Fatalf("CreateAccount: %v", err)
	}
}

func testAccounts(t *testing.T, s store.Store) {
	ctx := context.Background()
	a := newAccount(1, 1, 1)
	if _, err := s.Account(ctx, a.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Account before create: %v, want ErrNotFound", err)
	}
	if err := s.CreateAccount(ctx, a, 2, fullKeys(1, 1)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("CreateAccount with a device outside the list: %v, want ErrNotFound", err)
	}
	mustCreate(t, s, a, 1, fullKeys(3, 2))
	if err := s.CreateAccount(ctx, newAccount(1, 5, 1), 1, fullKeys(0, 0)); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second CreateAccount: %v, want ErrExists", err)
	}
	got, err := s.Account(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != a.ID || got.Key != a.Key || got.Version != 1 || !bytes.Equal(got.DeviceList, a.DeviceList) ||
		len(got.Devices) != 1 || got.Devices[0] != a.Devices[0] {
		t.Fatalf("Account = %+v, want %+v", got, a)
	}
	c, err := s.Counts(ctx, crypto.Address{Account: a.ID, Device: 1})
	if err != nil || c != (store.Counts{OneTimeEC: 3, OneTimeKEM: 2}) {
		t.Fatalf("Counts = %+v, %v", c, err)
	}
	// A failed registration with duplicate one-time IDs stores nothing.
	b := newAccount(2, 1, 1)
	k := fullKeys(2, 0)
	k.OneTimeEC[1].ID = k.OneTimeEC[0].ID
	if err := s.CreateAccount(ctx, b, 1, k); !errors.Is(err, store.ErrDuplicatePreKey) {
		t.Fatalf("CreateAccount with duplicate IDs: %v", err)
	}
	if _, err := s.Account(ctx, b.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("failed CreateAccount left an account: %v", err)
	}
}

func testDeviceList(t *testing.T, s store.Store) {
	ctx := context.Background()
	a := newAccount(1, 3, 1, 2)
	mustCreate(t, s, a, 1, fullKeys(2, 2))
	if err := s.PutPreKeys(ctx, crypto.Address{Account: a.ID, Device: 2}, fullKeys(5, 5)); err != nil {
		t.Fatal(err)
	}
	for _, v := range []uint64{2, 3} {
		if _, err := s.ReplaceDeviceList(ctx, newAccount(1, v, 1)); !errors.Is(err, store.ErrVersion) {
			t.Fatalf("ReplaceDeviceList version %d: %v, want ErrVersion", v, err)
		}
	}
	got, _ := s.Account(ctx, a.ID)
	if got.Version != 3 || len(got.Devices) != 2 {
		t.Fatalf("refused replacement changed the account: %+v", got)
	}
	if _, err := s.ReplaceDeviceList(ctx, newAccount(9, 4, 1)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("ReplaceDeviceList of unknown account: %v", err)
	}
	removed, err := s.ReplaceDeviceList(ctx, newAccount(1, 4, 1, 3))
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0] != 2 {
		t.Fatalf("removed = %v, want [2]", removed)
	}
	if _, err := s.Counts(ctx, crypto.Address{Account: a.ID, Device: 2}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Counts of removed device: %v", err)
	}
	// The removed device's keys are gone: re-adding it starts empty.
	if _, err := s.ReplaceDeviceList(ctx, newAccount(1, 5, 1, 2, 3)); err != nil {
		t.Fatal(err)
	}
	c, err := s.Counts(ctx, crypto.Address{Account: a.ID, Device: 2})
	if err != nil || c != (store.Counts{}) {
		t.Fatalf("re-added device counts = %+v, %v; want zero", c, err)
	}
	_, bundles, err := s.ClaimBundles(ctx, a.ID, []crypto.DeviceID{2})
	if err != nil || len(bundles) != 0 {
		t.Fatalf("claim for a device without keys = %d bundles, %v; want none", len(bundles), err)
	}
	if err := s.PutPreKeys(ctx, crypto.Address{Account: a.ID, Device: 7}, fullKeys(1, 1)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("PutPreKeys for a device outside the list: %v", err)
	}
}

func testPreKeys(t *testing.T, s store.Store) {
	ctx := context.Background()
	a := newAccount(1, 1, 1)
	mustCreate(t, s, a, 1, fullKeys(10, 10))
	addr := crypto.Address{Account: a.ID, Device: 1}
	// Duplicate of a stored ID, and a duplicate within the upload.
	if err := s.PutPreKeys(ctx, addr, store.DeviceKeys{OneTimeEC: preKeys("ec", 10, 5)}); !errors.Is(err, store.ErrDuplicatePreKey) {
		t.Fatalf("stored duplicate: %v", err)
	}
	dup := preKeys("kem", 100, 3)
	dup[2].ID = 100
	if err := s.PutPreKeys(ctx, addr, store.DeviceKeys{OneTimeKEM: dup}); !errors.Is(err, store.ErrDuplicatePreKey) {
		t.Fatalf("duplicate in upload: %v", err)
	}
	// All or nothing: a good EC set with a bad KEM set stores neither.
	bad := store.DeviceKeys{OneTimeEC: preKeys("ec", 500, 5), OneTimeKEM: dup}
	if err := s.PutPreKeys(ctx, addr, bad); err == nil {
		t.Fatal("bad upload accepted")
	}
	if c, _ := s.Counts(ctx, addr); c != (store.Counts{OneTimeEC: 10, OneTimeKEM: 10}) {
		t.Fatalf("counts after refused uploads = %+v", c)
	}
	// The bound: MaxOneTimePreKeys in total, and no more.
	if err := s.PutPreKeys(ctx, addr, store.DeviceKeys{OneTimeEC: preKeys("ec", 1000, store.MaxOneTimePreKeys-10)}); err != nil {
		t.Fatalf("filling to the bound: %v", err)
	}
	if err := s.PutPreKeys(ctx, addr, store.DeviceKeys{OneTimeEC: preKeys("ec", 5000, 1)}); !errors.Is(err, store.ErrTooManyPreKeys) {
		t.Fatalf("beyond the bound: %v", err)
	}
	// Replacing the signed and last-resort keys.
	if err := s.PutPreKeys(ctx, addr, store.DeviceKeys{
		SignedPreKey: &store.PreKey{ID: 2, Encoded: []byte("spk-2")},
		LastResort:   &store.PreKey{ID: 2, Encoded: []byte("lrk-2")},
	}); err != nil {
		t.Fatal(err)
	}
	_, bundles, err := s.ClaimBundles(ctx, a.ID, []crypto.DeviceID{1})
	if err != nil || len(bundles) != 1 {
		t.Fatalf("claim: %d, %v", len(bundles), err)
	}
	if string(bundles[0].SignedPreKey) != "spk-2" || string(bundles[0].LastResort) != "lrk-2" {
		t.Fatalf("bundle keys = %q %q, want replaced ones", bundles[0].SignedPreKey, bundles[0].LastResort)
	}
}

func testClaimOnce(t *testing.T, s store.Store) {
	ctx := context.Background()
	a := newAccount(1, 1, 1)
	mustCreate(t, s, a, 1, fullKeys(3, 2))
	seen := map[string]bool{}
	for i := range 5 {
		_, b, err := s.ClaimBundles(ctx, a.ID, []crypto.DeviceID{1})
		if err != nil || len(b) != 1 {
			t.Fatalf("claim %d: %d bundles, %v", i, len(b), err)
		}
		for _, k := range [][]byte{b[0].OneTimeEC, b[0].OneTimeKEM} {
			if k == nil {
				continue
			}
			if seen[string(k)] {
				t.Fatalf("claim %d: %q handed out twice", i, k)
			}
			seen[string(k)] = true
		}
		if (b[0].OneTimeEC != nil) != (i < 3) || (b[0].OneTimeKEM != nil) != (i < 2) {
			t.Fatalf("claim %d: ec=%q kem=%q", i, b[0].OneTimeEC, b[0].OneTimeKEM)
		}
		if string(b[0].LastResort) != "lrk-1" {
			t.Fatalf("claim %d: last resort %q", i, b[0].LastResort)
		}
	}
	if c, _ := s.Counts(ctx, crypto.Address{Account: a.ID, Device: 1}); c != (store.Counts{}) {
		t.Fatalf("counts after draining = %+v", c)
	}
	if _, _, err := s.ClaimBundles(ctx, accountID(99), nil); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("claim of unknown account: %v", err)
	}
	if _, _, err := s.ClaimBundles(ctx, a.ID, []crypto.DeviceID{9}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("claim of unknown device: %v", err)
	}
}

func testClaimConcurrent(t *testing.T, s store.Store) {
	ctx := context.Background()
	a := newAccount(1, 1, 1)
	const keys, workers, each = 100, 64, 4
	mustCreate(t, s, a, 1, fullKeys(keys, keys))
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				_, b, err := s.ClaimBundles(ctx, a.ID, nil)
				if err != nil || len(b) != 1 {
					t.Errorf("claim: %d, %v", len(b), err)
					return
				}
				mu.Lock()
				seen[string(b[0].OneTimeEC)]++
				seen[string(b[0].OneTimeKEM)]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	nEC, nKEM := 0, 0
	for k, n := range seen {
		if k == "" {
			continue
		}
		if n > 1 {
			t.Errorf("%q handed out %d times", k, n)
		}
		if bytes.HasPrefix([]byte(k), []byte("ec-")) {
			nEC++
		} else {
			nKEM++
		}
	}
	if nEC != keys || nKEM != keys {
		t.Errorf("handed out %d EC and %d KEM one-time keys, want %d each", nEC, nKEM, keys)
	}
	if seen[""] != 2*(workers*each-keys) {
		t.Errorf("%d empty claims, want %d", seen[""], 2*(workers*each-keys))
	}
}

func testClaimAllDevices(t *testing.T, s store.Store) {
	ctx := context.Background()
	a := newAccount(1, 1, 1, 2, 3)
	mustCreate(t, s, a, 1, fullKeys(1, 1))
	if err := s.PutPreKeys(ctx, crypto.Address{Account: a.ID, Device: 2}, fullKeys(0, 1)); err != nil {
		t.Fatal(err)
	}
	// Device 3 has no keys and is skipped.
	got, b, err := s.ClaimBundles(ctx, a.ID, nil)
	if err != nil || len(b) != 2 || got.Version != 1 {
		t.Fatalf("claim all: %d bundles, %v", len(b), err)
	}
	if b[0].Device.ID != 1 || b[1].Device.ID != 2 || b[0].OneTimeEC == nil || b[1].OneTimeEC != nil || b[1].OneTimeKEM == nil {
		t.Fatalf("bundles = %+v", b)
	}
}

func testDeleteAccount(t *testing.T, s store.Store) {
	ctx := context.Background()
	a, other := newAccount(1, 2, 1, 2), newAccount(2, 1, 1)
	mustCreate(t, s, a, 1, fullKeys(5, 5))
	mustCreate(t, s, other, 1, fullKeys(5, 5))
	if err := s.PutPreKeys(ctx, crypto.Address{Account: a.ID, Device: 2}, fullKeys(5, 5)); err != nil {
		t.Fatal(err)
	}
	if err := s.ClaimHandle(ctx, a.ID, "alice", "alice"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteAccount(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteAccount(ctx, a.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := s.Account(ctx, a.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Account after delete: %v", err)
	}
	if _, err := s.LookupHandle(ctx, "alice", "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("handle after delete: %v", err)
	}
	// The other account is untouched and the handle is free again.
	if c, err := s.Counts(ctx, crypto.Address{Account: other.ID, Device: 1}); err != nil || c.OneTimeEC != 5 {
		t.Fatalf("other account counts = %+v, %v", c, err)
	}
	if err := s.ClaimHandle(ctx, other.ID, "alice", "alice"); err != nil {
		t.Fatalf("claiming a deleted account's handle: %v", err)
	}
	// Registering again starts from nothing.
	mustCreate(t, s, newAccount(1, 1, 1), 1, store.DeviceKeys{})
	if c, _ := s.Counts(ctx, crypto.Address{Account: a.ID, Device: 1}); c != (store.Counts{}) {
		t.Fatalf("re-registered account inherited keys: %+v", c)
	}
	if _, err := s.Handle(ctx, a.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("re-registered account inherited a handle: %v", err)
	}
}

func testHandles(t *testing.T, s store.Store) {
	ctx := context.Background()
	a, b := newAccount(1, 1, 1), newAccount(2, 1, 1)
	mustCreate(t, s, a, 1, store.DeviceKeys{})
	mustCreate(t, s, b, 1, store.DeviceKeys{})
	if err := s.ClaimHandle(ctx, accountID(9), "x", "x"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("handle for unknown account: %v", err)
	}
	if err := s.ClaimHandle(ctx, a.ID, "alice", "alice"); err != nil {
		t.Fatal(err)
	}
	// Same skeleton, different spelling: taken.
	if err := s.ClaimHandle(ctx, b.ID, "a1ice", "alice"); !errors.Is(err, store.ErrHandleTaken) {
		t.Fatalf("look-alike claim: %v", err)
	}
	if id, err := s.LookupHandle(ctx, "alice", "alice"); err != nil || id != a.ID {
		t.Fatalf("lookup = %v, %v", id, err)
	}
	// Exact lookup only: the look-alike spelling finds nothing.
	if _, err := s.LookupHandle(ctx, "a1ice", "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("look-alike lookup: %v", err)
	}
	// Claiming a new handle releases the old one.
	if err := s.ClaimHandle(ctx, a.ID, "alice2", "alice2"); err != nil {
		t.Fatal(err)
	}
	if h, err := s.Handle(ctx, a.ID); err != nil || h != "alice2" {
		t.Fatalf("Handle = %q, %v", h, err)
	}
	if err := s.ClaimHandle(ctx, b.ID, "alice", "alice"); err != nil {
		t.Fatalf("claiming a released handle: %v", err)
	}
	if err := s.ReleaseHandle(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleaseHandle(ctx, a.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second release: %v", err)
	}
	if _, err := s.LookupHandle(ctx, "alice2", "alice2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("released handle still found: %v", err)
	}
}
