// Package storetest is a conformance suite for implementations of
// [store.Store]. An application that brings its own store (SQLite, a
// platform keychain, ...) runs it from a test:
//
//	func TestMyStore(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store { return openMyStore(t) })
//	}
//
// The suite checks the contract documented in package store: ErrNotFound,
// replace semantics, ordering and paging of message history, isolation of
// namespaces, copies in and out, concurrent use, writes under a
// [store.Deferred] context and [store.Syncer], and behaviour after Close.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/crypto"
)

// Run runs the conformance suite. open must return a new, empty store for
// each call; Run closes it when the subtest ends (open must not).
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Identity", testIdentity},
		{"PreKeys", testPreKeys},
		{"Sessions", testSessions},
		{"SenderKeys", testSenderKeys},
		{"Records", testRecords},
		{"Messages", testMessages},
		{"AddMessage", testAddMessage},
		{"ListMessagesOrder", testListMessagesOrder},
		{"ListMessagesBounds", testListMessagesBounds},
		{"ListMessagesPaging", testListMessagesPaging},
		{"MessageTimes", testMessageTimes},
		{"ScanMessages", testScanMessages},
		{"Outbox", testOutbox},
		{"Seen", testSeen},
		{"Copies", testCopies},
		{"CallbacksMayUseStore", testCallbacksMayUseStore},
		{"Concurrency", testConcurrency},
		{"Context", testContext},
		{"Deferred", testDeferred},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() { s.Close() })
			tc.fn(t, s)
		})
	}
	t.Run("Close", func(t *testing.T) {
		testClose(t, open(t))
	})
}

func account(n byte) crypto.AccountID {
	var a crypto.AccountID
	a[0], a[len(a)-1] = n, ^n
	return a
}

func addr(acc byte, dev crypto.DeviceID) crypto.Address {
	return crypto.Address{Account: account(acc), Device: dev}
}

func conv(n byte) store.ConversationID {
	var c store.ConversationID
	c[0], c[31] = n, 0x5a
	return c
}

func msgID(n int) [16]byte {
	var id [16]byte
	id[0], id[1], id[15] = byte(n>>8), byte(n), 0xa5
	return id
}

func group(n byte) store.GroupID {
	var g store.GroupID
	g[0], g[15] = n, 0x33
	return g
}

// base is an arbitrary instant with a nanosecond part, so that stores that
// round times are caught.
var base = time.Date(2026, 11, 22, 20, 0, 0, 123456789, time.UTC)

func mustNotFound(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("%s: err = %v, want ErrNotFound", what, err)
	}
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func mustBytes(t *testing.T, what string, got []byte, err error, want []byte) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s = %q, want %q", what, got, want)
	}
}

func testIdentity(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, err := s.LoadIdentity(ctx)
	mustNotFound(t, "LoadIdentity on empty store", err)
	must(t, "StoreIdentity", s.StoreIdentity(ctx, []byte("identity v1")))
	got, err := s.LoadIdentity(ctx)
	mustBytes(t, "LoadIdentity", got, err, []byte("identity v1"))
	must(t, "StoreIdentity (replace)", s.StoreIdentity(ctx, []byte("v2")))
	got, err = s.LoadIdentity(ctx)
	mustBytes(t, "LoadIdentity after replace", got, err, []byte("v2"))
	must(t, "StoreIdentity (empty)", s.StoreIdentity(ctx, []byte{}))
	got, err = s.LoadIdentity(ctx)
	mustBytes(t, "LoadIdentity of empty record", got, err, nil)
}

var kinds = []store.PreKeyKind{store.SignedEC, store.OneTimeEC, store.KEM, store.KEMLastResort}

func testPreKeys(t *testing.T, s store.Store) {
	ctx := t.Context()
	for _, k := range kinds {
		_, err := s.LoadPreKey(ctx, k, 1)
		mustNotFound(t, fmt.Sprintf("LoadPreKey(%v, 1) on empty store", k), err)
		ids, err := s.PreKeyIDs(ctx, k)
		must(t, "PreKeyIDs", err)
		if len(ids) != 0 {
			t.Fatalf("PreKeyIDs(%v) on empty store = %v", k, ids)
		}
	}
	// The same IDs in every kind, stored out of order, including the
	// extremes of the ID space.
	idsIn := []uint32{7, 0, 1 << 31, 3, ^uint32(0), 256, 1}
	for _, k := range kinds {
		for _, id := range idsIn {
			must(t, "StorePreKey", s.StorePreKey(ctx, k, id, fmt.Appendf(nil, "%v/%d", k, id)))
		}
	}
	want := slices.Sorted(slices.Values(idsIn))
	for _, k := range kinds {
		for _, id := range idsIn {
			got, err := s.LoadPreKey(ctx, k, id)
			mustBytes(t, "LoadPreKey", got, err, fmt.Appendf(nil, "%v/%d", k, id))
		}
		ids, err := s.PreKeyIDs(ctx, k)
		must(t, "PreKeyIDs", err)
		if !slices.Equal(ids, want) {
			t.Fatalf("PreKeyIDs(%v) = %v, want %v", k, ids, want)
		}
	}
	// Replace, then remove in one kind only.
	must(t, "StorePreKey (replace)", s.StorePreKey(ctx, store.OneTimeEC, 7, []byte("new")))
	got, err := s.LoadPreKey(ctx, store.OneTimeEC, 7)
	mustBytes(t, "LoadPreKey after replace", got, err, []byte("new"))
	must(t, "RemovePreKey", s.RemovePreKey(ctx, store.OneTimeEC, 7))
	must(t, "RemovePreKey (missing)", s.RemovePreKey(ctx, store.OneTimeEC, 7))
	must(t, "RemovePreKey (never stored)", s.RemovePreKey(ctx, store.OneTimeEC, 99))
	_, err = s.LoadPreKey(ctx, store.OneTimeEC, 7)
	mustNotFound(t, "LoadPreKey after remove", err)
	ids, err := s.PreKeyIDs(ctx, store.OneTimeEC)
	must(t, "PreKeyIDs", err)
	if slices.Contains(ids, 7) || len(ids) != len(want)-1 {
		t.Fatalf("PreKeyIDs after remove = %v", ids)
	}
	for _, k := range []store.PreKeyKind{store.SignedEC, store.KEM, store.KEMLastResort} {
		got, err := s.LoadPreKey(ctx, k, 7)
		mustBytes(t, "LoadPreKey of another kind after remove", got, err, fmt.Appendf(nil, "%v/7", k))
	}
	// Undefined kinds are rejected.
	for _, k := range []store.PreKeyKind{0, store.KEMLastResort + 1, 255} {
		if err := s.StorePreKey(ctx, k, 1, []byte("x")); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("StorePreKey(kind %d) = %v, want ErrInvalid", k, err)
		}
		if _, err := s.PreKeyIDs(ctx, k); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("PreKeyIDs(kind %d) = %v, want ErrInvalid", k, err)
		}
	}
}

