package client_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sotto-im/sotto/client"
	"github.com/sotto-im/sotto/client/internal/testenv"
	"github.com/sotto-im/sotto/client/store/memstore"
	"github.com/sotto-im/sotto/crypto"
)

// linkParty links a new device to p's account and returns it as a party.
func linkParty(t *testing.T, env *testenv.Env, p *party) *party {
	t.Helper()
	return linkPartyBudget(t, env, p, 0)
}

// linkPartyBudget is linkParty with a bound on the provisioning payload's
// groups and contacts (0: the default).
func linkPartyBudget(t *testing.T, env *testenv.Env, p *party, budget int) *party {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	codes := make(chan string, 1)
	type result struct {
		c   *client.Client
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := client.Link(ctx, options(env, memstore.New()), func(code client.LinkCode) { codes <- code.String() })
		done <- result{c, err}
	}()
	link := p.c.LinkDevice
	if budget > 0 {
		link = func(ctx context.Context, code string) (crypto.DeviceID, error) {
			return p.c.LinkDeviceWithBudgetForTest(ctx, code, budget)
		}
	}
	if _, err := link(ctx, <-codes); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	q := &party{t: t, c: r.c, ev: make(chan client.Event, 1<<12)}
	go func() {
		for ev := range r.c.Events() {
			q.ev <- ev
		}
		close(q.ev)
	}()
	t.Cleanup(func() { r.c.Close() })
	return q
}

func waitGroup(p *party, id client.GroupID, match func(client.Group) bool) client.Group {
	p.t.Helper()
	ev := p.waitFor("group event", func(ev client.Event) bool {
		ge, ok := ev.(client.GroupEvent)
		return ok && ge.Group.ID == id && match(ge.Group)
	})
	return ev.(client.GroupEvent).Group
}

