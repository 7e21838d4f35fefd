package client

import (
	"context"
	"testing"
	"time"

	"github.com/sotto-im/sotto/client/internal/content"
	"github.com/sotto-im/sotto/client/store/memstore"
	"github.com/sotto-im/sotto/crypto"
)

// sendOriginal starts alice and bob on memory stores, makes them contacts
// and has alice send bob "the original", whose ID it returns.
func sendOriginal(t *testing.T) (alice, bob *recvParty, ab ConversationID, id MessageID) {
	t.Helper()
	env := StartTestEnv(t)
	alice, bob = startRecvParty(t, env, memstore.New(), true), startRecvParty(t, env, memstore.New(), true)
	ab = recvBefriend(t, alice, bob)
	id, err := alice.c.Send(context.Background(), ab, Text("the original"))
	if err != nil {
		t.Fatal(err)
	}
	if m := bob.nextMessage(); m.ID != id {
		t.Fatalf("bob got %x, want %x", m.ID, id)
	}
	return alice, bob, ab, id
}

// TestReusedMessageIDDoesNotReplaceHistory: a peer knows the IDs of the
// messages it received; one that sends a new message under such an ID
// must not replace the original in the recipient's history (edits and
// deletes check their author; a new message has no author to check
// against).
func TestReusedMessageIDDoesNotReplaceHistory(t *testing.T) {
	alice, bob, ab, id := sendOriginal(t)
	ctx := context.Background()
	ba := directConversation(alice.c.Account())
	forged := &content.Message{Kind: content.KindText, ID: id, Sent: time.Now().Truncate(time.Millisecond), Text: "forged"}
	if err := bob.c.enqueueTo(ctx, ba, []crypto.AccountID{alice.c.Account()}, forged, false, false); err != nil {
		t.Fatal(err)
	}
	// A message after it, to know when the forged one was handled.
	if _, err := bob.c.Send(ctx, ba, Text("after")); err != nil {
		t.Fatal(err)
	}
	if m := alice.nextMessage(); m.Text != "after" {
		t.Fatalf("alice shows %q, want only the message after the forged one", m.Text)
	}
	hist, err := alice.c.History(ctx, ab, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range hist {
		if m.ID == MessageID(id) && (m.Text != "the original" || !m.Outgoing) {
			t.Fatalf("alice's message was replaced: %+v", m)
		}
	}
	if len(hist) != 2 {
		t.Fatalf("alice's history holds %d messages, want 2", len(hist))
	}
}

// TestHostileBatches: a contact's batch (content.KindBatch) gets no more
// than its members would alone. A member that reuses the ID of a message
// in the conversation is dropped, the others are shown; a batch with a
// member that may not travel in one (a typing indicator, a group message)
// is dropped whole; a member already received is not shown again.
func TestHostileBatches(t *testing.T) {
	alice, bob, ab, id := sendOriginal(t)
	ctx := context.Background()
	ba := directConversation(alice.c.Account())
	now := time.Now().Truncate(time.Millisecond)
	text := func(id [16]byte, s string) *content.Message {
		return &content.Message{Kind: content.KindText, ID: id, Sent: now, Text: s}
	}
	fresh := newID()
	batches := [][]*content.Message{
		{text(id, "forged"), text(fresh, "fresh")},
		{text(newID(), "beside a typing indicator"), {Kind: content.KindTyping, ID: newID(), Sent: now, Typing: true}},
		{text(newID(), "beside a group message"), {Kind: content.KindText, ID: newID(), Sent: now, Group: [16]byte{1}, Text: "g"}},
		{text(fresh, "fresh again"), text(newID(), "last")},
	}
	for _, members := range batches {
		b := &content.Message{Kind: content.KindBatch, ID: newID(), Sent: now}
		for _, m := range members {
			raw, err := m.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			b.Batch = append(b.Batch, raw)
		}
		if err := bob.c.enqueueTo(ctx, ba, []crypto.AccountID{alice.c.Account()}, b, false, false); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bob.c.Send(ctx, ba, Text("after")); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"fresh", "last", "after"} {
		if m := alice.nextMessage(); m.Text != want {
			t.Fatalf("alice shows %q, want %q", m.Text, want)
		}
	}
	hist, err := alice.c.History(ctx, ab, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, m := range hist {
		texts = append(texts, m.Text)
		if m.ID == MessageID(id) && (m.Text != "the original" || !m.Outgoing) {
			t.Fatalf("alice's message was replaced: %+v", m)
		}
	}
	if len(hist) != 4 {
		t.Fatalf("alice's history holds %q, want the original, fresh, last and after", texts)
	}
}
