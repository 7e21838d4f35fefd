// Package storetest is the conformance suite for implementations of the
// relay's storage interfaces (package store). An implementation's tests call
// RunQueues, RunDevices and RunBlobs (or their ...With forms, which accept
// hooks for the checks that need to look inside the store: reopening,
// counting bodies, scanning keys).
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/relay/store"
)

// Queues describes how to run the queue suite against an implementation.
type Queues struct {
	// Open returns a new, empty store; the suite closes nothing itself, so
	// Open should register cleanup with t.Cleanup.
	Open func(t *testing.T) store.Queues
	// OpenQuota, if set, returns a new, empty store whose per-queue quotas
	// are maxMessages and maxBytes; without it the quota tests are skipped.
	// (Open's stores need quotas of at least 1,000 messages and 1 MiB.)
	OpenQuota func(t *testing.T, maxMessages int, maxBytes int64) store.Queues
	// Reopen, if set, closes s and returns the same store opened again.
	Reopen func(t *testing.T, s store.Queues) store.Queues
	// Bodies, if set, returns how many shared bodies s holds.
	Bodies func(t *testing.T, s store.Queues) int
	// Keys, if set, returns every key s holds, for the purge checks.
	Keys func(t *testing.T, s store.Queues) [][]byte
	// Check, if set, is called at the end of every test with the store as
	// the test left it, to check the implementation's internal invariants.
	Check func(t *testing.T, s store.Queues)
}

// open opens a store for one test and arranges for h.Check to see it (or
// what Reopen replaced it with) when the test ends.
func (h Queues) open(t *testing.T) (store.Queues, *store.Queues) {
	s := h.Open(t)
	cur := &s
	if h.Check != nil {
		t.Cleanup(func() {
			if !t.Failed() && *cur != nil {
				h.Check(t, *cur)
			}
		})
	}
	return s, cur
}

// RunQueues runs the queue suite with only an Open function (no quota,
// reopen, body-count or key-scan checks).
func RunQueues(t *testing.T, open func(t *testing.T) store.Queues) {
	RunQueuesWith(t, Queues{Open: open})
}

// RunQueuesWith runs the queue suite, including the tests of
// store.OrderedPutter when the store implements it.
func RunQueuesWith(t *testing.T, h Queues) {
	t.Run("Order", h.testOrder)
	t.Run("PutCursors", h.testPutCursors)
	t.Run("Paging", h.testPaging)
	t.Run("AckDeletes", h.testAck)
	t.Run("Idempotent", h.testIdempotent)
	t.Run("SharedBody", h.testSharedBody)
	t.Run("QuotaMessages", h.testQuotaMessages)
	t.Run("QuotaBytes", h.testQuotaBytes)
	t.Run("Expiry", h.testExpiry)
	t.Run("Purge", h.testPurge)
	t.Run("Reopen", h.testReopen)
	t.Run("Concurrent", h.testConcurrent)
	t.Run("ConcurrentDuplicates", h.testConcurrentDuplicates)
	t.Run("Cancelled", h.testCancelled)
	h.runOrdered(t)
}

var ctx = context.Background()

// Q returns a test queue ID: account filled with a, device dev.
func Q(a byte, dev crypto.DeviceID) store.QueueID {
	var q store.QueueID
	for i := range q.Account {
		q.Account[i] = a
	}
	q.Device = dev
	return q
}

// MsgID returns a test message ID.
func MsgID(n int) [16]byte {
	var id [16]byte
	copy(id[:], fmt.Sprintf("msg-%012d", n))
	return id
}

func future() time.Time { return time.Now().Add(time.Hour) }

func put(t *testing.T, s store.Queues, body []byte, entries ...store.Entry) []store.PutResult {
	t.Helper()
	res, err := s.Put(ctx, body, entries)
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	if len(res) != len(entries) {
		t.Fatalf("Put returned %d results for %d entries", len(res), len(entries))
	}
	return res
}

func fetchAll(t *testing.T, s store.Queues, q store.QueueID) []store.Message {
	t.Helper()
	msgs, err := s.Fetch(ctx, q, store.Cursor{}, 1<<20)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	return msgs
}

func depth(t *testing.T, s store.Queues, q store.QueueID) (int, int64) {
	t.Helper()
	n, b, err := s.Depth(ctx, q)
	if err != nil {
		t.Fatalf("Depth: %v", err)
	}
	return n, b
}

