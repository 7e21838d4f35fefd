package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/sotto-im/sotto/client/internal/testenv"
	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/client/store/memstore"
	"github.com/sotto-im/sotto/client/store/pebblestore"
	"github.com/sotto-im/sotto/relay/wire"
)

// Tests of batched receiving (relay.go, receiveBatch): a batch is
// acknowledged only after the store's Sync, and a long backlog arrives in
// order under few Syncs.

// recvSyncStore is a real pebblestore whose Sync can be made to fail, and
// which counts the Syncs. Close leaves the directory for a later Open.
type recvSyncStore struct {
	*pebblestore.DB
	fail   atomic.Bool
	syncs  atomic.Int64
	failed atomic.Int64
}

var errSyncRefused = errors.New("test: sync refused")

func (s *recvSyncStore) Sync(ctx context.Context) error {
	if s.fail.Load() {
		s.failed.Add(1)
		return errSyncRefused
	}
	s.syncs.Add(1)
	return s.DB.Sync(ctx)
}

// recvTestStoreOptions keep scrypt cheap: the tests are about durability,
// not the passphrase.
var recvTestStoreOptions = &pebblestore.Options{ScryptLogN: 10}

var recvTestPassphrase = []byte("correct horse")

func openSyncStore(t *testing.T, dir string, create bool) *recvSyncStore {
	t.Helper()
	open := pebblestore.Open
	if create {
		open = pebblestore.Create
	}
	db, err := open(dir, recvTestPassphrase, recvTestStoreOptions)
	if err != nil {
		t.Fatal(err)
	}
	return &recvSyncStore{DB: db}
}

// recvParty is a client and the events it emitted.
type recvParty struct {
	t  *testing.T
	c  *Client
	ev chan Event
}

func startRecvParty(t *testing.T, env *testenv.Env, st store.Store, create bool) *recvParty {
	t.Helper()
	open := Open
	if create {
		open = Create
	}
	c, err := open(context.Background(), Options{Store: st, KeyServerURL: env.KeyServerURL, RelayURL: env.RelayURL,
		TrustRoots: env.TrustRoots})
	if err != nil {
		t.Fatal(err)
	}
	p := &recvParty{t: t, c: c, ev: make(chan Event, 1<<14)}
	go func() {
		for ev := range c.Events() {
			p.ev <- ev
		}
		close(p.ev)
	}()
	t.Cleanup(func() { c.Close() })
	return p
}