func testSessions(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, err := s.LoadSession(ctx, addr(1, 1))
	mustNotFound(t, "LoadSession on empty store", err)
	devs, err := s.SessionDevices(ctx, account(1))
	must(t, "SessionDevices", err)
	if len(devs) != 0 {
		t.Fatalf("SessionDevices on empty store = %v", devs)
	}
	for _, d := range []crypto.DeviceID{9, 1, 1 << 30, 2} {
		must(t, "StoreSession", s.StoreSession(ctx, addr(1, d), fmt.Appendf(nil, "1.%d", d)))
	}
	for _, d := range []crypto.DeviceID{1, 3} {
		must(t, "StoreSession", s.StoreSession(ctx, addr(2, d), fmt.Appendf(nil, "2.%d", d)))
	}
	got, err := s.LoadSession(ctx, addr(1, 9))
	mustBytes(t, "LoadSession", got, err, []byte("1.9"))
	got, err = s.LoadSession(ctx, addr(2, 1))
	mustBytes(t, "LoadSession of another account", got, err, []byte("2.1"))
	_, err = s.LoadSession(ctx, addr(2, 9))
	mustNotFound(t, "LoadSession of a device of another account", err)

	devs, err = s.SessionDevices(ctx, account(1))
	must(t, "SessionDevices", err)
	if want := []crypto.DeviceID{1, 2, 9, 1 << 30}; !slices.Equal(devs, want) {
		t.Fatalf("SessionDevices = %v, want %v", devs, want)
	}
	devs, err = s.SessionDevices(ctx, account(3))
	must(t, "SessionDevices", err)
	if len(devs) != 0 {
		t.Fatalf("SessionDevices of an account without sessions = %v", devs)
	}

	must(t, "StoreSession (replace)", s.StoreSession(ctx, addr(1, 9), []byte("new")))
	got, err = s.LoadSession(ctx, addr(1, 9))
	mustBytes(t, "LoadSession after replace", got, err, []byte("new"))

	must(t, "DeleteSession", s.DeleteSession(ctx, addr(1, 2)))
	must(t, "DeleteSession (missing)", s.DeleteSession(ctx, addr(1, 2)))
	_, err = s.LoadSession(ctx, addr(1, 2))
	mustNotFound(t, "LoadSession after delete", err)
	devs, err = s.SessionDevices(ctx, account(1))
	must(t, "SessionDevices", err)
	if want := []crypto.DeviceID{1, 9, 1 << 30}; !slices.Equal(devs, want) {
		t.Fatalf("SessionDevices after delete = %v, want %v", devs, want)
	}
}

func testSenderKeys(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, err := s.LoadSenderKey(ctx, group(1), addr(1, 1))
	mustNotFound(t, "LoadSenderKey on empty store", err)
	for g := byte(1); g <= 2; g++ {
		for a := byte(1); a <= 3; a++ {
			must(t, "StoreSenderKey", s.StoreSenderKey(ctx, group(g), addr(a, 1), []byte{g, a}))
		}
	}
	must(t, "StoreSenderKey", s.StoreSenderKey(ctx, group(1), addr(1, 2), []byte("1.2")))
	got, err := s.LoadSenderKey(ctx, group(2), addr(3, 1))
	mustBytes(t, "LoadSenderKey", got, err, []byte{2, 3})
	got, err = s.LoadSenderKey(ctx, group(1), addr(1, 2))
	mustBytes(t, "LoadSenderKey of a second device", got, err, []byte("1.2"))
	must(t, "StoreSenderKey (replace)", s.StoreSenderKey(ctx, group(2), addr(3, 1), []byte("new")))
	got, err = s.LoadSenderKey(ctx, group(2), addr(3, 1))
	mustBytes(t, "LoadSenderKey after replace", got, err, []byte("new"))

	must(t, "DeleteSenderKeys", s.DeleteSenderKeys(ctx, group(1)))
	must(t, "DeleteSenderKeys (again)", s.DeleteSenderKeys(ctx, group(1)))
	must(t, "DeleteSenderKeys (unknown group)", s.DeleteSenderKeys(ctx, group(9)))
	for a := byte(1); a <= 3; a++ {
		_, err := s.LoadSenderKey(ctx, group(1), addr(a, 1))
		mustNotFound(t, "LoadSenderKey after DeleteSenderKeys", err)
	}
	_, err = s.LoadSenderKey(ctx, group(1), addr(1, 2))
	mustNotFound(t, "LoadSenderKey after DeleteSenderKeys", err)
	got, err = s.LoadSenderKey(ctx, group(2), addr(1, 1))
	mustBytes(t, "LoadSenderKey of another group", got, err, []byte{2, 1})
}

func listRecords(t *testing.T, s store.Store, kind string) map[string]string {
	t.Helper()
	m := make(map[string]string)
	err := s.ListRecords(t.Context(), kind, func(k, v []byte) error {
		if _, dup := m[string(k)]; dup {
			t.Errorf("ListRecords(%q) gave key %q twice", kind, k)
		}
		m[string(k)] = string(v)
		return nil
	})
	must(t, "ListRecords", err)
	return m
}