func wantDepth(t *testing.T, s store.Queues, q store.QueueID, n int, b int64) {
	t.Helper()
	if gn, gb := depth(t, s, q); gn != n || gb != b {
		t.Fatalf("Depth(%v) = %d messages, %d bytes; want %d, %d", q, gn, gb, n, b)
	}
}

func (h Queues) bodies(t *testing.T, s store.Queues, want int) {
	t.Helper()
	if h.Bodies == nil {
		return
	}
	if got := h.Bodies(t, s); got != want {
		t.Fatalf("store holds %d bodies, want %d", got, want)
	}
}

// testPutCursors checks that Put reports each new entry's cursor and
// storage time as Fetch returns them, and that a queue's sequence numbers
// run 1, 2, 3... across priorities and Puts (what lets the relay hand a
// stored message straight to a caught-up connection).
func (h Queues) testPutCursors(t *testing.T) {
	s, _ := h.open(t)
	q, other := Q(1, 1), Q(1, 2)
	got := map[store.Cursor]store.PutResult{}
	var seqs []uint64
	for n, prio := range []uint8{0, 9, 0, 255, 3} {
		res, err := s.Put(ctx, []byte("b"), []store.Entry{
			{Queue: q, ID: MsgID(n), Priority: prio, Expires: future()},
			{Queue: other, ID: MsgID(n), Priority: prio, Expires: future()},
			{Queue: q, ID: MsgID(n), Priority: prio, Expires: future()}, // duplicate within the Put
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(res) != 3 || res[0].Duplicate || res[1].Duplicate || !res[2].Duplicate {
			t.Fatalf("put %d: %+v", n, res)
		}
		got[res[0].Cursor] = res[0]
		seqs = append(seqs, res[0].Cursor.Seq())
		if res[1].Cursor.Seq() != uint64(n+1) {
			t.Fatalf("other queue's entry %d has sequence number %d", n, res[1].Cursor.Seq())
		}
	}
	for i, seq := range seqs {
		if seq != uint64(i+1) {
			t.Fatalf("sequence numbers %v, want 1, 2, 3...", seqs)
		}
	}
	msgs := fetchAll(t, s, q)
	if len(msgs) != len(got) {
		t.Fatalf("fetched %d, put %d", len(msgs), len(got))
	}
	for _, m := range msgs {
		r, ok := got[m.Key]
		if !ok || !r.Stored.Equal(m.Stored) {
			t.Fatalf("fetched %x stored %v; Put said %+v", m.Key, m.Stored, r)
		}
	}
	// A retry reports the duplicate and no new cursor.
	res, err := s.Put(ctx, []byte("b"), []store.Entry{{Queue: q, ID: MsgID(0), Expires: future()}})
	if err != nil || len(res) != 1 || !res[0].Duplicate {
		t.Fatalf("retry: %+v %v", res, err)
	}
}

func (h Queues) testOrder(t *testing.T) {
	s, _ := h.open(t)
	q := Q(1, 1)
	// (priority, n): delivery order is priority desc, then put order.
	plan := []struct {
		prio uint8
		n    int
	}{{0, 1}, {5, 2}, {0, 3}, {255, 4}, {5, 5}, {1, 6}, {255, 7}, {0, 8}}
	for _, p := range plan {
		put(t, s, []byte(fmt.Sprint("body", p.n)), store.Entry{Queue: q, ID: MsgID(p.n), Priority: p.prio, Expires: future(), Header: []byte{byte(p.n)}})
	}
	want := []int{4, 7, 2, 5, 6, 1, 3, 8}
	msgs := fetchAll(t, s, q)
	if len(msgs) != len(want) {
		t.Fatalf("fetched %d messages, want %d", len(msgs), len(want))
	}
	for i, m := range msgs {
		if m.ID != MsgID(want[i]) {
			t.Fatalf("message %d is %q, want %q", i, m.ID, MsgID(want[i]))
		}
		if string(m.Body) != fmt.Sprint("body", want[i]) || !bytes.Equal(m.Header, []byte{byte(want[i])}) {
			t.Fatalf("message %d: body %q header %x", i, m.Body, m.Header)
		}
		if m.Queue != q || m.Stored.IsZero() || !m.Expires.After(time.Now()) {
			t.Fatalf("message %d: %+v", i, m)
		}
		if i > 0 && bytes.Compare(msgs[i-1].Key[:], m.Key[:]) >= 0 {
			t.Fatalf("cursors not increasing at %d", i)
		}
	}
	for _, m := range msgs {
		var p uint8
		for _, x := range plan {
			if MsgID(x.n) == m.ID {
				p = x.prio
			}
		}
		if m.Priority != p {
			t.Fatalf("priority %d, want %d", m.Priority, p)
		}
	}
	// Other queues are separate.
	if msgs := fetchAll(t, s, Q(1, 2)); len(msgs) != 0 {
		t.Fatalf("another device's queue holds %d", len(msgs))
	}
	if msgs := fetchAll(t, s, Q(2, 1)); len(msgs) != 0 {
		t.Fatalf("another account's queue holds %d", len(msgs))
	}
}

func (h Queues) testPaging(t *testing.T) {
	s, _ := h.open(t)
	q := Q(1, 1)
	for i := range 10 {
		put(t, s, []byte("b"), store.Entry{Queue: q, ID: MsgID(i), Priority: uint8(i % 3), Expires: future()})
	}
	all := fetchAll(t, s, q)
	var paged []store.Message
	var after store.Cursor
	for {
		page, err := s.Fetch(ctx, q, after, 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) > 3 {
			t.Fatalf("page of %d, limit 3", len(page))
		}
		if len(page) == 0 {
			break
		}
		paged = append(paged, page...)
		after = page[len(page)-1].Key
	}
	if len(paged) != len(all) {
		t.Fatalf("paging gave %d, want %d", len(paged), len(all))
	}
	for i := range all {
		if paged[i].ID != all[i].ID || paged[i].Key != all[i].Key {
			t.Fatalf("page order differs at %d", i)
		}
	}
	if msgs, err := s.Fetch(ctx, q, store.Cursor{}, 0); err != nil || len(msgs) != 0 {
		t.Fatalf("limit 0: %d, %v", len(msgs), err)
	}
	if msgs, err := s.Fetch(ctx, Q(9, 9), store.Cursor{}, 10); err != nil || len(msgs) != 0 {
		t.Fatalf("empty queue: %d, %v", len(msgs), err)
	}
}

func (h Queues) testAck(t *testing.T) {
	s, _ := h.open(t)
	q := Q(1, 1)
	for i := range 3 {
		put(t, s, []byte("body"), store.Entry{Queue: q, ID: MsgID(i), Expires: future(), Header: []byte("hh")})
	}
	wantDepth(t, s, q, 3, 18)
	msgs := fetchAll(t, s, q)
	if err := s.Ack(ctx, q, msgs[1].Key); err != nil {
		t.Fatal(err)
	}
	wantDepth(t, s, q, 2, 12)
	got := fetchAll(t, s, q)
	if len(got) != 2 || got[0].ID != MsgID(0) || got[1].ID != MsgID(2) {
		t.Fatalf("after ack: %v", got)
	}
	// Acknowledging twice, or something never stored, or in another queue,
	// is not an error and changes nothing.
	for _, k := range []store.Cursor{msgs[1].Key, {0xff, 0xff}, {}} {
		if err := s.Ack(ctx, q, k); err != nil {
			t.Fatalf("Ack(%x): %v", k, err)
		}
	}
	if err := s.Ack(ctx, Q(1, 2), msgs[0].Key); err != nil {
		t.Fatal(err)
	}
	wantDepth(t, s, q, 2, 12)
	for _, m := range got {
		if err := s.Ack(ctx, q, m.Key); err != nil {
			t.Fatal(err)
		}
	}
	wantDepth(t, s, q, 0, 0)
	h.bodies(t, s, 0)
}

func (h Queues) testIdempotent(t *testing.T) {
	s, _ := h.open(t)
	q, q2 := Q(1, 1), Q(1, 2)
	e := store.Entry{Queue: q, ID: MsgID(1), Expires: future(), Header: []byte("h")}
	if r := put(t, s, []byte("body"), e); r[0].Duplicate {
		t.Fatal("first Put reported duplicate")
	}
	if r := put(t, s, []byte("body"), e); !r[0].Duplicate {
		t.Fatal("retry not reported duplicate")
	}
	// The same ID in another queue is another message; within one Put a
	// repeated entry is stored once.
	r := put(t, s, []byte("body"), e, store.Entry{Queue: q2, ID: MsgID(1), Expires: future()}, store.Entry{Queue: q2, ID: MsgID(1), Expires: future()})
	if !r[0].Duplicate || r[1].Duplicate || !r[2].Duplicate {
		t.Fatalf("mixed Put results %+v", r)
	}
	wantDepth(t, s, q, 1, 5)
	wantDepth(t, s, q2, 1, 4)
	if n := len(fetchAll(t, s, q)); n != 1 {
		t.Fatalf("queue holds %d after retries", n)
	}
	h.bodies(t, s, 2)
}

func (h Queues) testSharedBody(t *testing.T) {
	s, _ := h.open(t)
	body := bytes.Repeat([]byte("shared body "), 100)
	var entries []store.Entry
	for i := range 20 {
		entries = append(entries, store.Entry{Queue: Q(byte(i%4), crypto.DeviceID(1+i)), ID: MsgID(7), Expires: future(), Header: []byte(fmt.Sprint("hdr", i))})
	}
	for _, r := range put(t, s, body, entries...) {
		if r.Duplicate {
			t.Fatal("duplicate in a fresh multi-recipient Put")
		}
	}
	h.bodies(t, s, 1)
	for i, e := range entries {
		msgs := fetchAll(t, s, e.Queue)
		if len(msgs) != 1 || !bytes.Equal(msgs[0].Body, body) || string(msgs[0].Header) != fmt.Sprint("hdr", i) {
			t.Fatalf("queue %d: %d messages", i, len(msgs))
		}
		wantDepth(t, s, e.Queue, 1, int64(len(body)+len(e.Header)))
	}
	for i, e := range entries {
		h.bodies(t, s, 1)
		msgs := fetchAll(t, s, e.Queue)
		if err := s.Ack(ctx, e.Queue, msgs[0].Key); err != nil {
			t.Fatal(err)
		}
		if i < len(entries)-1 {
			// The others still read the body.
			if m := fetchAll(t, s, entries[len(entries)-1].Queue); !bytes.Equal(m[0].Body, body) {
				t.Fatal("body lost before its last reference")
			}
		}
	}
	h.bodies(t, s, 0)
}

func (h Queues) testQuotaMessages(t *testing.T) {
	if h.OpenQuota == nil {
		t.Skip("no OpenQuota")
	}
	const maxMessages = 50
	s := h.OpenQuota(t, maxMessages, 1<<20)
	q, other := Q(1, 1), Q(2, 1)
	for i := range maxMessages {
		put(t, s, []byte("x"), store.Entry{Queue: q, ID: MsgID(i), Expires: future()})
	}
	n, b := depth(t, s, q)
	// A multi-recipient Put touching the full queue stores nothing, not even
	// for the queue with room.
	_, err := s.Put(ctx, []byte("x"), []store.Entry{{Queue: other, ID: MsgID(-1), Expires: future()}, {Queue: q, ID: MsgID(-1), Expires: future()}})
	checkQueueFull(t, err, q)
	wantDepth(t, s, q, n, b)
	wantDepth(t, s, other, 0, 0)
	h.bodies(t, s, maxMessages)
	// A duplicate of a stored message is still answered.
	if r := put(t, s, []byte("x"), store.Entry{Queue: q, ID: MsgID(0), Expires: future()}); !r[0].Duplicate {
		t.Fatal("retry into a full queue not reported duplicate")
	}
	// Room again after an acknowledgement.
	msgs, err := s.Fetch(ctx, q, store.Cursor{}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(ctx, q, msgs[0].Key); err != nil {
		t.Fatal(err)
	}
	put(t, s, []byte("x"), store.Entry{Queue: q, ID: MsgID(-2), Expires: future()})
}

func (h Queues) testQuotaBytes(t *testing.T) {
	if h.OpenQuota == nil {
		t.Skip("no OpenQuota")
	}
	const maxBytes = 64 << 10
	s := h.OpenQuota(t, 1000, maxBytes)
	q := Q(1, 1)
	half := make([]byte, maxBytes/2)
	put(t, s, half, store.Entry{Queue: q, ID: MsgID(1), Expires: future()})
	rest := make([]byte, maxBytes-int64(len(half))-10)
	put(t, s, rest, store.Entry{Queue: q, ID: MsgID(2), Expires: future(), Header: make([]byte, 10)})
	wantDepth(t, s, q, 2, maxBytes)
	_, err := s.Put(ctx, []byte("x"), []store.Entry{{Queue: q, ID: MsgID(3), Expires: future()}})
	checkQueueFull(t, err, q)
	wantDepth(t, s, Q(1, 1), 2, maxBytes)
	// One message larger than the whole quota.
	_, err = s.Put(ctx, make([]byte, maxBytes+1), []store.Entry{{Queue: Q(3, 3), ID: MsgID(4), Expires: future()}})
	checkQueueFull(t, err, Q(3, 3))
	wantDepth(t, s, Q(3, 3), 0, 0)
	h.bodies(t, s, 2)
}

func checkQueueFull(t *testing.T, err error, q store.QueueID) {
	t.Helper()
	if !errors.Is(err, store.ErrQueueFull) {
		t.Fatalf("Put into a full queue: %v, want ErrQueueFull", err)
	}
	var qf *store.QueueFullError
	if !errors.As(err, &qf) || qf.Queue != q {
		t.Fatalf("Put into a full queue: %v, want *QueueFullError naming %v", err, q)
	}
}

func (h Queues) testExpiry(t *testing.T) {
	s, _ := h.open(t)
	q := Q(1, 1)
	now := time.Now()
	put(t, s, []byte("old"), store.Entry{Queue: q, ID: MsgID(1), Expires: now.Add(-time.Minute)}, store.Entry{Queue: Q(2, 2), ID: MsgID(1), Expires: now.Add(time.Hour)})
	put(t, s, []byte("new"), store.Entry{Queue: q, ID: MsgID(2), Expires: now.Add(time.Hour)})
	put(t, s, []byte("later"), store.Entry{Queue: q, ID: MsgID(3), Expires: now.Add(3 * time.Hour)})
	msgs := fetchAll(t, s, q)
	if len(msgs) != 2 || msgs[0].ID != MsgID(2) {
		t.Fatalf("Fetch returned expired messages: %d", len(msgs))
	}
	n, err := s.Sweep(ctx, now)
	if err != nil || n != 1 {
		t.Fatalf("Sweep(now) = %d, %v; want 1", n, err)
	}
	wantDepth(t, s, q, 2, 8)
	h.bodies(t, s, 3) // "old" still referenced by Q(2,2)
	n, err = s.Sweep(ctx, now.Add(2*time.Hour))
	if err != nil || n != 2 {
		t.Fatalf("Sweep(+2h) = %d, %v; want 2", n, err)
	}
	wantDepth(t, s, q, 1, 5)
	wantDepth(t, s, Q(2, 2), 0, 0)
	h.bodies(t, s, 1)
	if n, err := s.Sweep(ctx, now.Add(2*time.Hour)); err != nil || n != 0 {
		t.Fatalf("second Sweep = %d, %v", n, err)
	}
	// Many at once (more than any internal chunk).
	var entries []store.Entry
	for i := range 3000 {
		entries = append(entries, store.Entry{Queue: Q(byte(i%3), 1), ID: MsgID(1000 + i), Expires: now.Add(time.Minute)})
	}
	put(t, s, []byte("many"), entries...)
	n, err = s.Sweep(ctx, now.Add(24*time.Hour))
	if err != nil || n != 3001 {
		t.Fatalf("Sweep of many = %d, %v; want 3001", n, err)
	}
	for i := range 3 {
		wantDepth(t, s, Q(byte(i), 1), 0, 0)
	}
	h.bodies(t, s, 0)
}

func (h Queues) testPurge(t *testing.T) {
	s, _ := h.open(t)
	a1, a2, b1 := Q(0xa1, 1), Q(0xa1, 2), Q(0xb2, 1)
	put(t, s, []byte("shared"), store.Entry{Queue: a1, ID: MsgID(1), Expires: future()}, store.Entry{Queue: b1, ID: MsgID(1), Expires: future()})
	for i := range 5 {
		put(t, s, []byte("a1"), store.Entry{Queue: a1, ID: MsgID(10 + i), Expires: future(), Priority: uint8(i)})
		put(t, s, []byte("a2"), store.Entry{Queue: a2, ID: MsgID(10 + i), Expires: future()})
	}
	// An acknowledged message leaves records behind in some stores
	// (idempotency); the purge must take those too.
	m := fetchAll(t, s, a1)
	if err := s.Ack(ctx, a1, m[0].Key); err != nil {
		t.Fatal(err)
	}
	if dv, ok := s.(store.Devices); ok {
		if err := dv.SetAccessKeyHash(ctx, a1.Account, [32]byte{1}); err != nil {
			t.Fatal(err)
		}
		if err := dv.SetPushEndpoint(ctx, a1, "https://push.example/a1"); err != nil {
			t.Fatal(err)
		}
		if err := dv.SetPushEndpoint(ctx, a2, "https://push.example/a2"); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PurgeDevice(ctx, a1); err != nil {
		t.Fatal(err)
	}
	wantDepth(t, s, a1, 0, 0)
	if len(fetchAll(t, s, a1)) != 0 {
		t.Fatal("purged device still has messages")
	}
	wantDepth(t, s, a2, 5, 10)
	if m := fetchAll(t, s, b1); len(m) != 1 || string(m[0].Body) != "shared" {
		t.Fatal("purge of one device took another account's shared body")
	}
	if dv, ok := s.(store.Devices); ok {
		if u, err := dv.PushEndpoint(ctx, a1); err != nil || u != "" {
			t.Fatalf("purged device's push endpoint: %q %v", u, err)
		}
		if u, _ := dv.PushEndpoint(ctx, a2); u == "" {
			t.Fatal("device purge removed a sibling's push endpoint")
		}
	}
	// Putting to a purged device works again.
	put(t, s, []byte("again"), store.Entry{Queue: a1, ID: MsgID(99), Expires: future()})
	if err := s.PurgeAccount(ctx, a1.Account); err != nil {
		t.Fatal(err)
	}
	wantDepth(t, s, a1, 0, 0)
	wantDepth(t, s, a2, 0, 0)
	wantDepth(t, s, b1, 1, 6)
	if dv, ok := s.(store.Devices); ok {
		if _, ok, err := dv.AccessKeyHash(ctx, a1.Account); err != nil || ok {
			t.Fatalf("purged account's access key hash: %v %v", ok, err)
		}
	}
	h.bodies(t, s, 1)
	if h.Keys != nil {
		for _, k := range h.Keys(t, s) {
			if bytes.Contains(k, a1.Account[:]) {
				t.Fatalf("key %x of the purged account remains", k)
			}
		}
	}
	// Purging nothing is fine.
	if err := s.PurgeAccount(ctx, Q(0x77, 0).Account); err != nil {
		t.Fatal(err)
	}
}

func (h Queues) testReopen(t *testing.T) {
	if h.Reopen == nil {
		t.Skip("no Reopen")
	}
	s, cur := h.open(t)
	q := Q(1, 1)
	for i := range 6 {
		put(t, s, []byte(fmt.Sprint("body", i)), store.Entry{Queue: q, ID: MsgID(i), Priority: uint8(i % 2), Expires: future(), Header: []byte("h")},
			store.Entry{Queue: Q(2, 1), ID: MsgID(i), Expires: future()})
	}
	before := fetchAll(t, s, q)
	if err := s.Ack(ctx, q, before[0].Key); err != nil {
		t.Fatal(err)
	}
	before = before[1:]
	n, b := depth(t, s, q)
	s = h.Reopen(t, s)
	*cur = s
	wantDepth(t, s, q, n, b)
	after := fetchAll(t, s, q)
	if len(after) != len(before) {
		t.Fatalf("%d messages after reopen, want %d", len(after), len(before))
	}
	for i := range after {
		if after[i].ID != before[i].ID || after[i].Key != before[i].Key || !bytes.Equal(after[i].Body, before[i].Body) {
			t.Fatalf("message %d changed across reopen", i)
		}
	}
	// Retries are still recognised, new messages order after old ones of
	// their priority, and new bodies do not disturb old ones.
	if r := put(t, s, []byte("x"), store.Entry{Queue: q, ID: MsgID(3), Expires: future()}); !r[0].Duplicate {
		t.Fatal("retry after reopen stored again")
	}
	put(t, s, []byte("fresh"), store.Entry{Queue: q, ID: MsgID(100), Priority: 1, Expires: future()}, store.Entry{Queue: Q(2, 1), ID: MsgID(100), Expires: future()})
	all := fetchAll(t, s, q)
	if last := all[2]; last.ID != MsgID(100) || string(last.Body) != "fresh" {
		t.Fatalf("new priority-1 message at wrong place: %q", last.ID)
	}
	for _, m := range fetchAll(t, s, Q(2, 1)) {
		if m.ID != MsgID(100) && string(m.Body) != fmt.Sprint("body", atoiID(m.ID)) {
			t.Fatalf("old body changed: %q", m.Body)
		}
	}
	wantDepth(t, s, q, n+1, b+5)
	h.bodies(t, s, 7)
	// The reopened store's cleanup may run before this test's; check now.
	if h.Check != nil {
		h.Check(t, s)
	}
	*cur = nil
}

func (h Queues) testConcurrent(t *testing.T) {
	s, _ := h.open(t)
	const (
		writers   = 8
		perWriter = 60
		queues    = 4
	)
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				n := w*perWriter + i
				// Every third send is multi-recipient to two queues.
				entries := []store.Entry{{Queue: Q(0, crypto.DeviceID(1+n%queues)), ID: MsgID(n), Priority: uint8(n % 3), Expires: future()}}
				if n%3 == 0 {
					entries = append(entries, store.Entry{Queue: Q(0, crypto.DeviceID(1+(n+1)%queues)), ID: MsgID(n), Expires: future()})
				}
				if _, err := s.Put(ctx, []byte(fmt.Sprint(n)), entries); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	total := writers * perWriter
	want := total + (total+2)/3
	var (
		mu   sync.Mutex
		seen = map[string]int{}
		done = make(chan struct{})
	)
	var readers sync.WaitGroup
	for qi := range queues {
		readers.Add(1)
		go func() {
			defer readers.Done()
			q := Q(0, crypto.DeviceID(1+qi))
			for {
				msgs, err := s.Fetch(ctx, q, store.Cursor{}, 16)
				if err != nil {
					errs <- err
					return
				}
				for _, m := range msgs {
					if string(m.Body) != fmt.Sprint(int(atoiID(m.ID))) {
						errs <- fmt.Errorf("message %q has body %q", m.ID, m.Body)
						return
					}
					if err := s.Ack(ctx, q, m.Key); err != nil {
						errs <- err
						return
					}
					mu.Lock()
					seen[fmt.Sprint(qi, m.ID)]++
					mu.Unlock()
				}
				if len(msgs) == 0 {
					select {
					case <-done:
						if msgs, _ := s.Fetch(ctx, q, store.Cursor{}, 1); len(msgs) == 0 {
							return
						}
					default:
						time.Sleep(time.Millisecond)
					}
				}
			}
		}()
	}
	wg.Wait()
	close(done)
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(seen) != want {
		t.Fatalf("received %d distinct messages, want %d", len(seen), want)
	}
	for k, n := range seen {
		// A message acknowledged concurrently with a Fetch that had already
		// read it can be seen twice (at-least-once delivery); more is a bug.
		if n > 2 {
			t.Fatalf("%s seen %d times", k, n)
		}
	}
	for qi := range queues {
		wantDepth(t, s, Q(0, crypto.DeviceID(1+qi)), 0, 0)
	}
	h.bodies(t, s, 0)
}

func atoiID(id [16]byte) int {
	var n int
	fmt.Sscanf(string(id[4:]), "%d", &n)
	return n
}

func (h Queues) testConcurrentDuplicates(t *testing.T) {
	s, _ := h.open(t)
	q := Q(1, 1)
	const racers = 16
	var (
		wg    sync.WaitGroup
		fresh sync.Map
		errs  = make(chan error, racers)
	)
	for i := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range 10 {
				r, err := s.Put(ctx, []byte("same"), []store.Entry{{Queue: q, ID: MsgID(m), Expires: future()}})
				if err != nil {
					errs <- err
					return
				}
				if !r[0].Duplicate {
					if _, loaded := fresh.LoadOrStore(m, i); loaded {
						errs <- fmt.Errorf("message %d stored twice", m)
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	wantDepth(t, s, q, 10, 40)
	h.bodies(t, s, 10)
}

func (h Queues) testCancelled(t *testing.T) {
	s, _ := h.open(t)
	c, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Put(c, []byte("x"), []store.Entry{{Queue: Q(1, 1), ID: MsgID(1), Expires: future()}}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put with cancelled context: %v", err)
	}
	wantDepth(t, s, Q(1, 1), 0, 0)
}

// RunDevices runs the suite for store.Devices. open returns a new, empty
// store.
func RunDevices(t *testing.T, open func(t *testing.T) store.Devices) {
	t.Run("AccessKey", func(t *testing.T) {
		s := open(t)
		a := Q(1, 1).Account
		if _, ok, err := s.AccessKeyHash(ctx, a); err != nil || ok {
			t.Fatalf("unset: %v %v", ok, err)
		}
		for _, h := range [][32]byte{{1, 2, 3}, {4, 5, 6}} {
			if err := s.SetAccessKeyHash(ctx, a, h); err != nil {
				t.Fatal(err)
			}
			got, ok, err := s.AccessKeyHash(ctx, a)
			if err != nil || !ok || got != h {
				t.Fatalf("AccessKeyHash = %x %v %v", got, ok, err)
			}
		}
		if _, ok, _ := s.AccessKeyHash(ctx, Q(2, 1).Account); ok {
			t.Fatal("another account has the hash")
		}
	})
	t.Run("PushEndpoint", func(t *testing.T) {
		s := open(t)
		q := Q(1, 1)
		if u, err := s.PushEndpoint(ctx, q); err != nil || u != "" {
			t.Fatalf("unset: %q %v", u, err)
		}
		if err := s.SetPushEndpoint(ctx, q, "https://push.example/x"); err != nil {
			t.Fatal(err)
		}
		if u, err := s.PushEndpoint(ctx, q); err != nil || u != "https://push.example/x" {
			t.Fatalf("PushEndpoint = %q %v", u, err)
		}
		if u, _ := s.PushEndpoint(ctx, Q(1, 2)); u != "" {
			t.Fatal("another device has the endpoint")
		}
		if err := s.SetPushEndpoint(ctx, q, ""); err != nil {
			t.Fatal(err)
		}
		if u, err := s.PushEndpoint(ctx, q); err != nil || u != "" {
			t.Fatalf("removed: %q %v", u, err)
		}
	})
	t.Run("Purge", func(t *testing.T) {
		s := open(t)
		for _, q := range []store.QueueID{Q(1, 1), Q(1, 2), Q(2, 1)} {
			if err := s.SetAccessKeyHash(ctx, q.Account, [32]byte{7}); err != nil {
				t.Fatal(err)
			}
			if err := s.SetPushEndpoint(ctx, q, "https://push.example/"+q.String()); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.PurgeDevice(ctx, Q(1, 1)); err != nil {
			t.Fatal(err)
		}
		if u, err := s.PushEndpoint(ctx, Q(1, 1)); err != nil || u != "" {
			t.Fatalf("purged device's endpoint: %q %v", u, err)
		}
		if u, _ := s.PushEndpoint(ctx, Q(1, 2)); u == "" {
			t.Fatal("PurgeDevice removed another device's endpoint")
		}
		if _, ok, _ := s.AccessKeyHash(ctx, Q(1, 1).Account); !ok {
			t.Fatal("PurgeDevice removed the account's access key")
		}
		if err := s.PurgeAccount(ctx, Q(1, 1).Account); err != nil {
			t.Fatal(err)
		}
		if _, ok, err := s.AccessKeyHash(ctx, Q(1, 1).Account); err != nil || ok {
			t.Fatalf("purged account's access key: %v %v", ok, err)
		}
		if u, err := s.PushEndpoint(ctx, Q(1, 2)); err != nil || u != "" {
			t.Fatalf("purged account's device endpoint: %q %v", u, err)
		}
		if _, ok, _ := s.AccessKeyHash(ctx, Q(2, 1).Account); !ok {
			t.Fatal("PurgeAccount removed another account's access key")
		}
		if u, _ := s.PushEndpoint(ctx, Q(2, 1)); u == "" {
			t.Fatal("PurgeAccount removed another account's endpoint")
		}
	})
}
