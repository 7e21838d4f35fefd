package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sotto-im/sotto/client"
	"github.com/sotto-im/sotto/crypto"
)

func TestGroupOfFive(t *testing.T) {
	env := startEnv(t)
	ctx := context.Background()
	var ps []*party
	for range 5 {
		ps = append(ps, newParty(t, env))
	}
	admin, removed := ps[0], ps[4]
	var members []crypto.AccountID
	for _, p := range ps[1:] {
		members = append(members, p.c.Account())
	}
	g, err := admin.c.CreateGroup(ctx, "five", members)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps[1:] {
		p.waitFor("group", func(ev client.Event) bool {
			ge, ok := ev.(client.GroupEvent)
			return ok && ge.Group.ID == g.ID && len(ge.Group.Members) == 5
		})
	}
	if _, err := admin.c.Send(ctx, g.Conversation, client.Text("hello group")); err != nil {
		t.Fatal(err)
	}
	for _, p := range ps[1:] {
		if m := p.waitMessage("hello group"); m.Conversation != g.Conversation || m.From != admin.c.Account() {
			t.Fatalf("got %+v", m)
		}
	}
	// What the member about to be removed holds of the admin's sender key.
	old, err := removed.c.ReceiverForTest(g.ID, admin.c.Address())
	if err != nil {
		t.Fatalf("receiver before removal: %v", err)
	}
	// A member who is not an admin writes to the group, but cannot change it.
	if _, err := ps[1].c.Send(ctx, g.Conversation, client.Text("hi from a member")); err != nil {
		t.Fatal(err)
	}
	for _, p := range append([]*party{admin}, ps[2:]...) {
		p.waitMessage("hi from a member")
	}
	if err := ps[1].c.AddMembers(ctx, g.ID, admin.c.Account()); !errors.Is(err, client.ErrNotAdmin) {
		t.Fatalf("member changed the group: %v", err)
	}
	// The admin renames the group and removes a member.
	if err := admin.c.Rename(ctx, g.ID, "four"); err != nil {
		t.Fatal(err)
	}
	if err := admin.c.RemoveMembers(ctx, g.ID, removed.c.Account()); err != nil {
		t.Fatal(err)
	}
	removed.waitFor("removal", func(ev client.Event) bool {
		ge, ok := ev.(client.GroupEvent)
		return ok && len(ge.Group.Members) == 4
	})
	for _, p := range ps[1:4] {
		p.waitFor("removal", func(ev client.Event) bool {
			ge, ok := ev.(client.GroupEvent)
			return ok && len(ge.Group.Members) == 4 && ge.Group.Name == "four"
		})
	}
	if _, err := admin.c.Send(ctx, g.Conversation, client.Text("after removal")); err != nil {
		t.Fatal(err)
	}
	if _, err := ps[2].c.Send(ctx, g.Conversation, client.Text("member after removal")); err != nil {
		t.Fatal(err)
	}
	for _, p := range ps[1:4] {
		p.waitMessage("after removal")
	}
	admin.waitMessage("member after removal")
	// The removed member received nothing more...
	time.Sleep(200 * time.Millisecond)
	for len(removed.ev) > 0 {
		if m, ok := (<-removed.ev).(client.MessageEvent); ok && m.Message.Conversation == g.Conversation {
			t.Fatalf("removed member received %q", m.Message.Text)
		}
	}
	// ...and cannot decrypt what the admin sends now: the admin's sender
	// key was rotated, and the removed member holds only the old one.
	sk, err := admin.c.OwnSenderKeyForTest(g.ID)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := sk.Encrypt(crypto.Pad([]byte("secret after removal")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Decrypt(msg); err == nil {
		t.Fatal("removed member decrypted a message sent after the removal")
	}
	// A remaining member can (it got the rotated key).
	cur, err := ps[1].c.ReceiverForTest(g.ID, admin.c.Address())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cur.Decrypt(msg); err != nil {
		t.Fatalf("remaining member: %v", err)
	}
	// Leaving.
	if err := ps[3].c.Leave(ctx, g.ID); err != nil {
		t.Fatal(err)
	}
	admin.waitFor("leave", func(ev client.Event) bool {
		ge, ok := ev.(client.GroupEvent)
		return ok && len(ge.Group.Members) == 3
	})
}