func testRecords(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, err := s.LoadRecord(ctx, "contact", []byte("alice"))
	mustNotFound(t, "LoadRecord on empty store", err)
	if m := listRecords(t, s, "contact"); len(m) != 0 {
		t.Fatalf("ListRecords on empty store = %v", m)
	}
	// Kinds and keys that an implementation concatenating kind and key
	// without framing would confuse.
	puts := []struct{ kind, key, rec string }{
		{"contact", "alice", "A"},
		{"contact", "bob", "B"},
		{"contact", "", "empty key"},
		{"contact", "\x00\xff", "binary key"},
		{"group", "alice", "group alice"},
		{"a", "bc", "a/bc"},
		{"ab", "c", "ab/c"},
		{"contac", "talice", "contac/talice"},
	}
	for _, p := range puts {
		must(t, "StoreRecord", s.StoreRecord(ctx, p.kind, []byte(p.key), []byte(p.rec)))
	}
	for _, p := range puts {
		got, err := s.LoadRecord(ctx, p.kind, []byte(p.key))
		mustBytes(t, fmt.Sprintf("LoadRecord(%q, %q)", p.kind, p.key), got, err, []byte(p.rec))
	}
	want := map[string]string{"alice": "A", "bob": "B", "": "empty key", "\x00\xff": "binary key"}
	if m := listRecords(t, s, "contact"); !mapsEqual(m, want) {
		t.Fatalf("ListRecords(contact) = %q, want %q", m, want)
	}
	if m := listRecords(t, s, "a"); !mapsEqual(m, map[string]string{"bc": "a/bc"}) {
		t.Fatalf("ListRecords(a) = %q", m)
	}
	if m := listRecords(t, s, "setting"); len(m) != 0 {
		t.Fatalf("ListRecords of an unused kind = %q", m)
	}

	must(t, "StoreRecord (replace)", s.StoreRecord(ctx, "contact", []byte("bob"), []byte("B2")))
	got, err := s.LoadRecord(ctx, "contact", []byte("bob"))
	mustBytes(t, "LoadRecord after replace", got, err, []byte("B2"))
	must(t, "DeleteRecord", s.DeleteRecord(ctx, "contact", []byte("alice")))
	must(t, "DeleteRecord (missing)", s.DeleteRecord(ctx, "contact", []byte("alice")))
	_, err = s.LoadRecord(ctx, "contact", []byte("alice"))
	mustNotFound(t, "LoadRecord after delete", err)
	got, err = s.LoadRecord(ctx, "group", []byte("alice"))
	mustBytes(t, "LoadRecord of another kind after delete", got, err, []byte("group alice"))
	if m := listRecords(t, s, "contact"); len(m) != 3 || m["bob"] != "B2" {
		t.Fatalf("ListRecords after replace and delete = %q", m)
	}

	// A callback error stops the iteration and comes back unchanged.
	stop := errors.New("stop")
	calls := 0
	err = s.ListRecords(ctx, "contact", func(k, v []byte) error { calls++; return stop })
	if err != stop || calls != 1 {
		t.Fatalf("ListRecords with failing callback = %v after %d calls, want stop after 1", err, calls)
	}

	if err := s.StoreRecord(ctx, "", []byte("k"), []byte("v")); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("StoreRecord with empty kind = %v, want ErrInvalid", err)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func message(c byte, n int, t time.Time) store.MessageRecord {
	return store.MessageRecord{Conversation: conv(c), ID: msgID(n), Time: t, Data: fmt.Appendf(nil, "message %d/%d", c, n)}
}

func sameMessage(a, b store.MessageRecord) bool {
	return a.Conversation == b.Conversation && a.ID == b.ID && a.Time.Equal(b.Time) && bytes.Equal(a.Data, b.Data)
}

func mustMessage(t *testing.T, what string, got store.MessageRecord, err error, want store.MessageRecord) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if !sameMessage(got, want) {
		t.Fatalf("%s = %+v, want %+v", what, got, want)
	}
}

// testAddMessage: AddMessage inserts a new message, and leaves an
// existing one with the same conversation and ID untouched (data and
// time), whatever it is given; the same ID in another conversation is
// another message.
func testAddMessage(t *testing.T, s store.Store) {
	ctx := t.Context()
	m := message(1, 1, base)
	added, err := s.AddMessage(ctx, m)
	must(t, "AddMessage", err)
	if !added {
		t.Fatal("AddMessage of a new message reported it not added")
	}
	got, err := s.GetMessage(ctx, conv(1), msgID(1))
	mustMessage(t, "GetMessage after AddMessage", got, err, m)

	dup := m
	dup.Data = []byte("replacement")
	dup.Time = base.Add(time.Hour)
	added, err = s.AddMessage(ctx, dup)
	must(t, "AddMessage (existing ID)", err)
	if added {
		t.Fatal("AddMessage over an existing message reported it added")
	}
	got, err = s.GetMessage(ctx, conv(1), msgID(1))
	mustMessage(t, "GetMessage after a refused AddMessage", got, err, m)
	list, err := s.ListMessages(ctx, conv(1), time.Time{}, time.Time{}, 0)
	must(t, "ListMessages", err)
	if len(list) != 1 || !sameMessage(list[0], m) {
		t.Fatalf("ListMessages after a refused AddMessage = %+v, want only %+v", list, m)
	}

	other := message(2, 1, base)
	added, err = s.AddMessage(ctx, other)
	must(t, "AddMessage (same ID, other conversation)", err)
	if !added {
		t.Fatal("AddMessage of the same ID in another conversation reported it not added")
	}
	// After a replace by PutMessage, AddMessage still sees the message.
	must(t, "PutMessage (replace)", s.PutMessage(ctx, dup))
	if added, err = s.AddMessage(ctx, m); err != nil || added {
		t.Fatalf("AddMessage after PutMessage = %v, %v", added, err)
	}
	got, err = s.GetMessage(ctx, conv(1), msgID(1))
	mustMessage(t, "GetMessage after PutMessage and AddMessage", got, err, dup)
}

func testMessages(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, err := s.GetMessage(ctx, conv(1), msgID(1))
	mustNotFound(t, "GetMessage on empty store", err)
	m := message(1, 1, base)
	must(t, "PutMessage", s.PutMessage(ctx, m))
	got, err := s.GetMessage(ctx, conv(1), msgID(1))
	mustMessage(t, "GetMessage", got, err, m)
	_, err = s.GetMessage(ctx, conv(2), msgID(1))
	mustNotFound(t, "GetMessage of the same ID in another conversation", err)

	// Replace with new data and a new time: one message, at its new place.
	m2 := m
	m2.Data = []byte("edited")
	m2.Time = base.Add(time.Hour)
	must(t, "PutMessage (replace)", s.PutMessage(ctx, m2))
	got, err = s.GetMessage(ctx, conv(1), msgID(1))
	mustMessage(t, "GetMessage after replace", got, err, m2)
	list, err := s.ListMessages(ctx, conv(1), time.Time{}, time.Time{}, 0)
	must(t, "ListMessages", err)
	if len(list) != 1 || !sameMessage(list[0], m2) {
		t.Fatalf("ListMessages after replace = %+v, want only %+v", list, m2)
	}
	list, err = s.ListMessages(ctx, conv(1), time.Time{}, base.Add(time.Minute), 0)
	must(t, "ListMessages", err)
	if len(list) != 0 {
		t.Fatalf("ListMessages before the new time found %+v: the old index entry survived the replace", list)
	}

	// An empty Data is kept as empty.
	e := message(1, 2, base)
	e.Data = nil
	must(t, "PutMessage (empty data)", s.PutMessage(ctx, e))
	got, err = s.GetMessage(ctx, conv(1), msgID(2))
	must(t, "GetMessage", err)
	if len(got.Data) != 0 {
		t.Fatalf("GetMessage of empty data = %q", got.Data)
	}

	must(t, "DeleteMessage", s.DeleteMessage(ctx, conv(1), msgID(1)))
	must(t, "DeleteMessage (missing)", s.DeleteMessage(ctx, conv(1), msgID(1)))
	must(t, "DeleteMessage (never stored)", s.DeleteMessage(ctx, conv(7), msgID(7)))
	_, err = s.GetMessage(ctx, conv(1), msgID(1))
	mustNotFound(t, "GetMessage after delete", err)
	list, err = s.ListMessages(ctx, conv(1), time.Time{}, time.Time{}, 0)
	must(t, "ListMessages", err)
	if len(list) != 1 || list[0].ID != msgID(2) {
		t.Fatalf("ListMessages after delete = %+v", list)
	}

	// Times a store cannot keep are refused.
	for _, bad := range []time.Time{{}, time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)} {
		if err := s.PutMessage(ctx, message(1, 3, bad)); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("PutMessage at %v = %v, want ErrInvalid", bad, err)
		}
	}
}

