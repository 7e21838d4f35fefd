package client_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sotto-im/sotto/client"
	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/client/store/memstore"
	"github.com/sotto-im/sotto/crypto"
)

// queueWhileRefused sends n messages "<prefix> <i>" (with pad bytes of
// filler, see burstPadded) from alice while her send socket is refused
// (tap), so that they wait in the outbox together, then lets the socket
// through and wakes the outbox.
func queueWhileRefused(t *testing.T, tap *sendTap, alice *party, ab client.ConversationID, prefix string, n, pad int) {
	t.Helper()
	tap.mu.Lock()
	tap.refuse = true
	tap.mu.Unlock()
	if err := <-burstPadded(alice, ab, prefix, 0, n, pad); err != nil {
		t.Fatal(err)
	}
	tap.mu.Lock()
	tap.refuse = false
	tap.mu.Unlock()
	// A Send wakes the outbox from its backoff.
	if _, err := alice.c.Send(context.Background(), ab, client.Text("wake up")); err != nil {
		t.Fatal(err)
	}
}

// Messages waiting together in the outbox travel in shared envelopes
// (batches): they arrive in order, once each, in the recipient's history,
// with far fewer relay sends than messages, and the sender's statuses move
// on for each of them.
func TestBatchedSendsArriveInOrderOnce(t *testing.T) {
	const n = 300
	_, tap, alice, bob := tappedPair(t)
	ab, ba := befriend(t, alice, bob)
	queueWhileRefused(t, tap, alice, ab, "batched", n, 0)
	expectInOrder(t, bob, "batched", 0, n, nil)
	expectNoMore(t, bob, "batched")

	ctx := context.Background()
	hist, err := bob.c.History(ctx, ba, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != n+1 { // and "wake up"
		t.Fatalf("bob's history holds %d messages, want %d", len(hist), n+1)
	}
	_, frames, _, _ := tap.check()
	if frames > n/4 {
		t.Fatalf("%d relay sends for %d messages: not batched", frames, n)
	}
	t.Logf("%d messages in %d relay sends", n+1, frames)

	// Every message reaches Delivered at the sender (bob's receipts name
	// each member's ID).
	deadline := time.Now().Add(60 * time.Second)
	for {
		mine, err := alice.c.History(ctx, ab, time.Time{}, 0)
		if err != nil {
			t.Fatal(err)
		}
		behind := 0
		for _, m := range mine {
			if m.Status < client.StatusDelivered {
				behind++
			}
		}
		if behind == 0 && len(mine) == n+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of alice's %d messages not delivered", behind, len(mine))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Envelopes the recipient cannot decrypt (it lost its session with the
// sender, as a device restored from an export has) are asked for again by
// their relay IDs, a batch's included, and the sender sends each of their
// messages again: none is lost, none shows twice (RELIABILITY.md, Found
// 9). Resent messages arrive after the envelopes that decrypted; the
// history orders them by their sent times.
func TestResendAfterLostSession(t *testing.T) {
	// "alone": messages too long to share an envelope, each resent by
	// its own request.
	for _, tc := range []struct {
		name string
		pad  int
	}{{"batched", 0}, {"alone", 1200}} {
		t.Run(tc.name, func(t *testing.T) { testResendAfterLostSession(t, tc.pad) })
	}
}

func testResendAfterLostSession(t *testing.T, pad int) {
	const n = 60
	_, tap, alice, bob := tappedPair(t)
	ab, ba := befriend(t, alice, bob)
	ctx := context.Background()
	if _, err := alice.c.Send(ctx, ab, client.Text("before")); err != nil {
		t.Fatal(err)
	}
	bob.waitMessage("before")

	bob.c.DropSessionForTest(crypto.Address{Account: alice.c.Account(), Device: alice.c.Address().Device})
	queueWhileRefused(t, tap, alice, ab, "lost", n, pad)
	expectEachOnce(t, bob, "lost", n)
	expectNoMore(t, bob, "lost")
	hist, err := bob.c.History(ctx, ba, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[client.MessageID]bool{}
	for _, m := range hist {
		if seen[m.ID] {
			t.Fatalf("message %q twice in bob's history", m.Text)
		}
		seen[m.ID] = true
	}
	if len(hist) != n+2 { // and "before", "wake up"
		t.Fatalf("bob's history holds %d messages, want %d", len(hist), n+2)
	}
	// (Whether the first attempt was batched is TestBatchedSendsArriveInOrderOnce's
	// to check: here the resends, each alone, blur the count of relay sends.)
	tap.check()
}

// expectEachOnce reads p's messages whose text starts with prefix until
// "<prefix> 0" ... "<prefix> <n-1>" have all arrived, in any order, and
// fails on a duplicate.
func expectEachOnce(t *testing.T, p *party, prefix string, n int) {
	t.Helper()
	got := map[string]bool{}
	timeout := time.NewTimer(90 * time.Second)
	defer timeout.Stop()
	for len(got) < n {
		select {
		case ev, ok := <-p.ev:
			if !ok {
				t.Fatalf("events closed after %d of %d messages", len(got), n)
			}
			m, isMsg := ev.(client.MessageEvent)
			if !isMsg || !strings.HasPrefix(m.Message.Text, prefix+" ") {
				continue
			}
			text, _, _ := strings.Cut(m.Message.Text, " ~") // the filler
			if got[text] {
				t.Fatalf("%q twice", text)
			}
			got[text] = true
		case <-timeout.C:
			t.Fatalf("received %d of %d messages", len(got), n)
		}
	}
	for i := range n {
		if want := fmt.Sprintf("%s %05d", prefix, i); !got[want] {
			t.Fatalf("%q missing", want)
		}
	}
}

// slowSentStore delays, once armed, the second write of a message first
// written after arming (the write that marks it sent, in finalizeBatch):
// the window in which the recipient may already ask for the envelope
// again while the history does not yet record which envelope carried it.
type slowSentStore struct {
	store.Store
	armed atomic.Bool
	mu    sync.Mutex
	puts  map[[16]byte]int
	once  sync.Once
}

func (s *slowSentStore) PutMessage(ctx context.Context, m store.MessageRecord) error {
	if s.armed.Load() {
		s.mu.Lock()
		s.puts[m.ID]++
		second := s.puts[m.ID] == 2
		s.mu.Unlock()
		if second {
			s.once.Do(func() { time.Sleep(1500 * time.Millisecond) })
		}
	}
	return s.Store.PutMessage(ctx, m)
}

// A resend request for a batch envelope that arrives before the sender has
// recorded the envelope in its history (finalizeBatch runs after the
// relay's answer, and the recipient may be faster) is still answered: the
// sender remembers the envelopes it built lately. CI lost the second batch
// of TestResendAfterLostSession this way once.
func TestBatchResendBeforeFinalize(t *testing.T) {
	const n = 60
	env := startEnv(t)
	tap := newSendTap(t, env.RelayURL)
	slow := &slowSentStore{Store: memstore.New(), puts: map[[16]byte]int{}}
	opts := options(env, slow)
	opts.RelayURL = tap.URL()
	c, err := client.Create(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	alice := startParty(t, c)
	bob := newParty(t, env)
	ab, _ := befriend(t, alice, bob)
	if _, err := alice.c.Send(context.Background(), ab, client.Text("before")); err != nil {
		t.Fatal(err)
	}
	bob.waitMessage("before")
	bob.c.DropSessionForTest(crypto.Address{Account: alice.c.Account(), Device: alice.c.Address().Device})
	slow.armed.Store(true)
	queueWhileRefused(t, tap, alice, ab, "early", n, 0)
	expectEachOnce(t, bob, "early", n)
	expectNoMore(t, bob, "early")
}
