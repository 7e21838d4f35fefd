package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/sotto-im/sotto/client"
	"github.com/sotto-im/sotto/client/internal/testenv"
	"github.com/sotto-im/sotto/client/store/memstore"
	"github.com/sotto-im/sotto/keyserver"
)

// startLink runs client.Link for a new device on a memory store in a
// goroutine: the device's code comes on codes (checked to parse), then
// the linked client on linked or Link's error on errc.
func startLink(ctx context.Context, t *testing.T, env *testenv.Env) (codes <-chan string, linked <-chan *client.Client, errc <-chan error) {
	cc, lc, ec := make(chan string, 1), make(chan *client.Client, 1), make(chan error, 1)
	go func() {
		c, err := client.Link(ctx, options(env, memstore.New()), func(code client.LinkCode) {
			if _, err := client.ParseLinkCode(code.String()); err != nil {
				t.Error(err)
			}
			cc <- code.String()
		})
		if err != nil {
			ec <- err
			return
		}
		lc <- c
	}()
	return cc, lc, ec
}

func TestLinkedDeviceSeesEveryMessage(t *testing.T) {
	env := startEnv(t)
	alice, bob := newParty(t, env), newParty(t, env)
	ab, ba := befriend(t, alice, bob)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	codes, linked, errc := startLink(ctx, t, env)
	dev, err := alice.c.LinkDevice(ctx, <-codes)
	if err != nil {
		t.Fatal(err)
	}
	var alice2 *party
	select {
	case c := <-linked:
		alice2 = &party{t: t, c: c, ev: make(chan client.Event, 1<<12)}
		go func() {
			for ev := range c.Events() {
				alice2.ev <- ev
			}
			close(alice2.ev)
		}()
		t.Cleanup(func() { c.Close() })
	case err := <-errc:
		t.Fatal(err)
	}
	if alice2.c.Account() != alice.c.Account() || alice2.c.Device() != dev {
		t.Fatalf("linked device is %v, want %v.%d", alice2.c.Address(), alice.c.Account(), dev)
	}
	devs, err := alice.c.Devices(ctx)
	if err != nil || len(devs) != 2 {
		t.Fatalf("devices: %v, %v", devs, err)
	}

	// Bob's message reaches both of Alice's devices (his client learns of
	// the new device from the relay's 409 and retries).
	if _, err := bob.c.Send(ctx, ba, client.Text("to both")); err != nil {
		t.Fatal(err)
	}
	alice.waitMessage("to both")
	alice2.waitMessage("to both")
	bob.waitFor("new device warning", func(ev client.Event) bool {
		s, ok := ev.(client.SafetyNumberEvent)
		return ok && s.Contact == alice.c.Account() && len(s.Added) == 1 && s.Added[0] == dev
	})

	// What Alice sends from one device appears on the other.
	if _, err := alice.c.Send(ctx, ab, client.Text("from the first device")); err != nil {
		t.Fatal(err)
	}
	bob.waitMessage("from the first device")
	if m := alice2.waitMessage("from the first device"); !m.Outgoing {
		t.Fatal("transcript not marked outgoing")
	}
	if _, err := alice2.c.Send(ctx, ab, client.Text("from the linked device")); err != nil {
		t.Fatal(err)
	}
	bob.waitMessage("from the linked device")
	if m := alice.waitMessage("from the linked device"); !m.Outgoing {
		t.Fatal("transcript not marked outgoing")
	}

	// Removing the device: Bob's next message goes to the first device only.
	if err := alice.c.RemoveDevice(ctx, dev); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.c.Send(ctx, ba, client.Text("after removal")); err != nil {
		t.Fatal(err)
	}
	alice.waitMessage("after removal")
}

// TestLinkWaitsForASlowScan: a new device waits for its link code to be
// scanned for longer than the key server's burst of unauthenticated
// requests lasts under its production limits (20, then 5 a second per
// client address: at the 10 polls a second the client used to make, 4 s),
// then links and logs in. It failed with 429 before (RELIABILITY.md,
// Found 10).
func TestLinkWaitsForASlowScan(t *testing.T) {
	if testing.Short() {
		t.Skip("waits 6 s for a person to scan")
	}
	env, err := testenv.NewWithLimits(keyserver.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	alice := newParty(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	codes, linked, errc := startLink(ctx, t, env)
	code := <-codes
	select {
	case <-time.After(6 * time.Second): // the person finds the other device
	case err := <-errc:
		t.Fatalf("the new device gave up waiting: %v", err)
	}
	if _, err := alice.c.LinkDevice(ctx, code); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-linked:
		c.Close()
	case err := <-errc:
		t.Fatalf("link: %v", err)
	}
}
