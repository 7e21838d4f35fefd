package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/sotto-im/sotto/relay/store"
)

// runOrdered runs the store.OrderedPutter tests; they are skipped for a
// store that does not implement it.
func (h Queues) runOrdered(t *testing.T) {
	t.Run("OrderedCursors", h.testOrderedCursors)
	t.Run("OrderedResults", h.testOrderedResults)
	t.Run("OrderedQueueFull", h.testOrderedQueueFull)
	t.Run("OrderedCancelled", h.testOrderedCancelled)
}

func ordered(t *testing.T, s store.Queues) store.OrderedPutter {
	t.Helper()
	op, ok := s.(store.OrderedPutter)
	if !ok {
		t.Skip("the store does not implement store.OrderedPutter")
	}
	return op
}

// testOrderedCursors starts Puts one after another from one goroutine, some
// to two queues at once, while other goroutines Put into the same queues
// concurrently, and waits for them only afterwards (in another goroutine,
// like a relay connection's pipelined sends): for each queue the started
// Puts' entries must have increasing cursors and be fetched in start order.
func (h Queues) testOrderedCursors(t *testing.T) {
	s, _ := h.open(t)
	op := ordered(t, s)
	qa, qb := Q(1, 1), Q(1, 2)
	const (
		started = 400
		noisy   = 3
		noise   = 100
	)
	var wg sync.WaitGroup
	errs := make(chan error, noisy+1)
	for g := range noisy {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range noise {
				id := MsgID(100_000*(g+1) + i)
				if _, err := s.Put(ctx, []byte("noise"), []store.Entry{{Queue: qa, ID: id, Expires: future()}, {Queue: qb, ID: id, Expires: future()}}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	type startedPut struct {
		n    int
		two  bool
		wait func() ([]store.PutResult, error)
	}
	waits := make(chan startedPut, 64) // bounded, like a connection's sends in flight
	var last struct {
		a, b store.Cursor
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for p := range waits {
			res, err := p.wait()
			if err != nil {
				errs <- fmt.Errorf("put %d: %w", p.n, err)
				continue
			}
			if len(res) != 1+btoi(p.two) || res[0].Duplicate {
				errs <- fmt.Errorf("put %d: results %+v", p.n, res)
				continue
			}
			if bytes.Compare(res[0].Cursor[:], last.a[:]) <= 0 {
				errs <- fmt.Errorf("put %d: cursor %x not after %x", p.n, res[0].Cursor, last.a)
			}
			last.a = res[0].Cursor
			if p.two {
				if bytes.Compare(res[1].Cursor[:], last.b[:]) <= 0 {
					errs <- fmt.Errorf("put %d: second queue cursor %x not after %x", p.n, res[1].Cursor, last.b)
				}
				last.b = res[1].Cursor
			}
		}
	}()
	for i := range started {
		entries := []store.Entry{{Queue: qa, ID: MsgID(i), Expires: future()}}
		two := i%3 == 0
		if two {
			entries = append(entries, store.Entry{Queue: qb, ID: MsgID(i), Expires: future()})
		}
		waits <- startedPut{n: i, two: two, wait: op.StartPut(ctx, []byte(fmt.Sprint(i)), entries)}
	}
	close(waits)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, q := range []store.QueueID{qa, qb} {
		msgs := fetchAll(t, s, q)
		want := started + noisy*noise
		if q == qb {
			want = (started+2)/3 + noisy*noise
		}
		if len(msgs) != want {
			t.Fatalf("queue %v holds %d messages, want %d", q, len(msgs), want)
		}
		prev := -1
		for _, m := range msgs {
			n := atoiID(m.ID)
			if n >= 100_000 {
				continue // noise
			}
			if n <= prev {
				t.Fatalf("queue %v: message %d fetched after %d", q, n, prev)
			}
			if string(m.Body) != fmt.Sprint(n) {
				t.Fatalf("queue %v: message %d has body %q", q, n, m.Body)
			}
			prev = n
		}
		if prev != started-1 && q == qa {
			t.Fatalf("queue %v: last started message %d, want %d", q, prev, started-1)
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// testOrderedResults checks that wait returns what Put returns: results per
// entry, duplicates (of an earlier Put and within one), an empty Put, and
// the same outcome on a second call.
func (h Queues) testOrderedResults(t *testing.T) {
	s, _ := h.open(t)
	op := ordered(t, s)
	q, r := Q(1, 1), Q(2, 1)
	first := op.StartPut(ctx, []byte("one"), []store.Entry{{Queue: q, ID: MsgID(1), Expires: future()}})
	again := op.StartPut(ctx, []byte("one"), []store.Entry{{Queue: q, ID: MsgID(1), Expires: future()}, {Queue: r, ID: MsgID(1), Expires: future()}})
	empty := op.StartPut(ctx, []byte("none"), nil)
	res1, err := first()
	if err != nil || len(res1) != 1 || res1[0].Duplicate || res1[0].Cursor.Seq() != 1 {
		t.Fatalf("first StartPut: %+v, %v", res1, err)
	}
	res2, err := again()
	if err != nil || len(res2) != 2 || !res2[0].Duplicate || res2[1].Duplicate {
		t.Fatalf("retry with one new recipient: %+v, %v; want [duplicate, new]", res2, err)
	}
	if res, err := empty(); err != nil || len(res) != 0 {
		t.Fatalf("empty StartPut: %+v, %v", res, err)
	}
	if res, err := first(); err != nil || len(res) != 1 || res[0] != res1[0] {
		t.Fatalf("second call of wait: %+v, %v; want %+v", res, err, res1)
	}
	msgs := fetchAll(t, s, q)
	if len(msgs) != 1 || msgs[0].Key != res1[0].Cursor || !msgs[0].Stored.Equal(res1[0].Stored) {
		t.Fatalf("fetched %+v; want one message at %x", msgs, res1[0].Cursor)
	}
	wantDepth(t, s, r, 1, 3)
}

// testOrderedQueueFull checks that a refused Put answers ErrQueueFull from
// wait and does not hold up or spoil the Puts started after it.
func (h Queues) testOrderedQueueFull(t *testing.T) {
	if h.OpenQuota == nil {
		t.Skip("no OpenQuota")
	}
	s := h.OpenQuota(t, 2, 1<<20)
	op := ordered(t, s)
	q, other := Q(1, 1), Q(2, 1)
	var waits []func() ([]store.PutResult, error)
	for i := range 3 {
		waits = append(waits, op.StartPut(ctx, []byte("x"), []store.Entry{{Queue: q, ID: MsgID(i), Expires: future()}}))
	}
	dup := op.StartPut(ctx, []byte("x"), []store.Entry{{Queue: q, ID: MsgID(0), Expires: future()}})
	after := op.StartPut(ctx, []byte("x"), []store.Entry{{Queue: other, ID: MsgID(9), Expires: future()}})
	for i, w := range waits[:2] {
		if _, err := w(); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	_, err := waits[2]()
	checkQueueFull(t, err, q)
	if res, err := dup(); err != nil || !res[0].Duplicate {
		t.Fatalf("retry into a full queue: %+v, %v; want a duplicate", res, err)
	}
	if res, err := after(); err != nil || res[0].Duplicate {
		t.Fatalf("put after a refused one: %+v, %v", res, err)
	}
	wantDepth(t, s, q, 2, 2)
	wantDepth(t, s, other, 1, 1)
}

// testOrderedCancelled checks StartPut with a context already ended (an
// error, nothing stored) and one that ends after the submission (wait
// returns the context's error or the Put's outcome, and never blocks).
func (h Queues) testOrderedCancelled(t *testing.T) {
	s, _ := h.open(t)
	op := ordered(t, s)
	q := Q(1, 1)
	c, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := op.StartPut(c, []byte("x"), []store.Entry{{Queue: q, ID: MsgID(1), Expires: future()}})(); !errors.Is(err, context.Canceled) {
		t.Fatalf("StartPut with a cancelled context: %v", err)
	}
	wantDepth(t, s, q, 0, 0)

	c, cancel = context.WithCancel(ctx)
	wait := op.StartPut(c, []byte("x"), []store.Entry{{Queue: q, ID: MsgID(2), Expires: future()}})
	cancel()
	res, err := wait()
	switch {
	case err == nil && len(res) == 1:
	case errors.Is(err, context.Canceled):
	default:
		t.Fatalf("wait after cancel: %+v, %v", res, err)
	}
	// Either way a retry is answered, and the message is stored once.
	put(t, s, []byte("x"), store.Entry{Queue: q, ID: MsgID(2), Expires: future()})
	wantDepth(t, s, q, 1, 1)
}