func ids(list []store.MessageRecord) []int {
	out := make([]int, len(list))
	for i, m := range list {
		out[i] = int(m.ID[0])<<8 | int(m.ID[1])
	}
	return out
}

func testListMessagesOrder(t *testing.T, s store.Store) {
	ctx := t.Context()
	// Put in an order unrelated to time; message n is at base + n seconds,
	// with some times before 1970 to catch sign errors in time encodings.
	order := []int{5, 1, 9, 3, 7, 2, 8, 4, 6, 0}
	for _, n := range order {
		at := base.Add(time.Duration(n) * time.Second)
		if n < 2 {
			at = time.Date(1969, 12, 31, 23, 59, 58+n, 0, time.UTC)
		}
		must(t, "PutMessage", s.PutMessage(ctx, message(1, n, at)))
		// A message in another conversation at the same time, and one with
		// the same ID.
		must(t, "PutMessage", s.PutMessage(ctx, message(2, n+100, at)))
	}
	list, err := s.ListMessages(ctx, conv(1), time.Time{}, time.Time{}, 0)
	must(t, "ListMessages", err)
	if got, want := ids(list), []int{9, 8, 7, 6, 5, 4, 3, 2, 1, 0}; !slices.Equal(got, want) {
		t.Fatalf("ListMessages order = %v, want %v", got, want)
	}
	for _, m := range list {
		if m.Conversation != conv(1) {
			t.Fatalf("ListMessages(conv 1) returned a message of %x", m.Conversation)
		}
		want := fmt.Appendf(nil, "message 1/%d", ids([]store.MessageRecord{m})[0])
		if !bytes.Equal(m.Data, want) {
			t.Fatalf("ListMessages data = %q, want %q", m.Data, want)
		}
	}
	list, err = s.ListMessages(ctx, conv(3), time.Time{}, time.Time{}, 10)
	must(t, "ListMessages", err)
	if len(list) != 0 {
		t.Fatalf("ListMessages of an empty conversation = %+v", list)
	}

	// Equal times: all returned, in a stable order.
	for n := 20; n < 25; n++ {
		must(t, "PutMessage", s.PutMessage(ctx, message(4, n, base)))
	}
	a, err := s.ListMessages(ctx, conv(4), time.Time{}, time.Time{}, 0)
	must(t, "ListMessages", err)
	b, err := s.ListMessages(ctx, conv(4), time.Time{}, time.Time{}, 0)
	must(t, "ListMessages", err)
	if len(a) != 5 || !slices.Equal(ids(a), ids(b)) {
		t.Fatalf("ListMessages of equal times = %v then %v", ids(a), ids(b))
	}
	got := slices.Sorted(slices.Values(ids(a)))
	if !slices.Equal(got, []int{20, 21, 22, 23, 24}) {
		t.Fatalf("ListMessages of equal times = %v", got)
	}
}

