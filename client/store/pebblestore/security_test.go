package pebblestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/crypto"
)

const marker = "PLAINTEXT-MARKER-7f3a9c"

var (
	alice = crypto.AccountID{0xa1, 0x1c, 0xe0, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11}
	bob   = crypto.AccountID{0xb0, 0xb0, 0xb0, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x12}
)

func convOf(a crypto.AccountID) store.ConversationID {
	var c store.ConversationID
	copy(c[:], a[:])
	copy(c[20:], "conversation")
	return c
}

// fill writes a bit of everything, with the marker in every message and
// record, and the contacts' IDs in keys and values.
func fill(t *testing.T, d *DB) {
	t.Helper()
	ctx := t.Context()
	base := time.Date(2026, 11, 22, 21, 0, 0, 0, time.UTC)
	for i, acc := range []crypto.AccountID{alice, bob} {
		c := convOf(acc)
		for n := range 200 {
			var id [16]byte
			copy(id[:], fmt.Sprintf("msgid-%02d-%06d", i, n))
			data := fmt.Appendf(nil, "%s message %d to %s", marker, n, acc)
			if err := d.PutMessage(ctx, store.MessageRecord{Conversation: c, ID: id, Time: base.Add(time.Duration(n) * time.Second), Data: data}); err != nil {
				t.Fatal(err)
			}
		}
		for dev := crypto.DeviceID(1); dev <= 3; dev++ {
			if err := d.StoreSession(ctx, crypto.Address{Account: acc, Device: dev}, []byte(marker+" session of "+acc.String())); err != nil {
				t.Fatal(err)
			}
		}
		if err := d.StoreRecord(ctx, "contact", acc[:], []byte(marker+" contact "+acc.String())); err != nil {
			t.Fatal(err)
		}
		if err := d.StoreRecord(ctx, "contact-by-name", []byte(acc.String()), acc[:]); err != nil {
			t.Fatal(err)
		}
		if _, err := d.MarkSeen(ctx, acc, [16]byte{byte(i)}, base); err != nil {
			t.Fatal(err)
		}
		var out [16]byte
		copy(out[:], "outbox-"+acc.String())
		if err := d.PutOutbox(ctx, out, []byte(marker+" outgoing to "+acc.String())); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.StoreIdentity(ctx, []byte(marker+" identity")); err != nil {
		t.Fatal(err)
	}
	if err := d.StoreSenderKey(ctx, store.GroupID{0x99}, crypto.Address{Account: alice, Device: 1}, []byte(marker+" sender key")); err != nil {
		t.Fatal(err)
	}
}

// TestNoPlaintextOnDisk writes messages and records holding a marker and
// the contacts' account IDs, and checks that no file of the store
// directory contains any of them, neither in the log nor, after a flush,
// in sstables.
func TestNoPlaintextOnDisk(t *testing.T) {
	dir := t.TempDir()
	d, err := Create(dir, testPassphrase, testOptions(nil))
	if err != nil {
		t.Fatal(err)
	}
	fill(t, d)
	if err := d.db.Flush(); err != nil {
		t.Fatal(err)
	}
	fill(t, d) // again, so that both the log and an sstable hold data
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	forbidden := map[string][]byte{
		"marker":                []byte(marker),
		"alice's account ID":    alice[:],
		"bob's account ID":      bob[:],
		"alice's ID as text":    []byte(alice.String()),
		"bob's ID as text":      []byte(bob.String()),
		"alice's conversation":  func() []byte { c := convOf(alice); return c[:] }(),
		"a message ID":          []byte("msgid-00-000001"),
		"a record kind":         []byte("contact-by-name"),
		"an outbox ID":          []byte("outbox-"),
		"the passphrase":        testPassphrase,
		"part of the ID prefix": alice[:8],
	}
	for what, n := range scanDir(t, dir, forbidden) {
		t.Errorf("%s found %d times in the store directory", what, n)
	}

	// And the data is there for the passphrase.
	d, err = Open(dir, testPassphrase, testOptions(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	list, err := d.ListMessages(t.Context(), convOf(alice), time.Time{}, time.Time{}, 1)
	if err != nil || len(list) != 1 || !bytes.Contains(list[0].Data, []byte(marker)) {
		t.Fatalf("ListMessages after reopen = %v, %v", list, err)
	}
}

func TestWrongPassphrase(t *testing.T) {
	fs := vfs.NewMem()
	d, err := Create("s", testPassphrase, testOptions(fs))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.StoreIdentity(t.Context(), []byte("me")); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	// (Not testPassphrase + "\x00": scrypt keys HMAC with the passphrase,
	// and HMAC pads short keys with zeros, so trailing NULs are equivalent.)
	for _, pass := range [][]byte{[]byte("wrong"), []byte("correct horse battery stapl"), {}, []byte("Correct horse battery staple")} {
		d, err := Open("s", pass, testOptions(fs))
		if !errors.Is(err, ErrWrongPassphrase) {
			t.Fatalf("Open with passphrase %q = %v, want ErrWrongPassphrase", pass, err)
		}
		if d != nil {
			t.Fatal("Open with a wrong passphrase returned a store")
		}
		if !strings.Contains(err.Error(), "wrong passphrase") || strings.Contains(err.Error(), "staple") {
			t.Fatalf("unclear error %q", err)
		}
	}
	// The right passphrase still opens it: failed attempts changed nothing.
	d, err = Open("s", testPassphrase, testOptions(fs))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if got, err := d.LoadIdentity(t.Context()); err != nil || string(got) != "me" {
		t.Fatalf("LoadIdentity = %q, %v", got, err)
	}
}

func TestChangePassphrase(t *testing.T) {
	dir := t.TempDir()
	newPass := []byte("a new passphrase")
	d, err := Create(dir, testPassphrase, testOptions(nil))
	if err != nil {
		t.Fatal(err)
	}
	fill(t, d)
	if err := d.ChangePassphrase([]byte("not the old one"), newPass); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("ChangePassphrase with a wrong old passphrase = %v, want ErrWrongPassphrase", err)
	}
	if err := d.ChangePassphrase(testPassphrase, nil); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("ChangePassphrase to an empty passphrase = %v, want ErrInvalid", err)
	}
	if err := d.ChangePassphrase(testPassphrase, newPass); err != nil {
		t.Fatal(err)
	}
	// The open store keeps working.
	if _, err := d.LoadIdentity(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, testPassphrase, testOptions(nil)); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("Open with the old passphrase = %v, want ErrWrongPassphrase", err)
	}
	d, err = Open(dir, newPass, testOptions(nil))
	if err != nil {
		t.Fatalf("Open with the new passphrase: %v", err)
	}
	defer d.Close()
	got, err := d.LoadIdentity(t.Context())
	if err != nil || !bytes.Contains(got, []byte(marker)) {
		t.Fatalf("LoadIdentity after the change = %q, %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(dir, keyFileTemp)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temporary key file left behind: %v", err)
	}
}

