package pebblestore

import (
	"errors"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/client/store/storetest"
	"github.com/sotto-im/sotto/crypto"
)

// crashed opens the state a crash of fs would leave at this moment:
// exactly the data that was synced.
func crashed(t *testing.T, fs *vfs.MemFS) *DB {
	t.Helper()
	d, err := Open("s", testPassphrase, testOptions(fs.CrashClone(vfs.CrashCloneCfg{})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func newCrashable(t *testing.T) (*DB, *vfs.MemFS) {
	t.Helper()
	fs := vfs.NewCrashableMem()
	// Create does not sync the parent of the directory it makes (a real
	// application's data directory exists already): make "s" durable
	// first, as it would be.
	if err := fs.MkdirAll("s", 0o700); err != nil {
		t.Fatal(err)
	}
	root, err := fs.OpenDir("")
	if err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(root.Sync(), root.Close()); err != nil {
		t.Fatal(err)
	}
	d, err := Create("s", testPassphrase, testOptions(fs))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, fs
}

// TestDeferredSyncSurvivesCrash writes one of everything under a Deferred
// context, syncs, and finds all of it in the state a crash leaves.
func TestDeferredSyncSurvivesCrash(t *testing.T) {
	d, fs := newCrashable(t)
	storetest.WriteDeferredSet(t, d, store.Deferred(t.Context()))
	if err := d.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	storetest.CheckDeferredSet(t, crashed(t, fs))
}

// TestDeferredCloseReopen closes and reopens after deferred writes and a
// Sync: every write is there.
func TestDeferredCloseReopen(t *testing.T) {
	dir := t.TempDir()
	d, err := Create(dir, testPassphrase, testOptions(nil))
	if err != nil {
		t.Fatal(err)
	}
	storetest.WriteDeferredSet(t, d, store.Deferred(t.Context()))
	if err := d.Sync(t.Context()); err != nil {
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
	storetest.CheckDeferredSet(t, d)
}

// TestUndeferredWritesDurableOnReturn checks that without Deferred the
// synced writes are durable when they return, with no Sync: the package's
// durability promise is unchanged.
func TestUndeferredWritesDurableOnReturn(t *testing.T) {
	d, fs := newCrashable(t)
	ctx := t.Context()
	storetest.WriteDeferredSet(t, d, ctx)
	storetest.CheckDeferredSet(t, crashed(t, fs))
	// Each synced write on its own, crashing right after it.
	m := store.MessageRecord{Conversation: store.ConversationID{7}, ID: [16]byte{7}, Time: time.Unix(1e9, 7), Data: []byte("m")}
	if err := d.PutMessage(ctx, m); err != nil {
		t.Fatal(err)
	}
	if _, err := crashed(t, fs).GetMessage(ctx, m.Conversation, m.ID); err != nil {
		t.Fatalf("message lost in a crash after PutMessage returned: %v", err)
	}
	if err := d.StoreSession(ctx, crypto.Address{Account: alice, Device: 4}, []byte("session")); err != nil {
		t.Fatal(err)
	}
	if _, err := crashed(t, fs).LoadSession(ctx, crypto.Address{Account: alice, Device: 4}); err != nil {
		t.Fatalf("session lost in a crash after StoreSession returned: %v", err)
	}
}

// TestDeferredWritesNeedSync shows the deferral is real: a deferred write
// that no Sync followed is not in the state a crash leaves, and the next
// Sync brings it there.
func TestDeferredWritesNeedSync(t *testing.T) {
	d, fs := newCrashable(t)
	ctx := t.Context()
	dctx := store.Deferred(ctx)
	m := store.MessageRecord{Conversation: store.ConversationID{8}, ID: [16]byte{8}, Time: time.Unix(1e9, 8), Data: []byte("m")}
	if err := d.PutMessage(dctx, m); err != nil {
		t.Fatal(err)
	}
	if err := d.StoreSession(dctx, crypto.Address{Account: bob, Device: 2}, []byte("session")); err != nil {
		t.Fatal(err)
	}
	if _, err := d.GetMessage(ctx, m.Conversation, m.ID); err != nil {
		t.Fatalf("deferred write not visible before Sync: %v", err)
	}
	c := crashed(t, fs)
	if _, err := c.GetMessage(ctx, m.Conversation, m.ID); err == nil {
		t.Fatal("deferred PutMessage was synced without Sync")
	}
	if _, err := c.LoadSession(ctx, crypto.Address{Account: bob, Device: 2}); err == nil {
		t.Fatal("deferred StoreSession was synced without Sync")
	}
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	c = crashed(t, fs)
	if _, err := c.GetMessage(ctx, m.Conversation, m.ID); err != nil {
		t.Fatalf("message lost after Sync: %v", err)
	}
	if _, err := c.LoadSession(ctx, crypto.Address{Account: bob, Device: 2}); err != nil {
		t.Fatalf("session lost after Sync: %v", err)
	}
}