func testListMessagesBounds(t *testing.T, s store.Store) {
	ctx := t.Context()
	at := func(n int) time.Time { return base.Add(time.Duration(n) * time.Minute) }
	for n := range 10 {
		must(t, "PutMessage", s.PutMessage(ctx, message(1, n, at(n))))
	}
	tests := []struct {
		name          string
		after, before time.Time
		limit         int
		want          []int
	}{
		{"unbounded", time.Time{}, time.Time{}, 0, []int{9, 8, 7, 6, 5, 4, 3, 2, 1, 0}},
		{"limit", time.Time{}, time.Time{}, 3, []int{9, 8, 7}},
		{"negative limit", time.Time{}, time.Time{}, -1, []int{9, 8, 7, 6, 5, 4, 3, 2, 1, 0}},
		{"limit above count", time.Time{}, time.Time{}, 100, []int{9, 8, 7, 6, 5, 4, 3, 2, 1, 0}},
		{"after is inclusive", at(7), time.Time{}, 0, []int{9, 8, 7}},
		{"after between", at(7).Add(time.Nanosecond), time.Time{}, 0, []int{9, 8}},
		{"before is exclusive", time.Time{}, at(3), 0, []int{2, 1, 0}},
		{"before between", time.Time{}, at(3).Add(time.Nanosecond), 0, []int{3, 2, 1, 0}},
		{"both", at(2), at(6), 0, []int{5, 4, 3, 2}},
		{"both with limit", at(2), at(6), 2, []int{5, 4}},
		{"empty range", at(5), at(5), 0, nil},
		{"inverted range", at(6), at(2), 0, nil},
		{"after the newest", at(10), time.Time{}, 0, nil},
		{"before the oldest", time.Time{}, at(0), 0, nil},
		{"other time zone", at(7).In(time.FixedZone("x", 5*3600)), time.Time{}, 0, []int{9, 8, 7}},
	}
	for _, tc := range tests {
		list, err := s.ListMessages(ctx, conv(1), tc.after, tc.before, tc.limit)
		must(t, tc.name, err)
		if got := ids(list); !slices.Equal(got, tc.want) && (len(got) != 0 || len(tc.want) != 0) {
			t.Errorf("%s: ListMessages = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func testListMessagesPaging(t *testing.T, s store.Store) {
	ctx := t.Context()
	const n = 95
	for i := range n {
		must(t, "PutMessage", s.PutMessage(ctx, message(1, i, base.Add(time.Duration(i)*time.Millisecond))))
	}
	var all []int
	before := time.Time{}
	for pages := 0; ; pages++ {
		if pages > n {
			t.Fatal("paging does not end")
		}
		page, err := s.ListMessages(ctx, conv(1), time.Time{}, before, 10)
		must(t, "ListMessages", err)
		if len(page) == 0 {
			break
		}
		if len(page) > 10 {
			t.Fatalf("page of %d messages with limit 10", len(page))
		}
		all = append(all, ids(page)...)
		before = page[len(page)-1].Time
	}
	if len(all) != n {
		t.Fatalf("paging returned %d messages, want %d", len(all), n)
	}
	for i, id := range all {
		if id != n-1-i {
			t.Fatalf("paging order = %v", all)
		}
	}
}

func testMessageTimes(t *testing.T, s store.Store) {
	ctx := t.Context()
	times := []time.Time{
		time.Date(1678, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(1969, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Unix(0, 1),
		time.Now(), // with a monotonic reading
		base.In(time.FixedZone("UTC+13", 13*3600)),
		time.Date(2262, 1, 1, 0, 0, 0, 1, time.UTC),
	}
	for i, at := range times {
		must(t, "PutMessage", s.PutMessage(ctx, message(1, i, at)))
		got, err := s.GetMessage(ctx, conv(1), msgID(i))
		must(t, "GetMessage", err)
		if !got.Time.Equal(at) {
			t.Errorf("time %v read back as %v", at, got.Time)
		}
	}
	list, err := s.ListMessages(ctx, conv(1), time.Time{}, time.Time{}, 0)
	must(t, "ListMessages", err)
	if len(list) != len(times) {
		t.Fatalf("ListMessages over the time range = %d messages, want %d", len(list), len(times))
	}
	// time.Now() is among the times, so compare with the sorted order
	// rather than a fixed one.
	if !slices.IsSortedFunc(list, func(a, b store.MessageRecord) int { return b.Time.Compare(a.Time) }) {
		t.Fatalf("ListMessages over the time range = %v, not newest first", ids(list))
	}
}

func testScanMessages(t *testing.T, s store.Store) {
	ctx := t.Context()
	calls := 0
	must(t, "ScanMessages on empty store", s.ScanMessages(ctx, func(store.MessageRecord) error { calls++; return nil }))
	if calls != 0 {
		t.Fatalf("ScanMessages on empty store called fn %d times", calls)
	}
	want := make(map[store.ConversationID]map[[16]byte]store.MessageRecord)
	for c := byte(1); c <= 3; c++ {
		want[conv(c)] = make(map[[16]byte]store.MessageRecord)
		for n := range 20 {
			m := message(c, n, base.Add(time.Duration(n)*time.Second))
			must(t, "PutMessage", s.PutMessage(ctx, m))
			want[conv(c)][m.ID] = m
		}
	}
	// A replaced and a deleted message.
	r := message(2, 5, base.Add(-time.Hour))
	r.Data = []byte("replaced")
	must(t, "PutMessage", s.PutMessage(ctx, r))
	want[conv(2)][r.ID] = r
	must(t, "DeleteMessage", s.DeleteMessage(ctx, conv(3), msgID(7)))
	delete(want[conv(3)], msgID(7))

	seen := 0
	err := s.ScanMessages(ctx, func(m store.MessageRecord) error {
		w, ok := want[m.Conversation][m.ID]
		if !ok {
			return fmt.Errorf("unexpected or repeated message %x/%x", m.Conversation[:2], m.ID[:2])
		}
		if !sameMessage(m, w) {
			return fmt.Errorf("scanned %+v, want %+v", m, w)
		}
		delete(want[m.Conversation], m.ID)
		seen++
		return nil
	})
	must(t, "ScanMessages", err)
	if seen != 59 {
		t.Fatalf("ScanMessages saw %d messages, want 59", seen)
	}
	stop := errors.New("stop")
	calls = 0
	err = s.ScanMessages(ctx, func(store.MessageRecord) error { calls++; return stop })
	if err != stop || calls != 1 {
		t.Fatalf("ScanMessages with failing callback = %v after %d calls, want stop after 1", err, calls)
	}
}

func listOutbox(t *testing.T, s store.Store) (ids [][16]byte, recs []string) {
	t.Helper()
	must(t, "ListOutbox", s.ListOutbox(t.Context(), func(id [16]byte, rec []byte) error {
		ids = append(ids, id)
		recs = append(recs, string(rec))
		return nil
	}))
	return ids, recs
}

func testOutbox(t *testing.T, s store.Store) {
	ctx := t.Context()
	if ids, _ := listOutbox(t, s); len(ids) != 0 {
		t.Fatalf("ListOutbox on empty store = %x", ids)
	}
	// IDs put in an order that is neither sorted nor reverse sorted.
	order := []int{40, 3, 77, 12, 5, 60, 1}
	for _, n := range order {
		must(t, "PutOutbox", s.PutOutbox(ctx, msgID(n), fmt.Appendf(nil, "out %d", n)))
	}
	must(t, "PutOutbox (replace)", s.PutOutbox(ctx, msgID(77), []byte("retry 77")))
	must(t, "DeleteOutbox", s.DeleteOutbox(ctx, msgID(12)))
	must(t, "DeleteOutbox (missing)", s.DeleteOutbox(ctx, msgID(12)))
	must(t, "PutOutbox", s.PutOutbox(ctx, msgID(12), []byte("out 12 again")))

	gotIDs, recs := listOutbox(t, s)
	wantOrder := []int{40, 3, 77, 5, 60, 1, 12}
	wantRecs := []string{"out 40", "out 3", "retry 77", "out 5", "out 60", "out 1", "out 12 again"}
	if len(gotIDs) != len(wantOrder) {
		t.Fatalf("ListOutbox = %d entries %q, want %q", len(gotIDs), recs, wantRecs)
	}
	for i, n := range wantOrder {
		if gotIDs[i] != msgID(n) || recs[i] != wantRecs[i] {
			t.Fatalf("ListOutbox = %q, want %q (insertion order, replace keeps its place)", recs, wantRecs)
		}
	}
	stop := errors.New("stop")
	calls := 0
	err := s.ListOutbox(ctx, func([16]byte, []byte) error { calls++; return stop })
	if err != stop || calls != 1 {
		t.Fatalf("ListOutbox with failing callback = %v after %d calls, want stop after 1", err, calls)
	}

	// Used as a queue: drained from its head while new entries come in,
	// then emptied and filled again. (A store may start its listings at
	// the head it remembers; this is what that must not get wrong.)
	for _, n := range wantOrder[:4] { // 40, 3, 77, 5
		must(t, "DeleteOutbox", s.DeleteOutbox(ctx, msgID(n)))
	}
	must(t, "PutOutbox", s.PutOutbox(ctx, msgID(90), []byte("out 90")))
	must(t, "PutOutbox (replace at the head)", s.PutOutbox(ctx, msgID(60), []byte("retry 60")))
	if _, recs := listOutbox(t, s); fmt.Sprint(recs) != fmt.Sprint([]string{"retry 60", "out 1", "out 12 again", "out 90"}) {
		t.Fatalf("ListOutbox after draining the head = %q", recs)
	}
	for _, n := range []int{60, 1, 12, 90} {
		must(t, "DeleteOutbox", s.DeleteOutbox(ctx, msgID(n)))
	}
	if ids, _ := listOutbox(t, s); len(ids) != 0 {
		t.Fatalf("ListOutbox on an emptied outbox = %x", ids)
	}
	must(t, "PutOutbox", s.PutOutbox(ctx, msgID(91), []byte("out 91")))
	must(t, "PutOutbox", s.PutOutbox(ctx, msgID(92), []byte("out 92")))
	if _, recs := listOutbox(t, s); fmt.Sprint(recs) != fmt.Sprint([]string{"out 91", "out 92"}) {
		t.Fatalf("ListOutbox after emptying and refilling = %q", recs)
	}
}

func testSeen(t *testing.T, s store.Store) {
	ctx := t.Context()
	// Seen only looks: it neither records nor is fooled by other entries.
	if seen, err := s.Seen(ctx, account(1), msgID(1)); err != nil || seen {
		t.Fatalf("Seen before MarkSeen = %v, %v", seen, err)
	}
	if seen, err := s.Seen(ctx, account(1), msgID(1)); err != nil || seen {
		t.Fatalf("Seen recorded the entry: %v, %v", seen, err)
	}
	seen, err := s.MarkSeen(ctx, account(1), msgID(1), base)
	must(t, "MarkSeen", err)
	if seen {
		t.Fatal("MarkSeen of a new (sender, id) reported seen")
	}
	if seen, err := s.Seen(ctx, account(1), msgID(1)); err != nil || !seen {
		t.Fatalf("Seen after MarkSeen = %v, %v", seen, err)
	}
	if seen, err := s.Seen(ctx, account(2), msgID(1)); err != nil || seen {
		t.Fatalf("Seen of another sender = %v, %v", seen, err)
	}
	seen, err = s.MarkSeen(ctx, account(1), msgID(1), base.Add(time.Hour))
	must(t, "MarkSeen", err)
	if !seen {
		t.Fatal("MarkSeen of a repeated (sender, id) reported not seen")
	}
	for _, tc := range []struct {
		sender crypto.AccountID
		id     [16]byte
	}{{account(2), msgID(1)}, {account(1), msgID(2)}} {
		seen, err := s.MarkSeen(ctx, tc.sender, tc.id, base)
		must(t, "MarkSeen", err)
		if seen {
			t.Fatalf("MarkSeen(%v, %x) confused with another entry", tc.sender, tc.id[:2])
		}
	}
	must(t, "MarkSeen", errOnly(s.MarkSeen(ctx, account(3), msgID(3), base.Add(2*time.Hour))))

	// PruneSeen forgets entries recorded before the cutoff. The repeated
	// MarkSeen above kept the first time (base), so (1, 1) goes too.
	must(t, "PruneSeen", s.PruneSeen(ctx, base.Add(time.Minute)))
	for _, tc := range []struct {
		sender crypto.AccountID
		id     [16]byte
		want   bool
	}{
		{account(1), msgID(1), false},
		{account(2), msgID(1), false},
		{account(3), msgID(3), true},
	} {
		seen, err := s.MarkSeen(ctx, tc.sender, tc.id, base.Add(3*time.Hour))
		must(t, "MarkSeen", err)
		if seen != tc.want {
			t.Fatalf("MarkSeen after PruneSeen = %v, want %v", seen, tc.want)
		}
	}
	if _, err := s.MarkSeen(ctx, account(1), msgID(9), time.Time{}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("MarkSeen at the zero time = %v, want ErrInvalid", err)
	}
}

func errOnly(_ bool, err error) error { return err }

// testCopies checks that a store shares no memory with its callers: a
// slice passed in may be modified afterwards, and a slice returned may be
// modified by the caller.
func testCopies(t *testing.T, s store.Store) {
	ctx := t.Context()
	type rw struct {
		name  string
		store func(rec []byte) error
		load  func() ([]byte, error)
	}
	key := []byte("key")
	cases := []rw{
		{"identity", func(r []byte) error { return s.StoreIdentity(ctx, r) }, func() ([]byte, error) { return s.LoadIdentity(ctx) }},
		{"prekey", func(r []byte) error { return s.StorePreKey(ctx, store.KEM, 1, r) }, func() ([]byte, error) { return s.LoadPreKey(ctx, store.KEM, 1) }},
		{"session", func(r []byte) error { return s.StoreSession(ctx, addr(1, 1), r) }, func() ([]byte, error) { return s.LoadSession(ctx, addr(1, 1)) }},
		{"sender key", func(r []byte) error { return s.StoreSenderKey(ctx, group(1), addr(1, 1), r) }, func() ([]byte, error) { return s.LoadSenderKey(ctx, group(1), addr(1, 1)) }},
		{"record", func(r []byte) error { return s.StoreRecord(ctx, "k", key, r) }, func() ([]byte, error) { return s.LoadRecord(ctx, "k", []byte("key")) }},
		{"message", func(r []byte) error {
			return s.PutMessage(ctx, store.MessageRecord{Conversation: conv(1), ID: msgID(1), Time: base, Data: r})
		},
			func() ([]byte, error) {
				m, err := s.GetMessage(ctx, conv(1), msgID(1))
				return m.Data, err
			}},
		{"listed message", func(r []byte) error {
			return s.PutMessage(ctx, store.MessageRecord{Conversation: conv(2), ID: msgID(1), Time: base, Data: r})
		},
			func() ([]byte, error) {
				l, err := s.ListMessages(ctx, conv(2), time.Time{}, time.Time{}, 1)
				if err != nil || len(l) != 1 {
					return nil, fmt.Errorf("ListMessages = %d, %v", len(l), err)
				}
				return l[0].Data, nil
			}},
		{"scanned message", func(r []byte) error {
			return s.PutMessage(ctx, store.MessageRecord{Conversation: conv(2), ID: msgID(1), Time: base, Data: r})
		},
			func() ([]byte, error) {
				var d []byte
				err := s.ScanMessages(ctx, func(m store.MessageRecord) error {
					if m.Conversation == conv(2) {
						d = m.Data
					}
					return nil
				})
				return d, err
			}},
		{"listed record", func(r []byte) error { return s.StoreRecord(ctx, "l", key, r) },
			func() ([]byte, error) {
				var d []byte
				err := s.ListRecords(ctx, "l", func(_, v []byte) error { d = v; return nil })
				return d, err
			}},
		{"outbox", func(r []byte) error { return s.PutOutbox(ctx, msgID(1), r) },
			func() ([]byte, error) {
				var d []byte
				err := s.ListOutbox(ctx, func(_ [16]byte, v []byte) error { d = v; return nil })
				return d, err
			}},
	}
	for _, c := range cases {
		in := []byte("original")
		must(t, c.name+": store", c.store(in))
		copy(in, "MODIFIED")
		got, err := c.load()
		mustBytes(t, c.name+": load after the caller modified its input", got, err, []byte("original"))
		copy(got, "SCRIBBLE")
		got, err = c.load()
		mustBytes(t, c.name+": load after the caller modified a loaded record", got, err, []byte("original"))
	}
	// The record key passed in is copied too.
	copy(key, "xyz")
	got, err := s.LoadRecord(ctx, "k", []byte("key"))
	mustBytes(t, "record under a key the caller modified", got, err, []byte("original"))
	// Keys handed to ListRecords callbacks are the caller's to keep.
	var keys [][]byte
	must(t, "ListRecords", s.ListRecords(ctx, "k", func(k, _ []byte) error { keys = append(keys, k); return nil }))
	if len(keys) != 1 {
		t.Fatalf("ListRecords gave %d keys", len(keys))
	}
	copy(keys[0], "zzz")
	got, err = s.LoadRecord(ctx, "k", []byte("key"))
	mustBytes(t, "record after the caller modified a listed key", got, err, []byte("original"))
	// PreKeyIDs and SessionDevices return fresh slices.
	ids, err := s.PreKeyIDs(ctx, store.KEM)
	must(t, "PreKeyIDs", err)
	ids[0] = 99
	ids, err = s.PreKeyIDs(ctx, store.KEM)
	must(t, "PreKeyIDs", err)
	if !slices.Equal(ids, []uint32{1}) {
		t.Fatalf("PreKeyIDs after the caller modified a result = %v", ids)
	}
}

// testCallbacksMayUseStore checks that iteration callbacks can call the
// store without deadlocking: the client deletes outbox entries while
// listing them.
func testCallbacksMayUseStore(t *testing.T, s store.Store) {
	ctx := t.Context()
	for n := range 5 {
		must(t, "PutOutbox", s.PutOutbox(ctx, msgID(n), []byte("x")))
		must(t, "StoreRecord", s.StoreRecord(ctx, "contact", []byte{byte(n)}, []byte("x")))
		must(t, "PutMessage", s.PutMessage(ctx, message(1, n, base)))
	}
	done := make(chan error, 1)
	go func() {
		done <- func() error {
			if err := s.ListOutbox(ctx, func(id [16]byte, _ []byte) error { return s.DeleteOutbox(ctx, id) }); err != nil {
				return err
			}
			if err := s.ListRecords(ctx, "contact", func(k, _ []byte) error {
				_, err := s.LoadRecord(ctx, "contact", k)
				return err
			}); err != nil {
				return err
			}
			return s.ScanMessages(ctx, func(m store.MessageRecord) error {
				return s.PutMessage(ctx, store.MessageRecord{Conversation: conv(9), ID: m.ID, Time: m.Time, Data: m.Data})
			})
		}()
	}()
	select {
	case err := <-done:
		must(t, "store calls from callbacks", err)
	case <-time.After(20 * time.Second):
		t.Fatal("store calls from iteration callbacks deadlocked")
	}
	if ids, _ := listOutbox(t, s); len(ids) != 0 {
		t.Fatalf("outbox after deleting every entry from the callback has %d entries", len(ids))
	}
	list, err := s.ListMessages(ctx, conv(9), time.Time{}, time.Time{}, 0)
	must(t, "ListMessages", err)
	if len(list) != 5 {
		t.Fatalf("messages copied from a ScanMessages callback = %d, want 5", len(list))
	}
}

// testConcurrency runs writers and readers at once; run it with -race.
// MarkSeen must be atomic: of many concurrent marks of one (sender, id),
// exactly one reports unseen.
func testConcurrency(t *testing.T, s store.Store) {
	ctx := t.Context()
	const workers, perWorker = 8, 25
	var firsts atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- func() error {
				for i := range perWorker {
					n := w*perWorker + i
					if err := s.PutMessage(ctx, message(byte(w%2), n, base.Add(time.Duration(n)*time.Second))); err != nil {
						return err
					}
					if err := s.StoreSession(ctx, addr(1, crypto.DeviceID(n+1)), []byte{byte(n)}); err != nil {
						return err
					}
					if err := s.PutOutbox(ctx, msgID(n), []byte{byte(n)}); err != nil {
						return err
					}
					if _, err := s.ListMessages(ctx, conv(byte(w%2)), time.Time{}, time.Time{}, 5); err != nil {
						return err
					}
					seen, err := s.MarkSeen(ctx, account(7), msgID(i), base)
					if err != nil {
						return err
					}
					if !seen {
						firsts.Add(1)
					}
					if _, err := s.LoadSession(ctx, addr(1, crypto.DeviceID(n+1))); err != nil {
						return err
					}
				}
				return nil
			}()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		must(t, "concurrent use", err)
	}
	if got := firsts.Load(); got != perWorker {
		t.Fatalf("concurrent MarkSeen reported %d first sightings of %d distinct IDs", got, perWorker)
	}
	devs, err := s.SessionDevices(ctx, account(1))
	must(t, "SessionDevices", err)
	if len(devs) != workers*perWorker {
		t.Fatalf("SessionDevices after concurrent stores = %d, want %d", len(devs), workers*perWorker)
	}
	count := 0
	must(t, "ScanMessages", s.ScanMessages(ctx, func(store.MessageRecord) error { count++; return nil }))
	if count != workers*perWorker {
		t.Fatalf("ScanMessages after concurrent puts = %d, want %d", count, workers*perWorker)
	}
	ids, _ := listOutbox(t, s)
	if len(ids) != workers*perWorker {
		t.Fatalf("ListOutbox after concurrent puts = %d, want %d", len(ids), workers*perWorker)
	}
}

func testContext(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.StoreIdentity(ctx, []byte("x")); !errors.Is(err, context.Canceled) {
		t.Errorf("StoreIdentity with a cancelled context = %v", err)
	}
	if _, err := s.ListMessages(ctx, conv(1), time.Time{}, time.Time{}, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("ListMessages with a cancelled context = %v", err)
	}
	if err := s.ScanMessages(ctx, func(store.MessageRecord) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("ScanMessages with a cancelled context = %v", err)
	}
	// The store still works with a live context.
	must(t, "StoreIdentity", s.StoreIdentity(t.Context(), []byte("x")))
}

func testClose(t *testing.T, s store.Store) {
	ctx := t.Context()
	must(t, "StoreIdentity", s.StoreIdentity(ctx, []byte("x")))
	must(t, "Close", s.Close())
	checks := map[string]error{
		"LoadIdentity": errOf(s.LoadIdentity(ctx)),
		"StoreSession": s.StoreSession(ctx, addr(1, 1), []byte("x")),
		"PutMessage":   s.PutMessage(ctx, message(1, 1, base)),
		"ListMessages": errOf(s.ListMessages(ctx, conv(1), time.Time{}, time.Time{}, 0)),
		"MarkSeen":     errOnly(s.MarkSeen(ctx, account(1), msgID(1), base)),
		"ListOutbox":   s.ListOutbox(ctx, func([16]byte, []byte) error { return nil }),
	}
	if sy, ok := s.(store.Syncer); ok {
		checks["Sync"] = sy.Sync(ctx)
	}
	for name, err := range checks {
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
}

func errOf[T any](_ T, err error) error { return err }

// writeSet makes one write of every kind under ctx, and a few removals of
// records written (durably) first.
func writeSet(t *testing.T, s store.Store, ctx context.Context) {
	t.Helper()
	plain := t.Context()
	must(t, "StorePreKey", s.StorePreKey(plain, store.OneTimeEC, 9, []byte("gone")))
	must(t, "StoreSession", s.StoreSession(plain, addr(2, 1), []byte("gone")))
	must(t, "StoreSenderKey", s.StoreSenderKey(plain, group(2), addr(2, 1), []byte("gone")))
	must(t, "StoreRecord", s.StoreRecord(plain, "kind", []byte("gone"), []byte("gone")))
	must(t, "PutMessage", s.PutMessage(plain, message(2, 9, base)))
	must(t, "PutOutbox", s.PutOutbox(plain, msgID(9), []byte("gone")))

	must(t, "StorePreKey", s.StorePreKey(ctx, store.KEM, 7, []byte("deferred prekey")))
	must(t, "RemovePreKey", s.RemovePreKey(ctx, store.OneTimeEC, 9))
	must(t, "StoreSession", s.StoreSession(ctx, addr(1, 3), []byte("deferred session")))
	must(t, "DeleteSession", s.DeleteSession(ctx, addr(2, 1)))
	must(t, "StoreSenderKey", s.StoreSenderKey(ctx, group(1), addr(1, 3), []byte("deferred sender key")))
	must(t, "DeleteSenderKeys", s.DeleteSenderKeys(ctx, group(2)))
	must(t, "StoreRecord", s.StoreRecord(ctx, "kind", []byte("key"), []byte("deferred record")))
	must(t, "DeleteRecord", s.DeleteRecord(ctx, "kind", []byte("gone")))
	for n := range 10 {
		must(t, "PutMessage", s.PutMessage(ctx, message(1, n, base.Add(time.Duration(n)*time.Second))))
	}
	must(t, "DeleteMessage", s.DeleteMessage(ctx, conv(2), msgID(9)))
	must(t, "PutOutbox", s.PutOutbox(ctx, msgID(1), []byte("deferred outbox")))
	must(t, "DeleteOutbox", s.DeleteOutbox(ctx, msgID(9)))
	if seen, err := s.MarkSeen(ctx, account(1), msgID(1), base); err != nil || seen {
		t.Fatalf("MarkSeen = %v, %v", seen, err)
	}
	// Last, so that a store that syncs only some writes (see
	// WriteDeferredSet) has synced every earlier one by its return.
	must(t, "StoreIdentity", s.StoreIdentity(ctx, []byte("deferred identity")))
}

// checkSet checks that every write of writeSet is there.
func checkSet(t *testing.T, s store.Store) {
	t.Helper()
	ctx := t.Context()
	rec, err := s.LoadIdentity(ctx)
	mustBytes(t, "LoadIdentity", rec, err, []byte("deferred identity"))
	rec, err = s.LoadPreKey(ctx, store.KEM, 7)
	mustBytes(t, "LoadPreKey", rec, err, []byte("deferred prekey"))
	_, err = s.LoadPreKey(ctx, store.OneTimeEC, 9)
	mustNotFound(t, "LoadPreKey (removed)", err)
	rec, err = s.LoadSession(ctx, addr(1, 3))
	mustBytes(t, "LoadSession", rec, err, []byte("deferred session"))
	_, err = s.LoadSession(ctx, addr(2, 1))
	mustNotFound(t, "LoadSession (deleted)", err)
	rec, err = s.LoadSenderKey(ctx, group(1), addr(1, 3))
	mustBytes(t, "LoadSenderKey", rec, err, []byte("deferred sender key"))
	_, err = s.LoadSenderKey(ctx, group(2), addr(2, 1))
	mustNotFound(t, "LoadSenderKey (deleted)", err)
	rec, err = s.LoadRecord(ctx, "kind", []byte("key"))
	mustBytes(t, "LoadRecord", rec, err, []byte("deferred record"))
	_, err = s.LoadRecord(ctx, "kind", []byte("gone"))
	mustNotFound(t, "LoadRecord (deleted)", err)
	list, err := s.ListMessages(ctx, conv(1), time.Time{}, time.Time{}, 0)
	if err != nil || len(list) != 10 {
		t.Fatalf("ListMessages = %d messages, %v; want 10", len(list), err)
	}
	for i, m := range list {
		if want := message(1, 9-i, base.Add(time.Duration(9-i)*time.Second)); !sameMessage(m, want) {
			t.Fatalf("ListMessages[%d] = %+v, want %+v", i, m, want)
		}
	}
	_, err = s.GetMessage(ctx, conv(2), msgID(9))
	mustNotFound(t, "GetMessage (deleted)", err)
	ids, recs := listOutbox(t, s)
	if len(ids) != 1 || ids[0] != msgID(1) || recs[0] != "deferred outbox" {
		t.Fatalf("ListOutbox = %q, want [deferred outbox]", recs)
	}
	if seen, err := s.Seen(ctx, account(1), msgID(1)); err != nil || !seen {
		t.Fatalf("Seen = %v, %v; want true", seen, err)
	}
}

// WriteDeferredSet serves implementations that test durability across a
// crash: it makes a write of every kind under ctx (a context from
// [store.Deferred], or not) and ends with StoreIdentity; the records it
// removes under ctx it first writes without deferral. [CheckDeferredSet] checks
// that all of it is in s, for example after a Sync, a simulated crash and a
// reopen.
func WriteDeferredSet(t *testing.T, s store.Store, ctx context.Context) {
	t.Helper()
	writeSet(t, s, ctx)
}

// CheckDeferredSet checks that every write of [WriteDeferredSet] is in s.
func CheckDeferredSet(t *testing.T, s store.Store) {
	t.Helper()
	checkSet(t, s)
}

func testDeferred(t *testing.T, s store.Store) {
	ctx := t.Context()
	dctx := store.Deferred(ctx)
	if !store.IsDeferred(dctx) || store.IsDeferred(ctx) {
		t.Fatal("IsDeferred does not tell a Deferred context")
	}
	if !store.IsDeferred(context.WithoutCancel(dctx)) {
		t.Fatal("IsDeferred lost in a derived context")
	}
	// Writes under a Deferred context are visible at once, before any
	// Sync, like any other write.
	writeSet(t, s, dctx)
	checkSet(t, s)
	sy, ok := s.(store.Syncer)
	if !ok {
		return
	}
	must(t, "Sync", sy.Sync(ctx))
	must(t, "Sync (nothing deferred)", sy.Sync(ctx))
	checkSet(t, s)
	// Sync and deferred writes may run concurrently with other writers.
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for n := range 20 {
				if err := s.PutMessage(dctx, message(byte(10+g), n, base.Add(time.Duration(n)))); err != nil {
					t.Error(err)
					return
				}
				if n%5 == 4 {
					if err := sy.Sync(ctx); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	for g := range 4 {
		if list, err := s.ListMessages(ctx, conv(byte(10+g)), time.Time{}, time.Time{}, 0); err != nil || len(list) != 20 {
			t.Fatalf("ListMessages after concurrent deferred writes = %d, %v; want 20", len(list), err)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := sy.Sync(cctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Sync with a cancelled context = %v", err)
	}
}
