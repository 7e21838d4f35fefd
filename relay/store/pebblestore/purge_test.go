package pebblestore

import (
	"bytes"
	"crypto/rand"
	"testing"
	"time"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/relay/store"
)

// record is one key/value pair of the whole keyspace.
type record struct{ k, v []byte }

// allRecords returns every key and value in the database, in order.
func allRecords(t *testing.T, d *DB) []record {
	t.Helper()
	var recs []record
	if err := d.scan(nil, nil, func(k, v []byte) (bool, error) {
		recs = append(recs, record{k, v})
		return true, nil
	}); err != nil {
		t.Fatal(err)
	}
	return recs
}

// naming returns the records whose key or value contains any of needles.
func naming(recs []record, needles ...[]byte) []record {
	var out []record
	for _, r := range recs {
		for _, n := range needles {
			if bytes.Contains(r.k, n) || bytes.Contains(r.v, n) {
				out = append(out, r)
				break
			}
		}
	}
	return out
}

func equalRecords(a, b []record) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i].k, b[i].k) || !bytes.Equal(a[i].v, b[i].v) {
			return false
		}
	}
	return true
}

// purgeFixture fills a store with everything the relay keeps for two
// accounts (victim, with devices 1 and 2, and control): queued messages
// with inline and shared bodies (one shared between the two accounts),
// acknowledged ones whose idempotency records remain, an access key hash
// and push endpoints. Every body and message ID of the victim's own
// messages contains the victim's account ID, so a scan for those bytes also
// finds leftover bodies and IDs.
func purgeFixture(t *testing.T) (d *DB, victim, control crypto.AccountID) {
	t.Helper()
	d = diskFixture(t, Options{}).open(t)
	rand.Read(victim[:])
	rand.Read(control[:])
	v1 := store.QueueID{Account: victim, Device: 1}
	v2 := store.QueueID{Account: victim, Device: 2}
	c1 := store.QueueID{Account: control, Device: 1}
	exp := time.Now().Add(time.Hour)
	entry := func(q store.QueueID, prio uint8) store.Entry {
		e := store.Entry{Queue: q, Priority: prio, Expires: exp, Header: append([]byte("hdr"), q.Account[:]...)}
		rand.Read(e.ID[:])
		copy(e.ID[:], q.Account[:8]) // the ID names the account too
		return e
	}
	for i := range 6 {
		for _, q := range []store.QueueID{v1, v2, c1} {
			// Inline body, one entry.
			body := append([]byte("inline body of "), q.Account[:]...)
			if _, err := d.Put(ctx, body, []store.Entry{entry(q, uint8(i%3))}); err != nil {
				t.Fatal(err)
			}
		}
		// Shared body, the victim's two devices.
		if _, err := d.Put(ctx, append([]byte("shared body of "), victim[:]...), []store.Entry{entry(v1, 0), entry(v2, 1)}); err != nil {
			t.Fatal(err)
		}
		// Shared body, both accounts: it must outlive the victim's purge.
		if _, err := d.Put(ctx, []byte("group body"), []store.Entry{entry(v1, 0), entry(c1, 0)}); err != nil {
			t.Fatal(err)
		}
	}
	// Acknowledge half of every queue: their idempotency records stay.
	for _, q := range []store.QueueID{v1, v2, c1} {
		msgs, err := d.Fetch(ctx, q, store.Cursor{}, 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs[:len(msgs)/2] {
			if err := d.Ack(ctx, q, m.Key); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, a := range []crypto.AccountID{victim, control} {
		if err := d.SetAccessKeyHash(ctx, a, [32]byte{1, 2, 3}); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []store.QueueID{v1, v2, c1} {
		if err := d.SetPushEndpoint(ctx, q, "https://push.example/"+q.String()); err != nil {
			t.Fatal(err)
		}
	}
	// Some of it in sstables, some in the memtable.
	if err := d.Pebble().Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Put(ctx, append([]byte("late body of "), victim[:]...), []store.Entry{entry(v1, 2), entry(v2, 2)}); err != nil {
		t.Fatal(err)
	}
	return d, victim, control
}

func TestPurgeAccountLeavesNothingOfIt(t *testing.T) {
	d, victim, control := purgeFixture(t)
	before := allRecords(t, d)
	if len(naming(before, victim[:])) == 0 {
		t.Fatal("fixture holds nothing of the victim")
	}
	controlBefore := naming(before, control[:])
	if len(controlBefore) == 0 {
		t.Fatal("fixture holds nothing of the control account")
	}
	if err := d.PurgeAccount(ctx, victim); err != nil {
		t.Fatal(err)
	}
	after := allRecords(t, d)
	if left := naming(after, victim[:], victim[:8]); len(left) != 0 {
		t.Fatalf("after PurgeAccount %d records still name the account, first key %x value %x", len(left), left[0].k, left[0].v)
	}
	if !equalRecords(naming(after, control[:]), controlBefore) {
		t.Fatal("PurgeAccount changed the control account's records")
	}
	// The group body is the control's now, and still readable.
	msgs, err := d.Fetch(ctx, store.QueueID{Account: control, Device: 1}, store.Cursor{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	group := 0
	for _, m := range msgs {
		if string(m.Body) == "group body" {
			group++
		}
	}
	if group == 0 {
		t.Fatal("the body shared with the control account went with the purge")
	}
	if h, ok, err := d.AccessKeyHash(ctx, victim); err != nil || ok {
		t.Fatalf("access key after purge: %x %v %v", h, ok, err)
	}
	checkInvariants(t, d)
	// Compacted, the deleted records are gone from the files too (the
	// scan above sees only live keys).
	if err := d.Pebble().Compact(ctx, []byte{0}, []byte{0xff}, true); err != nil {
		t.Fatal(err)
	}
	if left := naming(allRecords(t, d), victim[:]); len(left) != 0 {
		t.Fatalf("after compaction %d records name the account", len(left))
	}
}

func TestPurgeDeviceLeavesNothingOfIt(t *testing.T) {
	d, victim, control := purgeFixture(t)
	v1 := store.QueueID{Account: victim, Device: 1}
	v1ID := putQueueID(nil, v1)
	v2ID := putQueueID(nil, store.QueueID{Account: victim, Device: 2})
	before := allRecords(t, d)
	if len(naming(before, v1ID)) == 0 {
		t.Fatal("fixture holds nothing of the device")
	}
	others := naming(before, v2ID, control[:])
	if err := d.PurgeDevice(ctx, v1); err != nil {
		t.Fatal(err)
	}
	after := allRecords(t, d)
	if left := naming(after, v1ID); len(left) != 0 {
		t.Fatalf("after PurgeDevice %d records still name the device, first key %x value %x", len(left), left[0].k, left[0].v)
	}
	if u, err := d.PushEndpoint(ctx, v1); err != nil || u != "" {
		t.Fatalf("push endpoint after purge: %q %v", u, err)
	}
	// The other device, the account's access key and the control account
	// are untouched (bodies shared with the purged device aside, whose
	// reference counts dropped).
	var keep []record
	for _, r := range others {
		if r.k[0] != tRefs {
			keep = append(keep, r)
		}
	}
	var kept []record
	for _, r := range naming(after, v2ID, control[:]) {
		if r.k[0] != tRefs {
			kept = append(kept, r)
		}
	}
	if !equalRecords(kept, keep) {
		t.Fatalf("PurgeDevice changed other devices' records: %d before, %d after", len(keep), len(kept))
	}
	if _, ok, err := d.AccessKeyHash(ctx, victim); err != nil || !ok {
		t.Fatalf("the account's access key went with one device: %v %v", ok, err)
	}
	checkInvariants(t, d)
}