func findGroup(t *testing.T, c *client.Client, id client.GroupID) client.Group {
	t.Helper()
	gs, err := c.Groups(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gs {
		if g.ID == id {
			return g
		}
	}
	t.Fatalf("group %x unknown on %v (groups: %d)", id[:4], c.Address(), len(gs))
	return client.Group{}
}

// TestGroupsOnEveryDevice: groups created before and after linking a second
// device are known on it, what members send reaches both devices, and what
// the second device sends reaches the members and the first device
// (RELIABILITY.md, Found 2).
func TestGroupsOnEveryDevice(t *testing.T) {
	env := startEnv(t)
	ctx := context.Background()
	alice, bob, carol := newParty(t, env), newParty(t, env), newParty(t, env)
	befriend(t, alice, bob)
	befriend(t, alice, carol)
	if err := alice.c.SetContactName(ctx, bob.c.Account(), "Bob"); err != nil {
		t.Fatal(err)
	}
	members := []crypto.AccountID{bob.c.Account(), carol.c.Account()}

	before, err := alice.c.CreateGroup(ctx, "before", members)
	if err != nil {
		t.Fatal(err)
	}
	waitGroup(bob, before.ID, func(g client.Group) bool { return len(g.Members) == 3 })
	waitGroup(carol, before.ID, func(g client.Group) bool { return len(g.Members) == 3 })

	alice2 := linkParty(t, env, alice)

	// The group created before the link, and the contacts, are on the new device.
	g := findGroup(t, alice2.c, before.ID)
	if g.Name != "before" || g.Revision != before.Revision || !slices.Equal(g.Members, before.Members) {
		t.Fatalf("linked device holds %+v, want %+v", g, before)
	}
	if ct, err := alice2.c.Contact(ctx, bob.c.Account()); err != nil || ct.Name != "Bob" {
		t.Fatalf("contact on the linked device: %+v, %v", ct, err)
	}

	// A group created after the link reaches the new device, roles included.
	after, err := alice.c.CreateGroup(ctx, "after", members)
	if err != nil {
		t.Fatal(err)
	}
	g = waitGroup(alice2, after.ID, func(g client.Group) bool { return len(g.Members) == 3 })
	if g.Name != "after" || !slices.Equal(g.Members, after.Members) {
		t.Fatalf("linked device got %+v, want %+v", g, after)
	}
	for _, m := range g.Members {
		if m.Admin != (m.Account == alice.c.Account()) {
			t.Fatalf("roles on the linked device: %+v", g.Members)
		}
	}
	waitGroup(bob, after.ID, func(g client.Group) bool { return len(g.Members) == 3 })
	waitGroup(carol, after.ID, func(g client.Group) bool { return len(g.Members) == 3 })

	// A member writes: both of Alice's devices show it, with the sending device.
	if _, err := bob.c.Send(ctx, after.Conversation, client.Text("bob to after")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*party{alice, alice2, carol} {
		m := p.waitMessage("bob to after")
		if m.Conversation != after.Conversation || m.From != bob.c.Account() || m.FromDevice != bob.c.Device() {
			t.Fatalf("%v got %+v", p.c.Address(), m)
		}
	}
	if _, err := carol.c.Send(ctx, before.Conversation, client.Text("carol to before")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*party{alice, alice2, bob} {
		if m := p.waitMessage("carol to before"); m.Conversation != before.Conversation {
			t.Fatalf("%v got %+v", p.c.Address(), m)
		}
	}

	// The second device writes: the members get it, the first device too
	// (a transcript), each naming the second device.
	if _, err := alice2.c.Send(ctx, after.Conversation, client.Text("from alice's second device")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*party{bob, carol} {
		m := p.waitMessage("from alice's second device")
		if m.Conversation != after.Conversation || m.From != alice.c.Account() || m.FromDevice != alice2.c.Device() {
			t.Fatalf("%v got %+v", p.c.Address(), m)
		}
	}
	if m := alice.waitMessage("from alice's second device"); !m.Outgoing || m.FromDevice != alice2.c.Device() {
		t.Fatalf("first device got %+v", m)
	}

	// A change on one device reaches the other: rename on the first, a
	// member removed on the second (it is an admin too: the same account).
	if err := alice.c.Rename(ctx, after.ID, "renamed"); err != nil {
		t.Fatal(err)
	}
	waitGroup(alice2, after.ID, func(g client.Group) bool { return g.Name == "renamed" })
	if err := alice2.c.RemoveMembers(ctx, after.ID, carol.c.Account()); err != nil {
		t.Fatal(err)
	}
	waitGroup(alice, after.ID, func(g client.Group) bool { return len(g.Members) == 2 && g.Name == "renamed" })
	waitGroup(bob, after.ID, func(g client.Group) bool { return len(g.Members) == 2 })
	if _, err := bob.c.Send(ctx, after.Conversation, client.Text("after carol left")); err != nil {
		t.Fatal(err)
	}
	alice.waitMessage("after carol left")
	alice2.waitMessage("after carol left")

	// A group with no other member still reaches the other device.
	solo, err := alice2.c.CreateGroup(ctx, "notes", nil)
	if err != nil {
		t.Fatal(err)
	}
	waitGroup(alice, solo.ID, func(g client.Group) bool { return g.Name == "notes" && len(g.Members) == 1 })
}

// TestProvisioningOverflow: groups that do not fit the provisioning payload
// reach the new device as group updates, and contacts that do not fit are
// left for later.
func TestProvisioningOverflow(t *testing.T) {
	env := startEnv(t)
	ctx := context.Background()
	alice, bob := newParty(t, env), newParty(t, env)
	befriend(t, alice, bob)
	var groups []client.Group
	for _, name := range []string{"g1", "g2", "g3"} {
		g, err := alice.c.CreateGroup(ctx, name, []crypto.AccountID{bob.c.Account()})
		if err != nil {
			t.Fatal(err)
		}
		waitGroup(bob, g.ID, func(client.Group) bool { return true })
		groups = append(groups, g)
	}
	// No room beyond the payload's fixed part: every group and contact is
	// left out.
	alice2 := linkPartyBudget(t, env, alice, 1)
	if gs, err := alice2.c.Groups(ctx); err != nil || len(gs) != 0 {
		t.Fatalf("groups in the payload: %d, %v, want none", len(gs), err)
	}
	if cs, err := alice2.c.Contacts(ctx); err != nil || len(cs) != 0 {
		t.Fatalf("contacts in the payload: %d, %v, want none", len(cs), err)
	}
	// They arrive in the order of the sender's store, not of creation.
	pending := map[client.GroupID]string{}
	for _, g := range groups {
		pending[g.ID] = g.Name
	}
	for len(pending) > 0 {
		alice2.waitFor("the groups left out", func(ev client.Event) bool {
			ge, ok := ev.(client.GroupEvent)
			if ok && pending[ge.Group.ID] == ge.Group.Name && len(ge.Group.Members) == 2 {
				delete(pending, ge.Group.ID)
				return true
			}
			return false
		})
	}
	// Bob ignores the repeated announcements (same revision): no new event.
	if _, err := bob.c.Send(ctx, groups[0].Conversation, client.Text("to g1")); err != nil {
		t.Fatal(err)
	}
	alice.waitMessage("to g1")
	alice2.waitMessage("to g1")
	if g := findGroup(t, bob.c, groups[0].ID); g.Revision != groups[0].Revision {
		t.Fatalf("bob's group revision moved: %d, want %d", g.Revision, groups[0].Revision)
	}
}

// TestGroupResendAfterLostSenderKey: a member that lost a sender's key asks
// for it; the sender sends it again with the message, and later messages
// decrypt as usual.
func TestGroupResendAfterLostSenderKey(t *testing.T) {
	env := startEnv(t)
	ctx := context.Background()
	alice, bob, carol := newParty(t, env), newParty(t, env), newParty(t, env)
	g, err := alice.c.CreateGroup(ctx, "g", []crypto.AccountID{bob.c.Account(), carol.c.Account()})
	if err != nil {
		t.Fatal(err)
	}
	waitGroup(bob, g.ID, func(client.Group) bool { return true })
	waitGroup(carol, g.ID, func(client.Group) bool { return true })
	if _, err := alice.c.Send(ctx, g.Conversation, client.Text("one")); err != nil {
		t.Fatal(err)
	}
	bob.waitMessage("one")
	carol.waitMessage("one")

	if err := bob.c.DeleteSenderKeyForTest(g.ID, alice.c.Address()); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.c.ReceiverForTest(g.ID, alice.c.Address()); err == nil {
		t.Fatal("sender key still stored")
	}
	two, err := alice.c.Send(ctx, g.Conversation, client.Text("two"))
	if err != nil {
		t.Fatal(err)
	}
	carol.waitMessage("two")
	if m := bob.waitMessage("two"); m.ID != two || m.Conversation != g.Conversation || m.From != alice.c.Account() {
		t.Fatalf("resent message: %+v", m)
	}
	if _, err := bob.c.ReceiverForTest(g.ID, alice.c.Address()); err != nil {
		t.Fatalf("sender key not restored: %v", err)
	}
	if _, err := alice.c.Send(ctx, g.Conversation, client.Text("three")); err != nil {
		t.Fatal(err)
	}
	bob.waitMessage("three")
	carol.waitMessage("three")
	hist, err := bob.c.History(ctx, g.Conversation, time.Time{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, m := range hist {
		texts = append(texts, m.Text)
	}
	if !slices.Equal(texts, []string{"three", "two", "one"}) {
		t.Fatalf("bob's history: %q", texts)
	}
	// The resend went to Bob only: Carol holds each message once.
	if hist, err := carol.c.History(ctx, g.Conversation, time.Time{}, 10); err != nil || len(hist) != 3 {
		t.Fatalf("carol's history: %d messages, %v", len(hist), err)
	}
}

// TestFromDevice: messages name the device that sent them, on the
// recipient and in the sender's own history.
func TestFromDevice(t *testing.T) {
	env := startEnv(t)
	ctx := context.Background()
	alice, bob := newParty(t, env), newParty(t, env)
	ab, _ := befriend(t, alice, bob)
	id, err := alice.c.Send(ctx, ab, client.Text("which device"))
	if err != nil {
		t.Fatal(err)
	}
	if m := bob.waitMessage("which device"); m.FromDevice != alice.c.Device() || m.FromDevice == 0 {
		t.Fatalf("bob got FromDevice %d, want %d", m.FromDevice, alice.c.Device())
	}
	if m, err := alice.c.Message(ctx, ab, id); err != nil || m.FromDevice != alice.c.Device() {
		t.Fatalf("own message: %+v, %v", m, err)
	}
}

// TestDirectMessageTooLarge: 1:1 content is bounded by what one relay
// header carries; Send says so with ErrTooLarge.
func TestDirectMessageTooLarge(t *testing.T) {
	env := startEnv(t)
	ctx := context.Background()
	alice, bob := newParty(t, env), newParty(t, env)
	ab, _ := befriend(t, alice, bob)
	if _, err := alice.c.Send(ctx, ab, client.Text(strings.Repeat("x", 4000))); !errors.Is(err, client.ErrTooLarge) {
		t.Fatalf("4000-byte text: %v, want ErrTooLarge", err)
	}
	if _, err := alice.c.Send(ctx, ab, client.Text(strings.Repeat("y", 1800))); err != nil {
		t.Fatal(err)
	}
	bob.waitMessage(strings.Repeat("y", 1800))
}

// TestLargestDirectMessage: on an account with a second device, the
// largest text Send accepts reaches the contact and the other device (its
// transcript fits too), and a text it refuses leaves nothing behind.
func TestLargestDirectMessage(t *testing.T) {
	env := startEnv(t)
	ctx := context.Background()
	alice, bob := newParty(t, env), newParty(t, env)
	ab, _ := befriend(t, alice, bob)
	alice2 := linkParty(t, env, alice)
	n := 2048
	for ; n > 0; n-- {
		_, err := alice.c.Send(ctx, ab, client.Text(strings.Repeat("z", n)))
		if err == nil {
			break
		}
		if !errors.Is(err, client.ErrTooLarge) {
			t.Fatal(err)
		}
	}
	t.Logf("largest 1:1 text with a transcript: %d bytes", n)
	if n < 1800 {
		t.Fatalf("largest text is %d bytes", n)
	}
	big := strings.Repeat("z", n)
	bob.waitMessage(big)
	alice2.waitMessage(big)
	if _, err := alice.c.Send(ctx, ab, client.Text("after the largest")); err != nil {
		t.Fatal(err)
	}
	bob.waitMessage("after the largest")
	alice2.waitMessage("after the largest")
	hist, err := alice.c.History(ctx, ab, time.Time{}, 100)
	if err != nil || len(hist) != 2 {
		t.Fatalf("alice's history holds %d messages (%v), want 2: refused sends must leave nothing", len(hist), err)
	}
}
