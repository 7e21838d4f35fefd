package recovering_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sotto-im/sotto/relay/store"
	"github.com/sotto-im/sotto/relay/store/pebblestore"
	"github.com/sotto-im/sotto/relay/store/recovering"
	"github.com/sotto-im/sotto/relay/store/storetest"
)

var ctx = context.Background()

// openOn opens a wrapper over a pebblestore in dir on fs.
func openOn(t *testing.T, fs vfs.FS, dir string, reg prometheus.Registerer, onRecover func()) *recovering.DB {
	t.Helper()
	d, err := recovering.Open(recovering.Options{
		Dir: dir,
		FS:  fs,
		Open: func() (recovering.Store, error) {
			return pebblestore.Open(dir, pebblestore.Options{FS: fs, Logf: func(string, ...any) {},
				Registerer: recovering.Reregisterer(reg)})
		},
		OnRecover:  onRecover,
		MinBackoff: 20 * time.Millisecond,
		MaxBackoff: 100 * time.Millisecond,
		Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// The wrapper passes the relay store's conformance suites, including the
// OrderedPutter tests (by delegation to pebblestore).
func TestConformance(t *testing.T) {
	open := func(t *testing.T) *recovering.DB {
		fs := vfs.NewMem()
		d := openOn(t, fs, "db", prometheus.NewRegistry(), nil)
		t.Cleanup(func() { d.Close() })
		return d
	}
	storetest.RunQueuesWith(t, storetest.Queues{
		Open: func(t *testing.T) store.Queues { return open(t) },
	})
	storetest.RunDevices(t, func(t *testing.T) store.Devices { return open(t) })
}

// fault fails the operations it matches while on.
type fault struct {
	on    atomic.Bool
	match func(errorfs.Op) bool
	err   error
}

func (f *fault) MaybeError(op errorfs.Op) error {
	if f.on.Load() && f.match(op) {
		return f.err
	}
	return nil
}

func (f *fault) String() string { return "test fault" }

// walOrProbe matches writes to the WAL and to the wrapper's disk probe, as
// a failing disk would fail both.
func walOrProbe(op errorfs.Op) bool {
	return op.Kind.ReadOrWrite() == errorfs.OpIsWrite &&
		(strings.HasSuffix(op.Path, ".log") || strings.HasSuffix(op.Path, recovering.ProbeFile))
}

func anyWrite(op errorfs.Op) bool { return op.Kind.ReadOrWrite() == errorfs.OpIsWrite }

// TestRecovers turns a storage fault on under concurrent Puts, checks that
// writes are refused and reads go on while it lasts, turns it off, and
// checks that Puts succeed again within seconds without anything being
// reopened by hand, that live connections were told (OnRecover), that the
// metrics registered again, and that every Put answered nil — before,
// during and after the fault — is stored exactly once, also after a crash
// that drops everything unsynced.
func TestRecovers(t *testing.T) {
	for _, tc := range []struct {
		name  string
		match func(errorfs.Op) bool
		err   error
	}{
		{"wal write error", walOrProbe, errorfs.ErrInjected},
		{"full disk", anyWrite, fmt.Errorf("injected: %w", syscall.ENOSPC)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := vfs.NewCrashableMem()
			f := &fault{match: tc.match, err: tc.err}
			reg := prometheus.NewRegistry()
			var recovered atomic.Int32
			d := openOn(t, errorfs.Wrap(mem, f), "db", reg, func() { recovered.Add(1) })
			defer func() {
				if d != nil {
					d.Close()
				}
			}()
			q := storetest.Q(1, 1)
			var (
				mu       sync.Mutex
				accepted = map[[16]byte]bool{}
				refused  int
				next     atomic.Int64
			)
			put := func() error {
				id := storetest.MsgID(int(next.Add(1)))
				_, err := d.Put(ctx, []byte("m"), []store.Entry{{Queue: q, ID: id, Expires: time.Now().Add(time.Hour)}})
				mu.Lock()
				defer mu.Unlock()
				if err == nil {
					accepted[id] = true
				} else {
					refused++
				}
				return err
			}
			for range 10 {
				if err := put(); err != nil {
					t.Fatal(err)
				}
			}
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for range 4 {
				wg.Go(func() {
					for {
						select {
						case <-stop:
							return
						default:
						}
						put()
					}
				})
			}
			time.Sleep(30 * time.Millisecond)
			f.on.Store(true)
			time.Sleep(100 * time.Millisecond)

			// The fault lasts: writes refused, reads go on, not ready.
			if err := put(); err == nil {
				t.Fatal("Put succeeded on a failing disk")
			}
			if d.Failed() == nil {
				t.Fatal("Failed() = nil while the disk fails")
			}
			time.Sleep(300 * time.Millisecond) // several recovery attempts fail
			if msgs, err := d.Fetch(ctx, q, store.Cursor{}, 5); err != nil || len(msgs) == 0 {
				t.Fatalf("reads while the disk fails: %d messages, %v", len(msgs), err)
			}
			if recovered.Load() != 0 {
				t.Fatal("recovered while the disk still fails")
			}

			// The fault clears: Puts succeed again, by themselves.
			f.on.Store(false)
			start := time.Now()
			for d.Failed() != nil {
				if time.Since(start) > 10*time.Second {
					t.Fatalf("not recovered 10 s after the fault cleared: %v", d.Failed())
				}
				time.Sleep(10 * time.Millisecond)
			}
			t.Logf("recovered %v after the fault cleared", time.Since(start).Round(time.Millisecond))
			time.Sleep(50 * time.Millisecond)
			close(stop)
			wg.Wait()
			for range 10 {
				if err := put(); err != nil {
					t.Fatalf("Put after recovery: %v", err)
				}
			}
			if recovered.Load() != 1 {
				t.Fatalf("OnRecover called %d times", recovered.Load())
			}
			if n := counter(t, reg, "sotto_relay_store_recoveries_total"); n != 1 {
				t.Fatalf("recoveries_total = %v", n)
			}
			if _, err := reg.Gather(); err != nil {
				t.Fatalf("metrics after the reopen: %v", err)
			}
			t.Logf("%d accepted, %d refused", len(accepted), refused)
			if refused == 0 {
				t.Fatal("nothing refused")
			}
			checkExactlyOnce(t, d, q, accepted)

			// A crash now (unsynced data dropped): still every accepted
			// message, once.
			crashed := mem.CrashClone(vfs.CrashCloneCfg{})
			d.Close()
			d = nil
			d2 := openOn(t, crashed, "db", nil, nil)
			defer d2.Close()
			checkExactlyOnce(t, d2, q, accepted)
		})
	}
}

func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// checkExactlyOnce fetches q and requires every accepted ID exactly once.
func checkExactlyOnce(t *testing.T, s store.Queues, q store.QueueID, accepted map[[16]byte]bool) {
	t.Helper()
	seen := map[[16]byte]int{}
	var after store.Cursor
	for {
		msgs, err := s.Fetch(ctx, q, after, 500)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) == 0 {
			break
		}
		for _, m := range msgs {
			seen[m.ID]++
		}
		after = msgs[len(msgs)-1].Key
	}
	for id := range accepted {
		if seen[id] != 1 {
			t.Fatalf("accepted message %x stored %d times", id[:4], seen[id])
		}
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("message %x stored %d times", id[:4], n)
		}
	}
}

