package pebblestore

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"testing"

	"filippo.io/age"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/client/store/storetest"
	"github.com/sotto-im/sotto/crypto"
)

// testWorkFactor keeps scrypt cheap in tests: at the crypto package's
// work factor (18) one wrap or unwrap takes about 3 s on the project's
// machines and 17 s under the race detector.
const testWorkFactor = 10

var testPassphrase = []byte("correct horse battery staple")

// testWrap wraps a raw store key the way crypto.WrapStoreKey does
// (PROTOCOL.md §10: an age file with one scrypt stanza holding version 1
// || key), at testWorkFactor. The crypto package exports wrapping at its
// full work factor only; the store always unwraps with
// crypto.UnwrapStoreKey, so a fixture in any other format would fail every
// test.
func testWrap(raw []byte, passphrase string) ([]byte, error) {
	r, err := age.NewScryptRecipient(passphrase)
	if err != nil {
		return nil, err
	}
	r.SetWorkFactor(testWorkFactor)
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, r)
	if err != nil {
		return nil, err
	}
	w.Write([]byte{1})
	w.Write(raw)
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func testNewKey(passphrase string) (*crypto.StoreKey, []byte, error) {
	raw := make([]byte, crypto.StoreKeySize)
	rand.Read(raw)
	wrapped, err := testWrap(raw, passphrase)
	if err != nil {
		return nil, nil, err
	}
	k, err := crypto.UnwrapStoreKey(wrapped, passphrase)
	return k, wrapped, err
}

func testRewrap(wrapped []byte, oldPassphrase, newPassphrase string) ([]byte, error) {
	// Check the old passphrase the way the store does in production.
	if _, err := crypto.UnwrapStoreKey(wrapped, oldPassphrase); err != nil {
		return nil, err
	}
	id, err := age.NewScryptIdentity(oldPassphrase)
	if err != nil {
		return nil, err
	}
	r, err := age.Decrypt(bytes.NewReader(wrapped), id)
	if err != nil {
		return nil, err
	}
	pt, err := io.ReadAll(r)
	if err != nil || len(pt) != 1+crypto.StoreKeySize {
		return nil, fmt.Errorf("test rewrap: %d bytes, %v", len(pt), err)
	}
	return testWrap(pt[1:], newPassphrase)
}

func testOptions(fs vfs.FS) *Options {
	return &Options{FS: fs, newKey: testNewKey, rewrap: testRewrap}
}

func TestConformanceDisk(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		d, err := Create(t.TempDir(), testPassphrase, testOptions(nil))
		if err != nil {
			t.Fatal(err)
		}
		return d
	})
}

func TestConformanceMem(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		d, err := Create("store", testPassphrase, testOptions(vfs.NewMem()))
		if err != nil {
			t.Fatal(err)
		}
		return d
	})
}

// TestDefaultWorkFactor runs Create and ChangePassphrase through the crypto
// package's own wrapping, at its full work factor (every test unwraps with
// crypto.UnwrapStoreKey already).
func TestDefaultWorkFactor(t *testing.T) {
	if raceEnabled || testing.Short() {
		t.Skip("scrypt at 2^18 takes about 17 s per call under the race detector")
	}
	fs := vfs.NewMem()
	d, err := Create("s", testPassphrase, &Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.ChangePassphrase(testPassphrase, []byte("new")); err != nil {
		t.Fatal(err)
	}
	wrapped, err := readKeyFile(fs, "s")
	if err != nil {
		t.Fatal(err)
	}
	// The rewrapped key is at the full work factor: a cheap unwrap with a
	// lower ceiling would refuse it. Checking its passphrase is left to
	// the fast tests.
	if !bytes.Contains(wrapped, []byte("scrypt")) || !bytes.Contains(wrapped, []byte(" 18\n")) {
		t.Fatalf("rewrapped key file does not use scrypt at 2^18:\n%q", wrapped)
	}
}
