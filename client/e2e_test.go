package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sotto-im/sotto/client"
	"github.com/sotto-im/sotto/client/internal/testenv"
	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/client/store/memstore"
	"github.com/sotto-im/sotto/client/store/pebblestore"
)

func startEnv(t testing.TB) *testenv.Env { return client.StartTestEnv(t) }

func options(env *testenv.Env, st store.Store) client.Options {
	o := client.Options{Store: st, KeyServerURL: env.KeyServerURL, RelayURL: env.RelayURL, TrustRoots: env.TrustRoots}
	if os.Getenv("SOTTO_TEST_LOG") != "" {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return o
}

// party is one client with an event recorder.
type party struct {
	t  testing.TB
	c  *client.Client
	ev chan client.Event
}

func newParty(t testing.TB, env *testenv.Env) *party {
	t.Helper()
	c, err := client.Create(context.Background(), options(env, memstore.New()))
	if err != nil {
		t.Fatal(err)
	}
	return startParty(t, c)
}

// startParty records the events of a running client and closes it at the
// end of the test.
func startParty(t testing.TB, c *client.Client) *party {
	p := &party{t: t, c: c, ev: make(chan client.Event, 1<<16)}
	go func() {
		for ev := range c.Events() {
			p.ev <- ev
		}
		close(p.ev)
	}()
	t.Cleanup(func() { c.Close() })
	return p
}

// waitFor returns the first event for which match returns true.
func (p *party) waitFor(what string, match func(client.Event) bool) client.Event {
	p.t.Helper()
	timeout := time.After(60 * time.Second) // generous: CI machines run loaded
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

func (p *party) waitMessage(text string) client.Message {
	p.t.Helper()
	ev := p.waitFor("message "+text, func(ev client.Event) bool {
		m, ok := ev.(client.MessageEvent)
		return ok && m.Message.Text == text
	})
	return ev.(client.MessageEvent).Message
}

// befriend makes a and b contacts of each other and returns the
// conversation IDs (a's view, b's view).
func befriend(t testing.TB, a, b *party) (client.ConversationID, client.ConversationID) {
	t.Helper()
	ctx := context.Background()
	cb, err := a.c.AddContact(ctx, b.c.Invite(false).String())
	if err != nil {
		t.Fatal(err)
	}
	ca, err := b.c.AddContact(ctx, a.c.Invite(true).String())
	if err != nil {
		t.Fatal(err)
	}
	return cb.Conversation, ca.Conversation
}

func TestTwoAccountsBothWays(t *testing.T) {
	env := startEnv(t)
	alice, bob := newParty(t, env), newParty(t, env)
	ab, ba := befriend(t, alice, bob)
	ctx := context.Background()
	for i := range 3 {
		if _, err := alice.c.Send(ctx, ab, client.Text(fmt.Sprintf("hello bob %d", i))); err != nil {
			t.Fatal(err)
		}
		m := bob.waitMessage(fmt.Sprintf("hello bob %d", i))
		if m.From != alice.c.Account() || m.Conversation != ba {
			t.Fatalf("bob got %+v", m)
		}
		if _, err := bob.c.Send(ctx, ba, client.Text(fmt.Sprintf("hello alice %d", i))); err != nil {
			t.Fatal(err)
		}
		alice.waitMessage(fmt.Sprintf("hello alice %d", i))
	}
	hist, err := bob.c.History(ctx, ba, time.Time{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 6 {
		t.Fatalf("bob's history has %d messages, want 6", len(hist))
	}
}

func TestReceiptsTypingReactionsEditsDeletes(t *testing.T) {
	env := startEnv(t)
	alice, bob := newParty(t, env), newParty(t, env)
	ab, ba := befriend(t, alice, bob)
	ctx := context.Background()
	id, err := alice.c.Send(ctx, ab, client.Text("how are you"))
	if err != nil {
		t.Fatal(err)
	}
	m := bob.waitMessage("how are you")
	// Delivery receipt: alice's copy moves to delivered.
	alice.waitFor("delivered", func(ev client.Event) bool {
		r, ok := ev.(client.ReceiptEvent)
		return ok && r.Status == client.StatusDelivered && len(r.IDs) == 1 && r.IDs[0] == id
	})
	if err := bob.c.MarkRead(ctx, ba, m.ID); err != nil {
		t.Fatal(err)
	}
	alice.waitFor("read", func(ev client.Event) bool {
		r, ok := ev.(client.ReceiptEvent)
		return ok && r.Status == client.StatusRead
	})
	if got, _ := alice.c.Message(ctx, ab, id); got.Status != client.StatusRead {
		t.Fatalf("status = %v, want read", got.Status)
	}
	// Typing (ephemeral).
	if err := bob.c.SetTyping(ctx, ba, true); err != nil {
		t.Fatal(err)
	}
	alice.waitFor("typing", func(ev client.Event) bool {
		ty, ok := ev.(client.TypingEvent)
		return ok && ty.Typing && ty.From == bob.c.Account() && ty.Conversation == ab
	})
	// Reaction.
	if err := bob.c.React(ctx, ba, m.ID, "👍"); err != nil {
		t.Fatal(err)
	}
	alice.waitFor("reaction", func(ev client.Event) bool {
		u, ok := ev.(client.UpdateEvent)
		return ok && u.Message.Reactions[bob.c.Account()] == "👍"
	})
	// Edit.
	if err := alice.c.Edit(ctx, ab, id, "how are you doing"); err != nil {
		t.Fatal(err)
	}
	bob.waitFor("edit", func(ev client.Event) bool {
		u, ok := ev.(client.UpdateEvent)
		return ok && u.Message.Text == "how are you doing" && u.Message.Edited
	})
	// Bob cannot edit alice's message.
	if err := bob.c.Edit(ctx, ba, m.ID, "forged"); err == nil {
		t.Fatal("bob edited alice's message")
	}
	// Delete for everyone.
	if err := alice.c.Delete(ctx, ab, id); err != nil {
		t.Fatal(err)
	}
	bob.waitFor("delete", func(ev client.Event) bool {
		u, ok := ev.(client.UpdateEvent)
		return ok && u.Message.Deleted && u.Message.Text == ""
	})
	got, err := bob.c.Message(ctx, ba, m.ID)
	if err != nil || !got.Deleted || got.Text != "" {
		t.Fatalf("bob's copy after delete: %+v, %v", got, err)
	}
}

func TestHistoryPagingSeekAndSearch(t *testing.T) {
	env := startEnv(t)
	alice, bob := newParty(t, env), newParty(t, env)
	ab, ba := befriend(t, alice, bob)
	ctx := context.Background()
	const n = 25
	var mid time.Time
	for i := range n {
		if _, err := alice.c.Send(ctx, ab, client.Text(fmt.Sprintf("message %02d", i))); err != nil {
			t.Fatal(err)
		}
		m := bob.waitMessage(fmt.Sprintf("message %02d", i))
		if i == 10 {
			mid = m.Sent
		}
		time.Sleep(2 * time.Millisecond) // distinct millisecond sent times
	}
	// Page backwards 10 at a time.
	var all []client.Message
	before := time.Time{}
	for {
		page, err := bob.c.History(ctx, ba, before, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		all = append(all, page...)
		before = page[len(page)-1].Sent
	}
	if len(all) != n {
		t.Fatalf("paged %d messages, want %d", len(all), n)
	}
	for i, m := range all {
		if want := fmt.Sprintf("message %02d", n-1-i); m.Text != want {
			t.Fatalf("page order: got %q at %d, want %q", m.Text, i, want)
		}
	}
	since, err := bob.c.HistorySince(ctx, ba, mid, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(since) != n-10 || since[len(since)-1].Text != "message 10" {
		t.Fatalf("seek by time: %d messages, oldest %q", len(since), since[len(since)-1].Text)
	}
	res, err := bob.c.Search(ctx, "MESSAGE 1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 10 { // 10..19
		t.Fatalf("search found %d, want 10", len(res))
	}
}

func TestSafetyNumbers(t *testing.T) {
	env := startEnv(t)
	alice, bob := newParty(t, env), newParty(t, env)
	befriend(t, alice, bob)
	ctx := context.Background()
	sa, err := alice.c.SafetyNumber(ctx, bob.c.Account())
	if err != nil {
		t.Fatal(err)
	}
	sb, err := bob.c.SafetyNumber(ctx, alice.c.Account())
	if err != nil {
		t.Fatal(err)
	}
	if sa.String() != sb.String() || len(sa.Digits()) != 60 {
		t.Fatalf("safety numbers differ: %s / %s", sa, sb)
	}
	if err := sb.VerifyScanned(sa.QRPayload()); err != nil {
		t.Fatal(err)
	}
	if err := alice.c.SetVerified(ctx, bob.c.Account(), true); err != nil {
		t.Fatal(err)
	}
	if ct, _ := alice.c.Contact(ctx, bob.c.Account()); !ct.Verified {
		t.Fatal("not verified")
	}
}

func newDiskParty(t testing.TB, env *testenv.Env, dir string, create bool) *party {
	t.Helper()
	opts := options(env, nil)
	opts.Dir, opts.Passphrase = dir, []byte("correct horse")

	open := client.Open
	if create {
		open = client.Create
	}
	c, err := open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return startParty(t, c)
}

// durable is a memstore that outlives the client: Close leaves the data
// for the next Open, as a directory would.
type durable struct{ store.Store }

func (durable) Close() error { return nil }

func newPartyWith(t testing.TB, env *testenv.Env, st store.Store, create bool) *party {
	t.Helper()
	open := client.Open
	if create {
		open = client.Create
	}
	c, err := open(context.Background(), options(env, st))
	if err != nil {
		t.Fatal(err)
	}
	return startParty(t, c)
}

func TestOfflineRecipientGetsAllInOrder(t *testing.T) {
	env := startEnv(t)
	bobStore := durable{memstore.New()}
	alice, bob := newParty(t, env), newPartyWith(t, env, bobStore, true)
	ab, _ := befriend(t, alice, bob)
	bobAccount := bob.c.Account()
	if err := bob.c.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const n = 1000
	var lastID client.MessageID
	for i := range n {
		id, err := alice.c.Send(ctx, ab, client.Text(fmt.Sprintf("offline %04d", i)))
		if err != nil {
			t.Fatal(err)
		}
		lastID = id
	}
	// Wait until the relay holds them all.
	alice.waitFor("last message sent", func(ev client.Event) bool {
		u, ok := ev.(client.UpdateEvent)
		return ok && u.Message.ID == lastID && u.Message.Status == client.StatusSent
	})
	bob = newPartyWith(t, env, bobStore, false)
	if bob.c.Account() != bobAccount {
		t.Fatal("reopened another account")
	}
	for i := range n {
		m := bob.waitFor("next message", func(ev client.Event) bool {
			_, ok := ev.(client.MessageEvent)
			return ok
		}).(client.MessageEvent).Message
		if want := fmt.Sprintf("offline %04d", i); m.Text != want {
			t.Fatalf("message %d: got %q, want %q", i, m.Text, want)
		}
	}
	hist, err := bob.c.History(ctx, directConv(t, bob, alice), time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != n {
		t.Fatalf("history holds %d, want %d (none twice)", len(hist), n)
	}
}

func directConv(t testing.TB, self, peer *party) client.ConversationID {
	ct, err := self.c.Contact(context.Background(), peer.c.Account())
	if err != nil {
		t.Fatal(err)
	}
	return ct.Conversation
}

func TestOneTimePreKeysExhausted(t *testing.T) {
	env := startEnv(t)
	bob := newParty(t, env)
	bobAddr := bob.c.Address()
	if err := env.DrainPreKeys(bobAddr); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// Three newcomers start sessions with no one-time prekey left.
	for i := range 3 {
		p := newParty(t, env)
		ct, err := p.c.AddContact(ctx, bob.c.Invite(false).String())
		if err != nil {
			t.Fatal(err)
		}
		text := fmt.Sprintf("no one-time prekeys %d", i)
		if _, err := p.c.Send(ctx, ct.Conversation, client.Text(text)); err != nil {
			t.Fatal(err)
		}
		bob.waitMessage(text)
	}
	// Bob refills.
	deadline := time.Now().Add(10 * time.Second)
	for env.OneTimePreKeys(bobAddr) < client.PreKeyRefillThreshold {
		if time.Now().After(deadline) {
			t.Fatalf("one-time prekeys not refilled: %d", env.OneTimePreKeys(bobAddr))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestEncryptedStore checks the default store through the client: a marker
// sent in messages is nowhere on disk (nor the contact's account ID), the
// passphrase can be changed, and a wrong one is a clear error. (Each
// passphrase operation runs scrypt at the full work factor, so this test
// does as few as it can.)
func TestEncryptedStore(t *testing.T) {
	env := startEnv(t)
	dir := t.TempDir()
	alice, bob := newParty(t, env), newDiskParty(t, env, dir, true)
	ab, ba := befriend(t, alice, bob)
	ctx := context.Background()
	const marker = "PLAINTEXT-MARKER-7c1e9a"
	if _, err := alice.c.Send(ctx, ab, client.Text(marker+" from alice")); err != nil {
		t.Fatal(err)
	}
	bob.waitMessage(marker + " from alice")
	if _, err := bob.c.Send(ctx, ba, client.Text(marker+" from bob")); err != nil {
		t.Fatal(err)
	}
	alice.waitMessage(marker + " from bob")
	// The marker is searchable through the client...
	if res, _ := bob.c.Search(ctx, marker, 0); len(res) != 2 {
		t.Fatalf("search found %d messages, want 2", len(res))
	}
	if raceEnabled {
		// The scans below need no concurrency, and each passphrase
		// operation costs tens of seconds under the race detector.
		bob.c.Close()
		scanDir(t, dir, []byte(marker))
		return
	}
	if err := bob.c.ChangePassphrase([]byte("correct horse"), []byte("battery staple")); err != nil {
		t.Fatal(err)
	}
	bobID := bob.c.Account()
	bob.c.Close()
	// ...and nowhere on disk, nor the contact's account ID.
	aliceID := alice.c.Account()
	scanDir(t, dir, []byte(marker))
	scanDir(t, dir, []byte(aliceID.String()))
	scanDir(t, dir, aliceID[:])

	opts := options(env, nil)
	opts.Dir, opts.Passphrase = dir, []byte("correct horse")
	if _, err := client.Open(ctx, opts); !errors.Is(err, pebblestore.ErrWrongPassphrase) {
		t.Fatalf("old passphrase: err = %v, want ErrWrongPassphrase", err)
	}
	opts.Passphrase = []byte("battery staple")
	c, err := client.Open(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Account() != bobID {
		t.Fatal("reopened another account")
	}
	if h, err := c.History(ctx, ba, time.Time{}, 0); err != nil || len(h) != 2 {
		t.Fatalf("history after reopening: %d messages, %v", len(h), err)
	}
}

func scanDir(t *testing.T, dir string, needle []byte) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		n++
		if bytes.Contains(b, needle) {
			t.Errorf("%s contains %q", path, needle)
		}
		return nil
	})
	if err != nil || n == 0 {
		t.Fatalf("scanned %d files: %v", n, err)
	}
}

func TestRelayStoppedMidConversation(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the relay to be down ten seconds")
	}
	env := startEnv(t)
	alice, bob := newParty(t, env), newParty(t, env)
	ab, _ := befriend(t, alice, bob)
	ctx := context.Background()
	send := func(from, to int) {
		for i := from; i < to; i++ {
			if _, err := alice.c.Send(ctx, ab, client.Text(fmt.Sprintf("m%03d", i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	send(0, 20)
	bob.waitMessage("m019")
	if err := env.StopRelay(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	send(20, 60) // queued in alice's outbox while the relay is down
	time.Sleep(10*time.Second - time.Since(stopped))
	if err := env.StartRelay(); err != nil {
		t.Fatal(err)
	}
	send(60, 80)
	bob.waitMessage("m079")
	hist, err := bob.c.History(ctx, directConv(t, bob, alice), time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, m := range hist {
		seen[m.Text]++
	}
	for i := range 80 {
		if n := seen[fmt.Sprintf("m%03d", i)]; n != 1 {
			t.Errorf("m%03d stored %d times", i, n)
		}
	}
}

func TestDisappearingMessages(t *testing.T) {
	env := startEnv(t)
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	mk := func() *party {
		opts := options(env, memstore.New())
		opts.Now = clock
		c, err := client.Create(context.Background(), opts)
		if err != nil {
			t.Fatal(err)
		}
		return startParty(t, c)
	}
	alice, bob := mk(), mk()
	ab, ba := befriend(t, alice, bob)
	ctx := context.Background()
	if err := alice.c.SetTimer(ctx, ab, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.c.Send(ctx, ab, client.Text("self-destruct")); err != nil {
		t.Fatal(err)
	}
	m := bob.waitMessage("self-destruct")
	if m.ExpiresAt.IsZero() {
		t.Fatal("no expiry on the received message")
	}
	if h, _ := bob.c.History(ctx, ba, time.Time{}, 0); len(h) != 1 {
		t.Fatalf("before expiry: %d messages", len(h))
	}
	now.Add(int64(2 * time.Minute))
	for _, p := range []struct {
		c    *client.Client
		conv client.ConversationID
	}{{alice.c, ab}, {bob.c, ba}} {
		if h, _ := p.c.History(ctx, p.conv, time.Time{}, 0); len(h) != 0 {
			t.Fatalf("after expiry: %d messages", len(h))
		}
		if n, err := p.c.SweepForTest(); err != nil || n != 1 {
			t.Fatalf("sweep deleted %d, %v", n, err)
		}
		if res, _ := p.c.Search(ctx, "self-destruct", 0); len(res) != 0 {
			t.Fatal("a disappeared message is still stored")
		}
	}
}
