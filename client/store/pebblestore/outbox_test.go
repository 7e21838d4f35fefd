package pebblestore

import (
	"context"
	"testing"
	"time"

	"github.com/sotto-im/sotto/crypto"
)

// TestOutboxIndexAcrossReopen: the in-memory outbox index is rebuilt from
// the entries at open, so that after a reopen a put of a known ID keeps
// its place, a delete removes the entry, and new entries go last.
func TestOutboxIndexAcrossReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d, err := Create(dir, testPassphrase, testOptions(nil))
	if err != nil {
		t.Fatal(err)
	}
	for i := byte(1); i <= 3; i++ {
		if err := d.PutOutbox(ctx, [16]byte{i}, []byte{'a', i}); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if d, err = Open(dir, testPassphrase, testOptions(nil)); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.PutOutbox(ctx, [16]byte{1}, []byte("b1")); err != nil { // keeps its place
		t.Fatal(err)
	}
	if err := d.DeleteOutbox(ctx, [16]byte{2}); err != nil {
		t.Fatal(err)
	}
	if err := d.PutOutbox(ctx, [16]byte{4}, []byte("a4")); err != nil {
		t.Fatal(err)
	}
	var got []string
	if err := d.ListOutbox(ctx, func(id [16]byte, rec []byte) error {
		got = append(got, string(rune('0'+id[0]))+":"+string(rec))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := []string{"1:b1", "3:a\x03", "4:a4"}
	if len(got) != len(want) {
		t.Fatalf("outbox %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("outbox %q, want %q", got, want)
		}
	}
}

// TestMarkSeenAfterSeen: Seen's miss spares MarkSeen a lookup, and the
// answers stay right: unseen, then marked, then seen and marked again.
func TestMarkSeenAfterSeen(t *testing.T) {
	ctx := context.Background()
	d, err := Create(t.TempDir(), testPassphrase, testOptions(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var sender crypto.AccountID
	id := [16]byte{7}
	if seen, err := d.Seen(ctx, sender, id); err != nil || seen {
		t.Fatalf("Seen = %v, %v before any mark", seen, err)
	}
	if already, err := d.MarkSeen(ctx, sender, id, time.Now()); err != nil || already {
		t.Fatalf("first MarkSeen = %v, %v", already, err)
	}
	if seen, err := d.Seen(ctx, sender, id); err != nil || !seen {
		t.Fatalf("Seen = %v, %v after the mark", seen, err)
	}
	if already, err := d.MarkSeen(ctx, sender, id, time.Now()); err != nil || !already {
		t.Fatalf("second MarkSeen = %v, %v", already, err)
	}
}
