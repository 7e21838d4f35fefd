package client_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sotto-im/sotto/client"
	"github.com/sotto-im/sotto/client/internal/testenv"
	"github.com/sotto-im/sotto/client/store/pebblestore"
)

// diskPartyVia creates an account on a disk store whose relay URL is
// relayURL (a sendTap in front of the test relay, or the relay itself).
// The store key is wrapped at a test work factor: Create would otherwise
// spend seconds in scrypt.
func diskPartyVia(t testing.TB, env *testenv.Env, relayURL string) *party {
	t.Helper()
	opts := options(env, nil)
	opts.Dir, opts.Passphrase, opts.RelayURL = t.TempDir(), []byte("correct horse"), relayURL
	opts.PebbleOptions = &pebblestore.Options{ScryptLogN: 10}
	c, err := client.Create(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return startParty(t, c)
}

// tappedPair starts alice and bob on disk stores, alice sending through a
// sendTap in front of the test relay.
func tappedPair(t *testing.T) (env *testenv.Env, tap *sendTap, alice, bob *party) {
	t.Helper()
	env = startEnv(t)
	tap = newSendTap(t, env.RelayURL)
	return env, tap, diskPartyVia(t, env, tap.URL()), diskPartyVia(t, env, env.RelayURL)
}

// burst sends n messages "<prefix> <i>" from p in a goroutine, as fast as
// Send returns; the returned channel yields the first error, if any, and is
// closed when all are sent.
func burst(p *party, conv client.ConversationID, prefix string, from, n int) <-chan error {
	return burstPadded(p, conv, prefix, from, n, 0)
}

// burstPadded is burst with pad bytes of filler after each message's
// number: messages of more than half an envelope never share one, so
// that each takes a send of its own (expectInOrder ignores the filler).
func burstPadded(p *party, conv client.ConversationID, prefix string, from, n, pad int) <-chan error {
	filler := ""
	if pad > 0 {
		filler = " " + strings.Repeat("~", pad-1)
	}
	errc := make(chan error, 1)
	go func() {
		defer close(errc)
		start := time.Now()
		defer func() { p.t.Logf("%s: %d Sends took %v", prefix, n, time.Since(start)) }()
		for i := from; i < from+n; i++ {
			if _, err := p.c.Send(context.Background(), conv, client.Text(fmt.Sprintf("%s %05d", prefix, i)+filler)); err != nil {
				errc <- err
				return
			}
		}
	}()
	return errc
}

// expectInOrder reads p's messages whose text starts with prefix and checks
// that they are exactly "<prefix> <from>" ... "<prefix> <to-1>", each once,
// in order. progress, if not nil, is told how many have arrived so far.
func expectInOrder(t testing.TB, p *party, prefix string, from, to int, progress func(int)) {
	t.Helper()
	timeout := time.NewTimer(90 * time.Second) // generous: CI machines run loaded
	defer timeout.Stop()
	for i := from; i < to; {
		select {
		case ev, ok := <-p.ev:
			if !ok {
				t.Fatalf("events closed after %d of %d messages", i-from, to-from)
			}
			m, isMsg := ev.(client.MessageEvent)
			if !isMsg || !strings.HasPrefix(m.Message.Text, prefix+" ") {
				continue
			}
			text, _, _ := strings.Cut(strings.TrimPrefix(m.Message.Text, prefix+" "), " ")
			if want := fmt.Sprintf("%05d", i); text != want {
				t.Fatalf("got %q, want %q (order or duplicate)", m.Message.Text, prefix+" "+want)
			}
			i++
			if progress != nil {
				progress(i - from)
			}
		case <-timeout.C:
			t.Fatalf("received %d of %d messages", i-from, to-from)
		}
	}
}

// expectNoMore checks that no further message with prefix arrives for a
// short while (a duplicate would come right after the last one).
func expectNoMore(t testing.TB, p *party, prefix string) {
	t.Helper()
	quiet := time.After(300 * time.Millisecond)
	for {
		select {
		case ev := <-p.ev:
			if m, ok := ev.(client.MessageEvent); ok && strings.HasPrefix(m.Message.Text, prefix+" ") {
				t.Fatalf("extra message %q", m.Message.Text)
			}
		case <-quiet:
			return
		}
	}
}

func TestSendBurstArrivesInOrderOnce(t *testing.T) {
	n := 2000
	if testing.Short() || raceEnabled {
		n = 500
	}
	_, tap, alice, bob := tappedPair(t)
	ab, ba := befriend(t, alice, bob)
	start := time.Now()
	errc := burstPadded(alice, ab, "burst", 0, n, 1200) // one frame each (TestBatchedSendsArriveInOrderOnce batches)
	expectInOrder(t, bob, "burst", 0, n, func(got int) {
		if got%500 == 0 {
			t.Logf("%d received after %v", got, time.Since(start))
		}
	})
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	expectNoMore(t, bob, "burst")
	hist, err := bob.c.History(context.Background(), ba, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != n {
		t.Fatalf("bob's history holds %d messages, want %d", len(hist), n)
	}
	sockets, frames, depth, _ := tap.check()
	if sockets == 0 || frames < n {
		t.Fatalf("send socket: %d sockets, %d frames for %d messages", sockets, frames, n)
	}
	if depth < 2 {
		t.Fatalf("sends were not pipelined (at most %d in flight)", depth)
	}
	t.Logf("%d sockets, %d frames, up to %d in flight, results %v", sockets, frames, depth, tap.statuses)
}

// The send socket cut after a number of frames, with messages each in a
// frame of its own ("alone": too long to share an envelope) and with
// messages batched: every message arrives, in order, once.
func TestSendSocketCutMidPipeline(t *testing.T) {
	for _, tc := range []struct {
		name       string
		pad, cutAt int
	}{{"alone", 1200, 100}, {"batched", 0, 3}} {
		t.Run(tc.name, func(t *testing.T) { testSendSocketCut(t, tc.pad, tc.cutAt) })
	}
}

func testSendSocketCut(t *testing.T, pad, cutAt int) {
	n := 400
	if testing.Short() || raceEnabled {
		n = 200
	}
	env := startEnv(t)
	tap := newSendTap(t, env.RelayURL)
	tap.cutAt = cutAt
	alice := diskPartyVia(t, env, tap.URL())
	bob := diskPartyVia(t, env, env.RelayURL)
	ab, _ := befriend(t, alice, bob)
	errc := burstPadded(alice, ab, "cut", 0, n, pad)
	expectInOrder(t, bob, "cut", 0, n, nil)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	expectNoMore(t, bob, "cut")
	if sockets, frames, _, _ := tap.check(); sockets < 2 || frames < cutAt {
		t.Fatalf("the socket was not cut and reopened: %d sockets, %d frames", sockets, frames)
	}
}

func TestSendRelayRestartMidPipeline(t *testing.T) {
	n := 400
	if raceEnabled {
		n = 100
	}
	env, tap, alice, bob := tappedPair(t)
	ab, _ := befriend(t, alice, bob)
	errc := burst(alice, ab, "restart", 0, n)
	var once sync.Once
	expectInOrder(t, bob, "restart", 0, n, func(got int) {
		if got == 50 {
			once.Do(func() {
				if err := env.StopRelay(); err != nil {
					t.Error(err)
				}
				time.Sleep(200 * time.Millisecond)
				if err := env.StartRelay(); err != nil {
					t.Error(err)
				}
			})
		}
	})
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	expectNoMore(t, bob, "restart")
	tap.check()
}

// A device added to the recipient's account while a pipeline is in flight:
// the relay refuses the rest of the pipeline with 409, the sender refreshes
// the device list and resends, and every message from then on reaches both
// devices, in order, once.
func TestSendConflictMidPipeline(t *testing.T) {
	const n, before = 200, 10
	env, tap, alice, bob := tappedPair(t)
	ab, _ := befriend(t, alice, bob)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	// Queue the whole burst while the socket is refused, so that it goes
	// out as full pipelines; hold the frame after the first `before`.
	// The messages are too long to share envelopes: one frame each.
	tap.mu.Lock()
	tap.refuse, tap.holdAt = true, before+1
	tap.mu.Unlock()
	if err := <-burstPadded(alice, ab, "conflict", 0, n, 1200); err != nil {
		t.Fatal(err)
	}
	tap.mu.Lock()
	tap.refuse = false
	tap.mu.Unlock()
	// A Send wakes the outbox from its backoff.
	if _, err := alice.c.Send(ctx, ab, client.Text("wake up")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-tap.held:
	case <-ctx.Done():
		t.Fatal("the pipeline never reached the held frame")
	}
	expectInOrder(t, bob, "conflict", 0, before, nil)

	// Bob links a second device while the rest of the pipeline waits.
	codes, linked, errc := startLink(ctx, t, env)
	var code string
	select {
	case code = <-codes:
	case err := <-errc:
		t.Fatal(err)
	}
	if _, err := bob.c.LinkDevice(ctx, code); err != nil {
		t.Fatal(err)
	}
	var bob2 *party
	select {
	case c := <-linked:
		bob2 = startParty(t, c)
	case err := <-errc:
		t.Fatal(err)
	}
	close(tap.release)

	expectInOrder(t, bob, "conflict", before, n, nil)
	expectInOrder(t, bob2, "conflict", before, n, nil)
	expectNoMore(t, bob, "conflict")
	expectNoMore(t, bob2, "conflict")
	if _, _, _, mid := tap.check(); mid == 0 {
		t.Fatal("no refusal came back while other sends were in flight")
	}
}

// Sends to a contact whose access key is unknown are identified: they go
// over HTTP, never over the anonymous socket, and stay in order with the
// sealed sends that follow once the contact's receipt brings its key.
func TestSendIdentifiedNeverOnAnonymousSocket(t *testing.T) {
	const n = 150
	_, tap, alice, bob := tappedPair(t)
	ctx := context.Background()
	inv := bob.c.Invite(false)
	inv.AccessKey = [32]byte{}
	cb, err := alice.c.AddContact(ctx, inv.String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.c.AddContact(ctx, alice.c.Invite(false).String()); err != nil {
		t.Fatal(err)
	}
	errc := burst(alice, cb.Conversation, "mixed", 0, n)
	expectInOrder(t, bob, "mixed", 0, n, nil)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	expectNoMore(t, bob, "mixed")
	_, frames, _, _ := tap.check()
	t.Logf("%d of %d messages went sealed over the socket", frames, n)
}
