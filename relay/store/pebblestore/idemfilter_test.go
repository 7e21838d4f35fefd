package pebblestore

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/sotto-im/sotto/relay/store"
	"github.com/sotto-im/sotto/relay/store/storetest"
)

func TestIdemFilterNoFalseNegatives(t *testing.T) {
	f := newIdemFilter(10_000)
	key := func(i int) []byte {
		return idemKey(storetest.Q(byte(i), 1), benchID(uint64(i)))
	}
	for i := range 10_000 {
		f.add(key(i))
	}
	for i := range 10_000 {
		if !f.mayContain(key(i)) {
			t.Fatalf("key %d added but not found", i)
		}
	}
	fp := 0
	for i := 10_000; i < 110_000; i++ {
		if f.mayContain(key(i)) {
			fp++
		}
	}
	// 10 bits per key (rounded up to a power of two) and 7 hashes: well
	// under 1 %.
	if rate := float64(fp) / 100_000; rate > 0.02 {
		t.Fatalf("false positive rate %.3f", rate)
	}
	if f.outgrown() {
		t.Fatal("outgrown at its capacity")
	}
	f.add(key(-1))
	if !f.outgrown() {
		t.Fatal("not outgrown past its capacity")
	}
}

// TestIdemFilterGrowsAndReopens uses a filter sized for 64 keys: it must
// be rebuilt several times, and every retry must still be found a
// duplicate, before and after a reopen (which rebuilds it from the
// database) and after acknowledgements (whose re-filed keys go through the
// filter too).
func TestIdemFilterGrowsAndReopens(t *testing.T) {
	f := diskFixture(t, Options{idemFilterKeys: 64})
	d := f.open(t)
	q := storetest.Q(1, 1)
	entry := func(i int) []store.Entry {
		var id [16]byte
		binary.BigEndian.PutUint64(id[:], uint64(i))
		return []store.Entry{{Queue: q, ID: id, Expires: time.Now().Add(time.Hour)}}
	}
	const n = 2000
	for i := range n {
		if r, err := d.Put(ctx, []byte("x"), entry(i)); err != nil || r[0].Duplicate {
			t.Fatalf("put %d: %+v, %v", i, r, err)
		}
	}
	if d.idem.capacity < n {
		t.Fatalf("filter capacity %d after %d keys: never rebuilt", d.idem.capacity, n)
	}
	msgs, err := d.Fetch(ctx, q, store.Cursor{}, n/2)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if err := d.Ack(ctx, q, m.Key); err != nil {
			t.Fatal(err)
		}
	}
	retryAll := func(d *DB) {
		t.Helper()
		for i := range n {
			if r, err := d.Put(ctx, []byte("x"), entry(i)); err != nil || !r[0].Duplicate {
				t.Fatalf("retry %d: %+v, %v; want a duplicate", i, r, err)
			}
		}
	}
	retryAll(d)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d = f.open(t)
	retryAll(d)
	if got := len(fetchAllRaw(t, d, q)); got != n/2 {
		t.Fatalf("%d messages queued, want %d", got, n/2)
	}
	checkInvariants(t, d)
}

func fetchAllRaw(t *testing.T, d *DB, q store.QueueID) []store.Message {
	t.Helper()
	msgs, err := d.Fetch(ctx, q, store.Cursor{}, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}
