package pebblestore

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/sotto-im/sotto/relay/store"
	"github.com/sotto-im/sotto/relay/store/storetest"
)

// TestWALWriteFailure injects write errors into the write-ahead log: the
// Put that hits them fails, and so does everything after it, including a
// retry of the same message (which must not be answered "duplicate, stored"
// on the strength of a write that never reached the disk); reads go on; a
// reopen on a healthy disk finds every accepted message and consistent
// records.
func TestWALWriteFailure(t *testing.T) {
	mem := vfs.NewMem()
	tog := &errorfs.Toggle{Injector: errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind.ReadOrWrite() == errorfs.OpIsWrite && strings.HasSuffix(op.Path, ".log") {
			return errorfs.ErrInjected
		}
		return nil
	})}
	d, err := Open("db", Options{FS: errorfs.Wrap(mem, tog), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	q := storetest.Q(1, 1)
	entry := func(n int) []store.Entry {
		return []store.Entry{{Queue: q, ID: storetest.MsgID(n), Expires: time.Now().Add(time.Hour)}}
	}
	if _, err := d.Put(ctx, []byte("accepted"), entry(1)); err != nil {
		t.Fatal(err)
	}
	tog.On()
	if _, err := d.Put(ctx, []byte("lost"), entry(2)); err == nil {
		t.Fatal("Put succeeded on a failing disk")
	}
	tog.Off()
	for _, n := range []int{2, 3} {
		if r, err := d.Put(ctx, []byte("retry"), entry(n)); !errors.Is(err, ErrFailed) {
			t.Fatalf("Put %d after a failure: %+v, %v; want ErrFailed", n, r, err)
		}
	}
	if err := d.Ack(ctx, q, store.Cursor{}); !errors.Is(err, ErrFailed) {
		t.Fatalf("Ack after a failure: %v", err)
	}
	if !errors.Is(d.Failed(), ErrFailed) {
		t.Fatal("Failed() = nil")
	}
	if msgs, err := d.Fetch(ctx, q, store.Cursor{}, 10); err != nil || len(msgs) == 0 {
		t.Fatalf("reads stopped: %d, %v", len(msgs), err)
	}
	_ = d.Close() // may report the failure

	d, err = Open("db", Options{FS: mem, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	checkInvariants(t, d)
	msgs, err := d.Fetch(ctx, q, store.Cursor{}, 10)
	if err != nil || len(msgs) == 0 || string(msgs[0].Body) != "accepted" {
		t.Fatalf("after reopen: %d messages, %v", len(msgs), err)
	}
	if d.Failed() != nil {
		t.Fatal("reopened store still failed")
	}
	if _, err := d.Put(ctx, []byte("again"), entry(3)); err != nil {
		t.Fatal(err)
	}
}