func TestKeyFileMode(t *testing.T) {
	dir := t.TempDir()
	d, err := Create(dir, testPassphrase, testOptions(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	check := func() {
		t.Helper()
		fi, err := os.Stat(filepath.Join(dir, keyFileName))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("key file mode %v, want 0600", fi.Mode().Perm())
		}
	}
	check()
	if err := d.ChangePassphrase(testPassphrase, []byte("other")); err != nil {
		t.Fatal(err)
	}
	check()
}

func TestCreateOpenErrors(t *testing.T) {
	fs := vfs.NewMem()
	if _, err := Open("none", testPassphrase, testOptions(fs)); !errors.Is(err, ErrNoStore) {
		t.Fatalf("Open of a missing store = %v, want ErrNoStore", err)
	}
	if _, err := Create("s", nil, testOptions(fs)); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("Create with an empty passphrase = %v, want ErrInvalid", err)
	}
	d, err := Create("s", testPassphrase, testOptions(fs))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Create("s", testPassphrase, testOptions(fs)); !errors.Is(err, ErrExists) {
		t.Fatalf("Create over an open store = %v, want ErrExists", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Create("s", testPassphrase, testOptions(fs)); !errors.Is(err, ErrExists) {
		t.Fatalf("Create over a store = %v, want ErrExists", err)
	}
	if err := d.Close(); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("second Close = %v, want ErrClosed", err)
	}

	// A key file from another store opens (the passphrase is right) but
	// does not match the database.
	other, err := Create("t", testPassphrase, testOptions(fs))
	if err != nil {
		t.Fatal(err)
	}
	other.Close()
	kf, err := readKeyFile(fs, "t")
	if err != nil {
		t.Fatal(err)
	}
	if err := writeKeyFile(fs, "s", kf); err != nil {
		t.Fatal(err)
	}
	if _, err := Open("s", testPassphrase, testOptions(fs)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open with another store's key file = %v, want ErrCorrupt", err)
	}
}

// TestReopen checks that everything written is there after Close and Open,
// and that the outbox keeps its order across the reopen.
func TestReopen(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	d, err := Create(dir, testPassphrase, testOptions(nil))
	if err != nil {
		t.Fatal(err)
	}
	fill(t, d)
	if err := d.StorePreKey(ctx, store.KEM, 42, []byte("kem 42")); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d, err = Open(dir, testPassphrase, testOptions(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.PutOutbox(ctx, [16]byte{0xee}, []byte("after reopen")); err != nil {
		t.Fatal(err)
	}
	var recs []string
	if err := d.ListOutbox(ctx, func(_ [16]byte, rec []byte) error { recs = append(recs, string(rec)); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 || !strings.Contains(recs[0], alice.String()) || !strings.Contains(recs[1], bob.String()) || recs[2] != "after reopen" {
		t.Fatalf("outbox after reopen = %q", recs)
	}
	list, err := d.ListMessages(ctx, convOf(bob), time.Time{}, time.Time{}, 0)
	if err != nil || len(list) != 200 {
		t.Fatalf("ListMessages after reopen = %d, %v", len(list), err)
	}
	devs, err := d.SessionDevices(ctx, alice)
	if err != nil || len(devs) != 3 {
		t.Fatalf("SessionDevices after reopen = %v, %v", devs, err)
	}
	if seen, err := d.MarkSeen(ctx, bob, [16]byte{1}, time.Now()); err != nil || !seen {
		t.Fatalf("MarkSeen after reopen = %v, %v", seen, err)
	}
	if rec, err := d.LoadPreKey(ctx, store.KEM, 42); err != nil || string(rec) != "kem 42" {
		t.Fatalf("LoadPreKey after reopen = %q, %v", rec, err)
	}
	if rec, err := d.LoadRecord(ctx, "contact", alice[:]); err != nil || !bytes.Contains(rec, []byte(marker)) {
		t.Fatalf("LoadRecord after reopen = %q, %v", rec, err)
	}
}

// TestSwappedValues moves sealed values between keys behind the store's
// back: each must fail to open instead of reading as another record.
func TestSwappedValues(t *testing.T) {
	ctx := t.Context()
	d, err := Create("s", testPassphrase, testOptions(vfs.NewMem()))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	a, b := crypto.Address{Account: alice, Device: 1}, crypto.Address{Account: bob, Device: 1}
	if err := d.StoreSession(ctx, a, []byte("alice")); err != nil {
		t.Fatal(err)
	}
	if err := d.StoreSession(ctx, b, []byte("bob")); err != nil {
		t.Fatal(err)
	}
	ka, kb := d.sessionKey(a), d.sessionKey(b)
	raw := func(k []byte) []byte {
		v, c, err := d.db.Get(k)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return bytes.Clone(v)
	}
	va, vb := raw(ka), raw(kb)
	if err := d.db.Set(ka, vb, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if _, err := d.LoadSession(ctx, a); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("LoadSession of a value moved from another key = %v, want ErrCorrupt", err)
	}
	// A flipped bit anywhere fails too.
	for i := range va {
		v := bytes.Clone(va)
		v[i] ^= 0x04
		if err := d.db.Set(ka, v, pebble.NoSync); err != nil {
			t.Fatal(err)
		}
		if _, err := d.LoadSession(ctx, a); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("LoadSession with bit flipped in byte %d = %v, want ErrCorrupt", i, err)
		}
	}
	if err := d.db.Set(ka, va, pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	if got, err := d.LoadSession(ctx, a); err != nil || string(got) != "alice" {
		t.Fatalf("LoadSession of the restored value = %q, %v", got, err)
	}
}

// scanDir counts the occurrences of each pattern in the files under dir.
func scanDir(t *testing.T, dir string, patterns map[string][]byte) map[string]int {
	t.Helper()
	found := make(map[string]int)
	size := 0
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		size += len(b)
		for what, pat := range patterns {
			if n := bytes.Count(b, pat); n > 0 {
				found[what] += n
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("scanned %d bytes under %s", size, dir)
	return found
}

// TestScanFindsPlaintext is the control of TestNoPlaintextOnDisk: a
// marker written without sealing is found by the same scan.
func TestScanFindsPlaintext(t *testing.T) {
	dir := t.TempDir()
	d, err := Create(dir, testPassphrase, testOptions(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.db.Set([]byte("raw"), []byte(marker), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if found := scanDir(t, dir, map[string][]byte{"marker": []byte(marker)}); found["marker"] == 0 {
		t.Fatal("the scan does not find a marker stored in the clear")
	}
}