// next returns the next event that match accepts.
func (p *recvParty) next(what string, match func(Event) bool) Event {
	p.t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case ev, ok := <-p.ev:
			if !ok {
				p.t.Fatalf("events closed while waiting for %s", what)
			}
			if match(ev) {
				return ev
			}
		case <-timeout:
			p.t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func (p *recvParty) nextMessage() Message {
	p.t.Helper()
	return p.next("a message", func(ev Event) bool { _, ok := ev.(MessageEvent); return ok }).(MessageEvent).Message
}

func recvBefriend(t *testing.T, a, b *recvParty) ConversationID {
	t.Helper()
	ctx := context.Background()
	cb, err := a.c.AddContact(ctx, b.c.Invite(false).String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.c.AddContact(ctx, a.c.Invite(true).String()); err != nil {
		t.Fatal(err)
	}
	return cb.Conversation
}

// recvSendAll sends n texts "<prefix> %04d" in order and waits until the relay
// has accepted the last one.
func recvSendAll(t *testing.T, from *recvParty, conv ConversationID, prefix string, n int) {
	t.Helper()
	ctx := context.Background()
	var last MessageID
	for i := range n {
		id, err := from.c.Send(ctx, conv, Text(fmt.Sprintf("%s %04d", prefix, i)))
		if err != nil {
			t.Fatal(err)
		}
		last = id
	}
	from.next("last message sent", func(ev Event) bool {
		u, ok := ev.(UpdateEvent)
		return ok && u.Message.ID == last && u.Message.Status >= StatusSent
	})
}

// recvCheckHistory checks that conv holds exactly the n texts of recvSendAll, each
// once. (Their order is checked on the events: history orders by sent
// time, which a burst shares to the millisecond.)
func recvCheckHistory(t *testing.T, c *Client, conv ConversationID, prefix string, n int) {
	t.Helper()
	hist, err := c.History(context.Background(), conv, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, m := range hist {
		count[m.Text]++
	}
	for i := range n {
		if text := fmt.Sprintf("%s %04d", prefix, i); count[text] != 1 {
			t.Fatalf("history holds %q %d times, want once", text, count[text])
		}
	}
	if len(hist) != n {
		t.Fatalf("history holds %d messages, want %d", len(hist), n)
	}
}

// recvRelayBacklog connects to the relay as c's device over a raw WebSocket,
// acknowledges nothing, and returns the relay IDs of the messages the relay
// delivers within a short while: what it still holds for the device.
func recvRelayBacklog(t *testing.T, env *testenv.Env, tok string) map[[16]byte]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h := http.Header{}
	h.Set("Authorization", "Bearer "+tok)
	ws, _, err := websocket.Dial(ctx, strings.Replace(env.RelayURL, "http", "ws", 1)+"/v1/relay/ws",
		&websocket.DialOptions{HTTPHeader: h, Subprotocols: []string{wire.Subprotocol}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(wire.MaxFrameSize)
	held := map[[16]byte]bool{}
	for {
		// The relay sends a window of messages at once and Drained only
		// after they are acknowledged: a pause ends the backlog.
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		_, frame, err := ws.Read(rctx)
		rcancel()
		if err != nil {
			return held
		}
		switch ft, _ := wire.TypeOf(frame); ft {
		case wire.FrameDeliver:
			d, err := wire.ParseDeliver(frame)
			if err != nil {
				t.Fatal(err)
			}
			held[d.ID] = true
		case wire.FrameDrained:
			return held
		}
	}
}

// TestRecvAckOnlyAfterSync: while the store's Sync fails, the client
// acknowledges nothing (the relay still holds every message) yet shows
// each message once; once Sync works, the redelivered copies are dropped
// and acknowledged, and the history holds every message exactly once.
func TestRecvAckOnlyAfterSync(t *testing.T) {
	env := StartTestEnv(t)
	dir := t.TempDir()
	bobStore := openSyncStore(t, dir, true)
	alice, bob := startRecvParty(t, env, memstore.New(), true), startRecvParty(t, env, bobStore, true)
	ab := recvBefriend(t, alice, bob)
	ctx := context.Background()
	ba := directConversation(alice.c.Account())

	const n = 30
	bobStore.fail.Store(true)
	// One at a time, so that each message is an envelope of its own (the
	// relay's backlog below counts envelopes).
	for i := range n {
		id, err := alice.c.Send(ctx, ab, Text(fmt.Sprintf("unsynced %04d", i)))
		if err != nil {
			t.Fatal(err)
		}
		alice.next("message sent", func(ev Event) bool {
			u, ok := ev.(UpdateEvent)
			return ok && u.Message.ID == id && u.Message.Status >= StatusSent
		})
	}
	for i := range n {
		if m, want := bob.nextMessage(), fmt.Sprintf("unsynced %04d", i); m.Text != want {
			t.Fatalf("message %d = %q, want %q", i, m.Text, want)
		}
	}
	if bobStore.failed.Load() == 0 {
		t.Fatal("the store was never asked to sync")
	}
	tok, err := bob.c.ks.token(ctx, bob.c.Address(), bob.c.id.ik, bob.c.now)
	if err != nil {
		t.Fatal(err)
	}
	bob.c.Close()
	if held := recvRelayBacklog(t, env, tok); len(held) != n {
		t.Fatalf("relay holds %d messages after failed Syncs, want all %d (acknowledged before Sync?)", len(held), n)
	}

	// Syncs work again: the redelivered copies are duplicates, dropped and
	// acknowledged. (A message the relay still counted as in flight on the
	// previous connection when this one started comes on the next one:
	// hence the rounds.)
	for round := 1; ; round++ {
		bobStore = openSyncStore(t, dir, false)
		bob = startRecvParty(t, env, bobStore, false)
		bob.next("drained", func(ev Event) bool {
			if m, ok := ev.(MessageEvent); ok {
				t.Fatalf("redelivered message shown again: %q", m.Message.Text)
			}
			c, ok := ev.(ConnectionEvent)
			return ok && c.State == Drained
		})
		recvCheckHistory(t, bob.c, ba, "unsynced", n)
		bob.c.Close()
		held := recvRelayBacklog(t, env, tok)
		if len(held) == 0 {
			break
		}
		if round == 5 {
			t.Fatalf("relay still holds %d messages after %d connections with working Syncs", len(held), round)
		}
		t.Logf("round %d: the relay still holds %d messages", round, len(held))
	}
}

// TestRecvOfflineBacklogInOrder: 1,000 messages (250 under -race) to a
// recipient that is offline (on the default encrypted store) arrive in
// order, each once, under far fewer Syncs than messages.
func TestRecvOfflineBacklogInOrder(t *testing.T) {
	env := StartTestEnv(t)
	dir := t.TempDir()
	bobStore := openSyncStore(t, dir, true)
	alice, bob := startRecvParty(t, env, memstore.New(), true), startRecvParty(t, env, bobStore, true)
	ab := recvBefriend(t, alice, bob)
	ba := directConversation(alice.c.Account())
	if err := bob.c.Close(); err != nil {
		t.Fatal(err)
	}
	n := 1000
	if recvRaceEnabled {
		n = 250 // still four windows of the relay
	}
	recvSendAll(t, alice, ab, "offline", n)
	bobStore = openSyncStore(t, dir, false)
	bob = startRecvParty(t, env, bobStore, false)
	for i := range n {
		if m, want := bob.nextMessage(), fmt.Sprintf("offline %04d", i); m.Text != want {
			t.Fatalf("message %d = %q, want %q", i, m.Text, want)
		}
	}
	recvCheckHistory(t, bob.c, ba, "offline", n)
	// Batches: far fewer Syncs than messages (each batch takes every
	// Deliver already read, up to the relay's window).
	syncs := bobStore.syncs.Load()
	t.Logf("%d messages received under %d Syncs", n, syncs)
	if syncs > int64(n/2) {
		t.Errorf("%d Syncs for %d messages: not batched", syncs, n)
	}
}
