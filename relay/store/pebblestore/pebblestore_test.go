package pebblestore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sotto-im/sotto/relay/store"
	"github.com/sotto-im/sotto/relay/store/storetest"
)

var ctx = context.Background()

// fixture opens stores in one directory of one filesystem.
type fixture struct {
	fs   vfs.FS
	dir  string
	opts Options
}

func (f fixture) open(t testing.TB) *DB {
	t.Helper()
	o := f.opts
	o.FS = f.fs
	o.Logf = t.Logf
	d, err := Open(f.dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func diskFixture(t testing.TB, opts Options) fixture {
	return fixture{fs: vfs.Default, dir: t.TempDir(), opts: opts}
}

func memFixture(_ testing.TB, opts Options) fixture {
	return fixture{fs: vfs.NewMem(), dir: "db", opts: opts}
}

func suite(newFixture func(testing.TB, Options) fixture) storetest.Queues {
	fixtures := map[store.Queues]fixture{}
	return storetest.Queues{
		Open: func(t *testing.T) store.Queues {
			f := newFixture(t, Options{})
			d := f.open(t)
			fixtures[d] = f
			return d
		},
		OpenQuota: func(t *testing.T, maxMessages int, maxBytes int64) store.Queues {
			return newFixture(t, Options{MaxQueueMessages: maxMessages, MaxQueueBytes: maxBytes}).open(t)
		},
		Reopen: func(t *testing.T, s store.Queues) store.Queues {
			if err := s.(*DB).Close(); err != nil {
				t.Fatal(err)
			}
			f := fixtures[s]
			d := f.open(t)
			fixtures[d] = f
			return d
		},
		Bodies: func(t *testing.T, s store.Queues) int {
			st, err := s.(*DB).Stats()
			if err != nil {
				t.Fatal(err)
			}
			return st.Bodies
		},
		Check: func(t *testing.T, s store.Queues) { checkInvariants(t, s.(*DB)) },
		Keys: func(t *testing.T, s store.Queues) [][]byte {
			var keys [][]byte
			if err := s.(*DB).Keys(func(k []byte) { keys = append(keys, k) }); err != nil {
				t.Fatal(err)
			}
			return keys
		},
	}
}

func TestQueuesDisk(t *testing.T) { storetest.RunQueuesWith(t, suite(diskFixture)) }
func TestQueuesMem(t *testing.T)  { storetest.RunQueuesWith(t, suite(memFixture)) }

func TestDevicesDisk(t *testing.T) {
	storetest.RunDevices(t, func(t *testing.T) store.Devices { return diskFixture(t, Options{}).open(t) })
}

func TestDevicesMem(t *testing.T) {
	storetest.RunDevices(t, func(t *testing.T) store.Devices { return memFixture(t, Options{}).open(t) })
}

func TestRetryAfterAckWithinDedupWindow(t *testing.T) {
	now := time.Date(2026, 11, 22, 21, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	d := memFixture(t, Options{Now: clock, DedupWindow: time.Hour}).open(t)
	q := storetest.Q(1, 1)
	e := store.Entry{Queue: q, ID: storetest.MsgID(1), Expires: now.Add(24 * time.Hour)}
	if _, err := d.Put(ctx, []byte("b"), []store.Entry{e}); err != nil {
		t.Fatal(err)
	}
	msgs, err := d.Fetch(ctx, q, store.Cursor{}, 10)
	if err != nil || len(msgs) != 1 {
		t.Fatal(len(msgs), err)
	}
	if err := d.Ack(ctx, q, msgs[0].Key); err != nil {
		t.Fatal(err)
	}
	// A late retry within the window is recognised, not delivered again.
	r, err := d.Put(ctx, []byte("b"), []store.Entry{e})
	if err != nil || !r[0].Duplicate {
		t.Fatalf("retry after ack: %+v %v", r, err)
	}
	// The sweep forgets the ID after the window without counting it as an
	// expired message; a retry after that is stored again.
	if n, err := d.Sweep(ctx, now.Add(30*time.Minute)); err != nil || n != 0 {
		t.Fatalf("early sweep: %d %v", n, err)
	}
	if r, _ := d.Put(ctx, []byte("b"), []store.Entry{e}); !r[0].Duplicate {
		t.Fatal("forgotten inside the window")
	}
	if n, err := d.Sweep(ctx, now.Add(61*time.Minute)); err != nil || n != 0 {
		t.Fatalf("sweep: %d %v", n, err)
	}
	if r, _ := d.Put(ctx, []byte("b"), []store.Entry{e}); r[0].Duplicate {
		t.Fatal("still remembered after the window")
	}
	var keys int
	_ = d.Keys(func([]byte) { keys++ })
	// 1 entry with its body inline: q, i, e, n.
	if keys != 4 {
		t.Fatalf("%d keys, want 4", keys)
	}
}

func TestNoDedupWindow(t *testing.T) {
	d := memFixture(t, Options{DedupWindow: -1}).open(t)
	q := storetest.Q(1, 1)
	e := store.Entry{Queue: q, ID: storetest.MsgID(1), Expires: time.Now().Add(time.Hour)}
	if _, err := d.Put(ctx, []byte("b"), []store.Entry{e}); err != nil {
		t.Fatal(err)
	}
	msgs, _ := d.Fetch(ctx, q, store.Cursor{}, 10)
	if err := d.Ack(ctx, q, msgs[0].Key); err != nil {
		t.Fatal(err)
	}
	var keys int
	_ = d.Keys(func([]byte) { keys++ })
	if keys != 1 { // only the queue's counters
		t.Fatalf("%d keys left after ack, want 1", keys)
	}
}

func TestDefaultRetention(t *testing.T) {
	now := time.Date(2026, 11, 22, 21, 0, 0, 0, time.UTC)
	d := memFixture(t, Options{Now: func() time.Time { return now }}).open(t)
	q := storetest.Q(1, 1)
	if _, err := d.Put(ctx, []byte("b"), []store.Entry{{Queue: q, ID: storetest.MsgID(1)}}); err != nil {
		t.Fatal(err)
	}
	msgs, err := d.Fetch(ctx, q, store.Cursor{}, 1)
	if err != nil || len(msgs) != 1 {
		t.Fatal(err)
	}
	if !msgs[0].Expires.Equal(now.Add(DefaultRetention)) || !msgs[0].Stored.Equal(now) {
		t.Fatalf("stored %v expires %v", msgs[0].Stored, msgs[0].Expires)
	}
}

func TestMetricsAndStats(t *testing.T) {
	reg := prometheus.NewRegistry()
	d := memFixture(t, Options{Registerer: reg, MaxQueueMessages: 1}).open(t)
	q := storetest.Q(1, 1)
	e := store.Entry{Queue: q, ID: storetest.MsgID(1), Expires: time.Now().Add(time.Hour)}
	for range 2 {
		if _, err := d.Put(ctx, []byte("body"), []store.Entry{e}); err != nil {
			t.Fatal(err)
		}
	}
	e.ID = storetest.MsgID(2)
	if _, err := d.Put(ctx, []byte("body"), []store.Entry{e}); !errors.Is(err, store.ErrQueueFull) {
		t.Fatal(err)
	}
	st, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Bodies != 1 || st.BodyBytes != 4 || st.Stored != 1 || st.Duplicate != 1 || st.QueueFull != 1 || st.Batches < 2 {
		t.Fatalf("stats %+v", st)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"sotto_relay_store_entries_stored_total", "sotto_relay_store_sync_seconds", "sotto_relay_store_commit_group_requests", "sotto_relay_store_queue_full_total"} {
		if !names[n] {
			t.Errorf("metric %s not registered (have %v)", n, names)
		}
	}
	// A second store on the same registry is refused, not a panic.
	if _, err := Open("db2", Options{FS: vfs.NewMem(), Registerer: reg}); err == nil {
		t.Fatal("duplicate registration accepted")
	}
}

func TestClosed(t *testing.T) {
	d := memFixture(t, Options{}).open(t)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := d.Put(ctx, []byte("x"), []store.Entry{{Queue: storetest.Q(1, 1)}})
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("Put after Close: %v", err)
	}
	if err := d.Ack(ctx, storetest.Q(1, 1), store.Cursor{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Ack after Close: %v", err)
	}
}

// TestSameBatchIdempotency drives the committer's batch directly: a Put, a
// retry of it, an acknowledgement that forgets the ID and a new Put of the
// same ID, all in one batch, must see each other.
func TestSameBatchIdempotency(t *testing.T) {
	d := memFixture(t, Options{DedupWindow: -1}).open(t)
	q := storetest.Q(1, 1)
	e := store.Entry{Queue: q, ID: storetest.MsgID(1), Expires: time.Now().Add(time.Hour)}
	if _, err := d.Put(ctx, []byte("first"), []store.Entry{e}); err != nil {
		t.Fatal(err)
	}
	msgs, err := d.Fetch(ctx, q, store.Cursor{}, 1)
	if err != nil || len(msgs) != 1 {
		t.Fatal(err)
	}
	// Build one batch by hand, as the committer would (it is idle now).
	p := d.newPending()
	retry := &putOp{body: []byte("first"), entries: []store.Entry{e}}
	ack := &ackOp{q: q, key: msgs[0].Key}
	again := &putOp{body: []byte("second"), entries: []store.Entry{e}}
	another := &putOp{body: []byte("third"), entries: []store.Entry{e}}
	for _, o := range []op{retry, ack, again, another} {
		p.add(&request{op: o, done: make(chan error, 1)})
	}
	if !retry.results[0].Duplicate || again.results[0].Duplicate || !another.results[0].Duplicate {
		t.Fatalf("retry %+v again %+v another %+v", retry.results, again.results, another.results)
	}
	if err := d.pdb.Apply(p.w.b, nil); err != nil {
		t.Fatal(err)
	}
	d.applied(p.w, nil)
	_ = p.w.b.Close()
	msgs, err = d.Fetch(ctx, q, store.Cursor{}, 10)
	if err != nil || len(msgs) != 1 || string(msgs[0].Body) != "second" {
		t.Fatalf("after the batch: %d messages, %v", len(msgs), err)
	}
	checkInvariants(t, d)
}