// TestUnavailableWhileReopenFails: when the disk probe passes but the
// reopen fails, calls fail with ErrUnavailable (reads too), and the wrapper
// keeps trying until the reopen works.
func TestUnavailableWhileReopenFails(t *testing.T) {
	mem := vfs.NewMem()
	f := &fault{match: func(op errorfs.Op) bool {
		return op.Kind.ReadOrWrite() == errorfs.OpIsWrite && strings.HasSuffix(op.Path, ".log")
	}, err: errorfs.ErrInjected}
	d := openOn(t, errorfs.Wrap(mem, f), "db", nil, nil)
	defer d.Close()
	q := storetest.Q(1, 1)
	entry := func(n int) []store.Entry {
		return []store.Entry{{Queue: q, ID: storetest.MsgID(n), Expires: time.Now().Add(time.Hour)}}
	}
	if _, err := d.Put(ctx, []byte("a"), entry(1)); err != nil {
		t.Fatal(err)
	}
	f.on.Store(true)
	if _, err := d.Put(ctx, []byte("b"), entry(2)); err == nil {
		t.Fatal("Put succeeded on a failing WAL")
	}
	// The probe file is not a WAL: the wrapper closes the failed store and
	// cannot reopen it while the WAL cannot be written.
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := d.Fetch(ctx, q, store.Cursor{}, 1)
		if errors.Is(err, recovering.ErrUnavailable) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Fetch during a failing reopen: %v, want ErrUnavailable", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !errors.Is(d.Failed(), recovering.ErrUnavailable) {
		t.Fatalf("Failed() = %v", d.Failed())
	}
	f.on.Store(false)
	for d.Failed() != nil {
		if time.Now().After(deadline.Add(5 * time.Second)) {
			t.Fatalf("not recovered: %v", d.Failed())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := d.Put(ctx, []byte("c"), entry(3)); err != nil {
		t.Fatal(err)
	}
	checkExactlyOnce(t, d, q, map[[16]byte]bool{storetest.MsgID(1): true, storetest.MsgID(3): true})
}

// TestStartPutDuringRecovery: an OrderedPutter submission made while no
// store is open answers with ErrUnavailable.
func TestStartPutDuringRecovery(t *testing.T) {
	d := openOn(t, vfs.NewMem(), "db", nil, nil)
	wait := d.StartPut(ctx, []byte("x"), []store.Entry{{Queue: storetest.Q(1, 1), ID: storetest.MsgID(1), Expires: time.Now().Add(time.Hour)}})
	if _, err := wait(); err != nil {
		t.Fatal(err)
	}
	d.Close()
	if _, err := d.StartPut(ctx, []byte("x"), nil)(); !errors.Is(err, recovering.ErrClosed) {
		t.Fatalf("StartPut after Close: %v", err)
	}
}

// stuckStore is a real pebblestore whose Fetch can be made to hang, as a
// call stuck in a failed database would.
type stuckStore struct {
	*pebblestore.DB
	hang chan struct{} // Fetch waits for it to close while armed
	arm  *atomic.Bool
}

func (s stuckStore) Fetch(ctx context.Context, q store.QueueID, after store.Cursor, limit int) ([]store.Message, error) {
	if s.arm.Load() {
		<-s.hang
	}
	return s.DB.Fetch(ctx, q, after, limit)
}

// TestStuckCallDelaysRecovery: a call that does not return keeps the
// failed store from being closed; the recovery gives up after DrainWait,
// puts the failed store back (reads work, writes are refused), and
// recovers once the call has returned.
func TestStuckCallDelaysRecovery(t *testing.T) {
	mem := vfs.NewMem()
	f := &fault{match: walOrProbe, err: errorfs.ErrInjected}
	fs := errorfs.Wrap(mem, f)
	hang := make(chan struct{})
	var arm atomic.Bool
	d, err := recovering.Open(recovering.Options{
		Dir: "db",
		FS:  fs,
		Open: func() (recovering.Store, error) {
			db, err := pebblestore.Open("db", pebblestore.Options{FS: fs, Logf: func(string, ...any) {}})
			if err != nil {
				return nil, err
			}
			return stuckStore{DB: db, hang: hang, arm: &arm}, nil
		},
		MinBackoff: 10 * time.Millisecond,
		MaxBackoff: 20 * time.Millisecond,
		DrainWait:  50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	q := storetest.Q(1, 1)
	entry := func(n int) []store.Entry {
		return []store.Entry{{Queue: q, ID: storetest.MsgID(n), Expires: time.Now().Add(time.Hour)}}
	}
	if _, err := d.Put(ctx, []byte("a"), entry(1)); err != nil {
		t.Fatal(err)
	}
	arm.Store(true)
	stuck := make(chan error, 1)
	go func() {
		_, err := d.Fetch(ctx, q, store.Cursor{}, 1)
		stuck <- err
	}()
	f.on.Store(true)
	if _, err := d.Put(ctx, []byte("b"), entry(2)); err == nil {
		t.Fatal("Put succeeded on a failing WAL")
	}
	f.on.Store(false)
	arm.Store(false)
	// Several attempts give up while the Fetch hangs; between them the
	// failed store is back: reads work, writes are refused.
	time.Sleep(300 * time.Millisecond)
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, rerr := d.Fetch(ctx, q, store.Cursor{}, 1)
		if rerr == nil {
			break
		}
		if !errors.Is(rerr, recovering.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("reads with a call stuck in the failed store: %v", rerr)
		}
		time.Sleep(5 * time.Millisecond) // caught a drain in progress
	}
	for {
		err := d.Failed()
		if errors.Is(err, pebblestore.ErrFailed) {
			break
		}
		if !errors.Is(err, recovering.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("Failed() with a call stuck in the failed store = %v, want the store's failure", err)
		}
		time.Sleep(5 * time.Millisecond) // caught a drain in progress
	}
	close(hang)
	if err := <-stuck; err != nil {
		t.Fatalf("the stuck Fetch: %v", err)
	}
	for d.Failed() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("not recovered after the stuck call returned: %v", d.Failed())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := d.Put(ctx, []byte("c"), entry(3)); err != nil {
		t.Fatal(err)
	}
}
