package client

import (
	"context"
	"testing"
	"time"

	"github.com/sotto-im/sotto/client/internal/content"
	"github.com/sotto-im/sotto/client/internal/testenv"
	"github.com/sotto-im/sotto/client/store/memstore"
	"github.com/sotto-im/sotto/crypto"
)

// TestGroupResendPlan: who gets an answer to a group resend request, and
// what it holds.
func TestGroupResendPlan(t *testing.T) {
	env, err := testenv.New()
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	ctx := context.Background()
	c, err := Create(ctx, Options{Store: memstore.New(), KeyServerURL: env.KeyServerURL, RelayURL: env.RelayURL, TrustRoots: env.TrustRoots})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	member, stranger := crypto.AccountID{1}, crypto.AccountID{2}
	gid := GroupID{7}
	g := &groupRecord{ID: gid, Name: "g", Revision: 3, Members: []content.Member{{Account: member, Role: content.RoleMember}}}
	g.Members = append(g.Members, content.Member{Account: c.Account(), Role: content.RoleAdmin})
	sortMembers(g.Members)
	if err := c.saveGroup(ctx, g); err != nil {
		t.Fatal(err)
	}
	conv := groupConversation(gid)
	now := time.Now().Truncate(time.Millisecond)
	mine, other, deleted := [16]byte{1}, [16]byte{2}, [16]byte{3}
	for id, sm := range map[[16]byte]*storedMessage{
		mine:    {From: c.Account(), Outgoing: true, Sent: now, Text: "mine", Status: StatusPending},
		other:   {From: c.Account(), Device: c.Device() + 1, Outgoing: true, Sent: now, Text: "other device", Status: StatusSent},
		deleted: {From: c.Account(), Outgoing: true, Sent: now, Deleted: true, Status: StatusPending},
	} {
		if err := c.putMessage(ctx, conv, id, sm); err != nil {
			t.Fatal(err)
		}
	}
	from := crypto.Address{Account: member, Device: 1}

	// Strangers, unknown groups and this account learn nothing.
	for name, tc := range map[string]struct {
		from crypto.Address
		gid  GroupID
	}{
		"stranger":      {crypto.Address{Account: stranger, Device: 1}, gid},
		"unknown group": {from, GroupID{8}},
		"own account":   {crypto.Address{Account: c.Account(), Device: 2}, gid},
	} {
		if msgs, text := c.groupResendPlan(ctx, tc.from, tc.gid, mine); msgs != nil || text != nil {
			t.Errorf("%s: answered %d messages and %v", name, len(msgs), text)
		}
	}
	// Another device's message is that device's to answer.
	if msgs, text := c.groupResendPlan(ctx, from, gid, other); msgs != nil || text != nil {
		t.Errorf("another device's message: answered")
	}
	// A member asking for this device's message gets the state (no sender
	// key yet: this device has not sent to the group) and the message.
	msgs, text := c.groupResendPlan(ctx, from, gid, mine)
	if len(msgs) != 1 || msgs[0].Kind != content.KindGroupUpdate || msgs[0].GroupState.Revision != 3 {
		t.Fatalf("answer: %+v", msgs)
	}
	if text == nil || text.ID != mine || text.Text != "mine" || text.Group != gid {
		t.Fatalf("resent message: %+v", text)
	}
	// With a sender key, it goes too; a deleted or unknown message is not resent.
	sk := crypto.NewSenderKey(crypto.GroupID(gid))
	g.KeyID = sk.KeyID()
	if err := c.saveGroup(ctx, g); err != nil {
		t.Fatal(err)
	}
	if err := c.storeOwnSenderKey(ctx, gid, sk); err != nil {
		t.Fatal(err)
	}
	for _, id := range [][16]byte{deleted, {9}} {
		msgs, text := c.groupResendPlan(ctx, from, gid, id)
		if len(msgs) != 2 || msgs[1].Kind != content.KindSenderKey || text != nil {
			t.Fatalf("message %x: %d messages, %v", id[:1], len(msgs), text)
		}
	}
}
