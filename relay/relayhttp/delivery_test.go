package relayhttp_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/relay/server"
	"github.com/sotto-im/sotto/relay/store"
	"github.com/sotto-im/sotto/relay/store/pebblestore"
	"github.com/sotto-im/sotto/relay/wire"
)

func TestOrderWithinAndAcrossPriorities(t *testing.T) {
	e := newEnv(t, envOptions{})
	bob := store.QueueID{Account: e.account(1), Device: 1}
	alice := store.QueueID{Account: e.account(1), Device: 1}
	from := e.token(alice)
	for _, s := range []struct {
		prio uint8
		body string
	}{{0, "low-1"}, {5, "high-1"}, {0, "low-2"}, {5, "high-2"}, {1, "mid-1"}, {0, "low-3"}} {
		e.mustSend(from, msg(bob, s.prio, s.body))
	}
	d := e.dial(bob)
	var got []string
	for range 6 {
		m := d.deliver()
		if string(m.Header) != "h" {
			t.Errorf("header = %q", m.Header)
		}
		got = append(got, string(m.Body))
	}
	d.drained()
	want := []string{"high-1", "high-2", "mid-1", "low-1", "low-2", "low-3"}
	if !equalStrings(got, want) {
		t.Fatalf("order = %v, want %v", got, want)
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestAckDeletesAndRedeliveryAfterReconnect(t *testing.T) {
	e := newEnv(t, envOptions{})
	bob := store.QueueID{Account: e.account(1), Device: 1}
	from := e.token(store.QueueID{Account: e.account(1), Device: 1})
	for _, b := range []string{"one", "two", "three"} {
		e.mustSend(from, msg(bob, 0, b))
	}
	d := e.dial(bob)
	first := d.deliver()
	d.deliver()
	d.deliver()
	d.drained()
	d.ack(first.Cursor)
	waitFor(t, func() bool { return e.depth(bob) == 2 })
	d.c.Close(websocket.StatusNormalClosure, "")

	d2 := e.dial(bob)
	if m := d2.deliver(); string(m.Body) != "two" {
		t.Fatalf("redelivered %q first, want two", m.Body)
	}
	m3 := d2.deliver()
	if string(m3.Body) != "three" {
		t.Fatalf("redelivered %q, want three", m3.Body)
	}
	d2.drained()
	d2.ack(m3.Cursor)
	waitFor(t, func() bool { return e.depth(bob) == 1 })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWindowRespected(t *testing.T) {
	const window = 4
	e := newEnv(t, envOptions{cfg: server.Config{Window: window}})
	bob := store.QueueID{Account: e.account(1), Device: 1}
	from := e.token(store.QueueID{Account: e.account(1), Device: 1})
	for i := range 10 {
		e.mustSend(from, msg(bob, 0, string(rune('a'+i))))
	}
	d := e.dial(bob)
	var held []*wire.Deliver
	for range window {
		held = append(held, d.deliver())
	}
	d.quiet(150 * time.Millisecond) // the window is full: no fifth, no Drained yet
	got := 0
	for got < 10 {
		d.ack(held[0].Cursor)
		held = held[1:]
		got++
		if got+len(held) < 10 {
			held = append(held, d.deliver())
		}
		if len(held) > window {
			t.Fatalf("%d unacknowledged messages, window %d", len(held), window)
		}
	}
	waitFor(t, func() bool { return e.depth(bob) == 0 })
}

func TestDrainedMarkerThenLive(t *testing.T) {
	e := newEnv(t, envOptions{})
	bob := store.QueueID{Account: e.account(1), Device: 1}
	from := e.token(store.QueueID{Account: e.account(1), Device: 1})
	d := e.dial(bob)
	d.drained() // empty backlog: the marker comes at once
	e.mustSend(from, msg(bob, 0, "live"))
	if m := d.deliver(); string(m.Body) != "live" {
		t.Fatalf("got %q", m.Body)
	}
	d.quiet(100 * time.Millisecond) // Drained is sent once per connection
}

func TestDisplacementBySecondConnection(t *testing.T) {
	e := newEnv(t, envOptions{})
	bob := store.QueueID{Account: e.account(1), Device: 1}
	from := e.token(store.QueueID{Account: e.account(1), Device: 1})
	d1 := e.dial(bob)
	d1.drained()
	d2 := e.dial(bob)
	d2.drained()
	if code := d1.closeStatus(); code != websocket.StatusCode(server.CloseDisplaced) {
		t.Fatalf("first connection closed with %d, want %d", code, server.CloseDisplaced)
	}
	e.mustSend(from, msg(bob, 0, "to the new one"))
	if m := d2.deliver(); string(m.Body) != "to the new one" {
		t.Fatalf("got %q", m.Body)
	}
}

func TestEphemeral(t *testing.T) {
	e := newEnv(t, envOptions{})
	alice := store.QueueID{Account: e.account(1), Device: 1}
	online := store.QueueID{Account: e.account(1), Device: 1}
	offline := store.QueueID{Account: e.account(1), Device: 1}
	from := e.token(alice)
	d := e.dial(online)
	d.drained()
	m := msg(online, 0, "typing")
	m.Ephemeral = true
	e.mustSend(from, m)
	f := d.next()
	em, err := wire.ParseEphemeral(f)
	if err != nil || string(em.Body) != "typing" || em.ID != m.ID {
		t.Fatalf("ephemeral frame: %+v, %v", em, err)
	}

	marker := "EPHEMERAL-MARKER-7f3a9c"
	m = msg(offline, 0, marker)
	m.Ephemeral = true
	e.mustSend(from, m)
	if n := e.depth(offline) + e.depth(online); n != 0 {
		t.Fatalf("ephemeral messages queued: %d", n)
	}
	d2 := e.dial(offline)
	d2.drained()
	d2.quiet(100 * time.Millisecond)
	// Nothing of it reached the disk: not in the WAL, not in a table.
	if err := e.db.Pebble().Flush(); err != nil {
		t.Fatal(err)
	}
	scanDir(t, e.dir, []byte(marker))
}

// scanDir fails if needle appears in any file under dir.
func scanDir(t *testing.T, dir string, needle []byte) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, de os.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, needle) {
			t.Errorf("%s contains %q", filepath.Base(path), needle)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestExpiry(t *testing.T) {
	e := newEnv(t, envOptions{})
	bob := store.QueueID{Account: e.account(1), Device: 1}
	from := e.token(store.QueueID{Account: e.account(1), Device: 1})
	short := msg(bob, 0, "short")
	short.TTL = 60
	e.mustSend(from, short)
	e.mustSend(from, msg(bob, 0, "default")) // 30 days
	e.clock.Advance(2 * time.Minute)
	e.srv.Sweep(context.Background())
	if n := e.depth(bob); n != 1 {
		t.Fatalf("depth after sweep = %d, want 1", n)
	}
	d := e.dial(bob)
	if m := d.deliver(); string(m.Body) != "default" {
		t.Fatalf("got %q", m.Body)
	}
	d.drained()
	e.clock.Advance(31 * 24 * time.Hour)
	e.srv.Sweep(context.Background())
	if n := e.depth(bob); n != 0 {
		t.Fatalf("depth after 31 days = %d", n)
	}
}

func TestQueueFull(t *testing.T) {
	e := newEnv(t, envOptions{store: pebblestore.Options{MaxQueueMessages: 3}})
	bob := store.QueueID{Account: e.account(1), Device: 1}
	from := e.token(store.QueueID{Account: e.account(1), Device: 1})
	for range 3 {
		e.mustSend(from, msg(bob, 0, "x"))
	}
	status, body := e.send(from, msg(bob, 0, "one too many"))
	if status != http.StatusInsufficientStorage || errCode(t, body) != server.CodeQueueFull {
		t.Fatalf("4th send: %d %s", status, body)
	}
	if n := e.depth(bob); n != 3 {
		t.Fatalf("depth = %d", n)
	}
}

func errCode(t *testing.T, body []byte) string {
	t.Helper()
	var eb struct {
		Error struct {
			Code, Message string
			Missing       []struct {
				Account string
				Device  uint32
			}
			Extra []struct {
				Account string
				Device  uint32
			}
		}
	}
	if err := json.Unmarshal(body, &eb); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	if eb.Error.Message == "" {
		t.Errorf("error body %s has no message", body)
	}
	return eb.Error.Code
}

func TestIdempotentRetryStoredOnce(t *testing.T) {
	e := newEnv(t, envOptions{})
	bob := store.QueueID{Account: e.account(1), Device: 1}
	from := e.token(store.QueueID{Account: e.account(1), Device: 1})
	m := msg(bob, 0, "once")
	e.mustSend(from, m)
	e.mustSend(from, m)
	if n := e.depth(bob); n != 1 {
		t.Fatalf("depth = %d, want 1", n)
	}
	d := e.dial(bob)
	d.deliver()
	d.drained()
}

func TestMultiRecipientBodyStoredOnce(t *testing.T) {
	e := newEnv(t, envOptions{})
	devices := make([]crypto.DeviceID, 100)
	for i := range devices {
		devices[i] = crypto.DeviceID(i + 1)
	}
	group := e.account(devices...)
	other := e.account(1, 2)
	from := e.token(store.QueueID{Account: e.account(1), Device: 1})
	body := bytes.Repeat([]byte("B"), 10_000)
	m := &wire.Send{Body: body}
	m.ID[0] = 1
	acct := wire.SendAccount{Account: group}
	for _, d := range devices {
		acct.Devices = append(acct.Devices, wire.SendDevice{Device: uint32(d), Header: []byte{byte(d)}})
	}
	m.Accounts = []wire.SendAccount{acct, {Account: other, Devices: []wire.SendDevice{{Device: 1}, {Device: 2}}}}
	before, err := e.db.Stats()
	if err != nil {
		t.Fatal(err)
	}
	e.mustSend(from, m)
	after, err := e.db.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if after.Bodies-before.Bodies != 1 || after.BodyBytes-before.BodyBytes != int64(len(body)) {
		t.Fatalf("bodies stored: %d (%d bytes), want 1 (%d bytes)", after.Bodies-before.Bodies, after.BodyBytes-before.BodyBytes, len(body))
	}
	if after.Stored-before.Stored != 102 {
		t.Fatalf("entries stored: %d", after.Stored-before.Stored)
	}
	d := e.dial(store.QueueID{Account: group, Device: 42})
	got := d.deliver()
	if !bytes.Equal(got.Body, body) || !bytes.Equal(got.Header, []byte{42}) {
		t.Fatalf("device 42 got header %x", got.Header)
	}
}

func TestDeviceListMismatch409AndGone410(t *testing.T) {
	e := newEnv(t, envOptions{})
	alice := store.QueueID{Account: e.account(1, 2), Device: 1}
	bob := e.account(1, 2, 3)
	from := e.token(alice)
	m := &wire.Send{Body: []byte("x"), Accounts: []wire.SendAccount{{Account: bob, Devices: []wire.SendDevice{{Device: 1}, {Device: 3}, {Device: 9}}}}}
	status, body := e.send(from, m)
	if status != http.StatusConflict || errCode(t, body) != server.CodeMismatchedDevices {
		t.Fatalf("mismatch: %d %s", status, body)
	}
	var eb struct {
		Error struct {
			Missing, Extra []struct {
				Account string
				Device  uint32
			}
		}
	}
	json.Unmarshal(body, &eb)
	if len(eb.Error.Missing) != 1 || eb.Error.Missing[0].Device != 2 || eb.Error.Missing[0].Account != bob.String() ||
		len(eb.Error.Extra) != 1 || eb.Error.Extra[0].Device != 9 {
		t.Fatalf("missing/extra = %+v", eb.Error)
	}
	// The sender's own other devices: its sending device need not be named.
	own := &wire.Send{Body: []byte("sync"), Accounts: []wire.SendAccount{{Account: alice.Account, Devices: []wire.SendDevice{{Device: 2}}}}}
	e.mustSend(from, own)
	// Unknown (or deleted) account.
	var ghost crypto.AccountID
	ghost[0] = 0xee
	status, body = e.send(from, msg(store.QueueID{Account: ghost, Device: 1}, 0, "x"))
	if status != http.StatusGone || errCode(t, body) != server.CodeGone {
		t.Fatalf("unknown account: %d %s", status, body)
	}
	for _, d := range []crypto.DeviceID{1, 2, 3} {
		if n := e.depth(store.QueueID{Account: bob, Device: d}); n != 0 {
			t.Fatalf("refused send stored %d messages", n)
		}
	}
}

func TestCannotReadAnotherDevicesQueue(t *testing.T) {
	e := newEnv(t, envOptions{})
	acct := e.account(1, 2)
	mine := store.QueueID{Account: acct, Device: 1}
	theirs := store.QueueID{Account: acct, Device: 2}
	from := e.token(store.QueueID{Account: e.account(1), Device: 1})
	both := msg(theirs, 0, "for both")
	both.Accounts[0].Devices = append(both.Accounts[0].Devices, wire.SendDevice{Device: 1})
	e.mustSend(from, both)
	// The queue is the token's: no parameter can name another one.
	for _, path := range []string{"/v1/relay/ws?device=2", "/v1/relay/ws?account=" + acct.String() + "&device=2"} {
		h := http.Header{}
		h.Set("Authorization", "Bearer "+e.token(mine))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, _, err := websocket.Dial(ctx, "ws"+e.hs.URL[4:]+path, &websocket.DialOptions{HTTPHeader: h, Subprotocols: []string{wire.Subprotocol}})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		d := newDevice(t, c)
		d.deliver() // its own copy
		d.drained()
		d.quiet(50 * time.Millisecond)
		c.Close(websocket.StatusNormalClosure, "")
	}
	// Acknowledging another queue's cursor touches only one's own queue.
	d := e.dial(theirs)
	m := d.deliver()
	d.c.Close(websocket.StatusNormalClosure, "")
	dm := e.dial(mine)
	dm.deliver()
	dm.drained()
	dm.ack(m.Cursor)
	time.Sleep(50 * time.Millisecond)
	if n := e.depth(theirs); n != 1 {
		t.Fatalf("device 2's queue depth = %d after device 1 acked its cursor", n)
	}
	// Without a valid token there is no connection at all.
	h := http.Header{}
	h.Set("Authorization", "Bearer "+e.token(theirs)+"x")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, "ws"+e.hs.URL[4:]+"/v1/relay/ws", &websocket.DialOptions{HTTPHeader: h, Subprotocols: []string{wire.Subprotocol}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("forged token: err %v resp %v", err, resp)
	}
}

func TestSealedSendNeedsAccessKey(t *testing.T) {
	e := newEnv(t, envOptions{})
	bob := store.QueueID{Account: e.account(1), Device: 1}
	key := [32]byte{1, 2, 3}
	sealed := func(k [32]byte) *wire.Send {
		m := msg(bob, 0, "sealed")
		m.Sealed = true
		m.Accounts[0].AccessKey = k
		return m
	}
	// No key registered yet.
	if status, body := e.send("", sealed(key)); status != http.StatusUnauthorized || errCode(t, body) != server.CodeUnauthorized {
		t.Fatalf("before registration: %d %s", status, body)
	}
	// Register it (as bob).
	kb, _ := json.Marshal(map[string]string{"access_key": b64(key[:])})
	if status, body := e.do("PUT", "/v1/relay/access-key", e.token(bob), kb); status != http.StatusNoContent {
		t.Fatalf("register: %d %s", status, body)
	}
	wrong := key
	wrong[31] ^= 1
	if status, _ := e.send("", sealed(wrong)); status != http.StatusUnauthorized {
		t.Fatalf("wrong key: %d", status)
	}
	if status, _ := e.send("", sealed([32]byte{})); status != http.StatusUnauthorized {
		t.Fatalf("zero key: %d", status)
	}
	// An identified send without a token is refused too.
	if status, _ := e.send("", msg(bob, 0, "who?")); status != http.StatusUnauthorized {
		t.Fatalf("identified without token: %d", status)
	}
	if n := e.depth(bob); n != 0 {
		t.Fatalf("refused sends stored %d", n)
	}
	e.mustSend("", sealed(key))
	if n := e.depth(bob); n != 1 {
		t.Fatalf("depth = %d", n)
	}
	// The relay keeps only the hash.
	if err := e.db.Pebble().Flush(); err != nil {
		t.Fatal(err)
	}
	scanDir(t, e.dir, key[:])
}

func TestIdentifiedSendsRateLimited(t *testing.T) {
	e := newEnv(t, envOptions{cfg: server.Config{IdentifiedRate: 0.001, IdentifiedBurst: 2}})
	bob := store.QueueID{Account: e.account(1), Device: 1}
	from := e.token(store.QueueID{Account: e.account(1), Device: 1})
	e.mustSend(from, msg(bob, 0, "1"))
	e.mustSend(from, msg(bob, 0, "2"))
	if status, body := e.send(from, msg(bob, 0, "3")); status != http.StatusTooManyRequests || errCode(t, body) != server.CodeRateLimited {
		t.Fatalf("third: %d %s", status, body)
	}
}

func TestSendOverWebSocket(t *testing.T) {
	e := newEnv(t, envOptions{})
	alice := store.QueueID{Account: e.account(1), Device: 1}
	bob := store.QueueID{Account: e.account(1), Device: 1}
	da := e.dial(alice)
	da.drained()
	db := e.dial(bob)
	db.drained()
	m := msg(bob, 2, "over ws")
	m.RequestID = 77
	if err := da.write(m.Marshal()); err != nil {
		t.Fatal(err)
	}
	r, err := wire.ParseSendResult(da.next())
	if err != nil || r.RequestID != 77 || r.Status != 200 {
		t.Fatalf("result %+v %v", r, err)
	}
	if got := db.deliver(); string(got.Body) != "over ws" || got.Priority != 2 {
		t.Fatalf("got %+v", got)
	}
	bad := msg(store.QueueID{Account: bob.Account, Device: 5}, 0, "x")
	bad.RequestID = 78
	da.write(bad.Marshal())
	r, err = wire.ParseSendResult(da.next())
	if err != nil || r.Status != 409 || len(r.Missing) != 1 || len(r.Extra) != 1 || r.Extra[0].Device != 5 {
		t.Fatalf("result %+v %v", r, err)
	}
}

func TestPurge(t *testing.T) {
	e := newEnv(t, envOptions{})
	bob := store.QueueID{Account: e.account(1, 2), Device: 1}
	from := e.token(store.QueueID{Account: e.account(1), Device: 1})
	both := msg(bob, 0, "x")
	both.Accounts[0].Devices = append(both.Accounts[0].Devices, wire.SendDevice{Device: 2})
	e.mustSend(from, both)
	d := e.dial(bob)
	d.deliver()
	if err := e.srv.PurgeDevice(context.Background(), bob); err != nil {
		t.Fatal(err)
	}
	if code := d.closeStatus(); code != websocket.StatusCode(server.CloseRemoved) {
		t.Fatalf("close code %d", code)
	}
	if n := e.depth(bob); n != 0 {
		t.Fatalf("depth after purge %d", n)
	}
	b2 := store.QueueID{Account: bob.Account, Device: 2}
	e.direct.set(bob.Account, 2)
	e.mustSend(from, msg(b2, 0, "y"))
	if err := e.srv.PurgeAccount(context.Background(), bob.Account); err != nil {
		t.Fatal(err)
	}
	if n := e.depth(b2); n != 0 {
		t.Fatalf("depth after account purge %d", n)
	}
}

func TestCloseGoingAwayAndNoLeaks(t *testing.T) {
	e := newEnv(t, envOptions{})
	var ds []*device
	for i := range 5 {
		q := store.QueueID{Account: e.account(crypto.DeviceID(i + 1)), Device: crypto.DeviceID(i + 1)}
		d := e.dial(q)
		d.drained()
		ds = append(ds, d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.srv.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if code := d.closeStatus(); code != websocket.StatusGoingAway {
			t.Errorf("close code %d, want 1001", code)
		}
	}
	// New connections are refused after Close; leakCheck (registered by
	// newEnv) then checks that every goroutine ended.
	if d, _, err := e.dialErr(store.QueueID{Account: e.account(1), Device: 1}); err == nil {
		if code := d.closeStatus(); code != websocket.StatusGoingAway {
			t.Errorf("connection after Close: code %d", code)
		}
	}
}
