package client

import (
	"context"
	"testing"
	"time"

	"github.com/sotto-im/sotto/client/internal/content"
	"github.com/sotto-im/sotto/client/store/memstore"
	"github.com/sotto-im/sotto/crypto"
)

// TestReusedMessageIDDoesNotReplaceHistory: a peer knows the IDs of the
// messages it received; one that sends a new message under such an ID
// must not replace the original in the recipient's history (edits and
// deletes check their author; a new message has no author to check
// against).
func TestReusedMessageIDDoesNotReplaceHistory(t *testing.T) {
	env := StartTestEnv(t)
	alice, bob := startRecvParty(t, env, memstore.New(), true), startRecvParty(t, env, memstore.New(), true)
	ab := recvBefriend(t, alice, bob)
	ctx := context.Background()
	id, err := alice.c.Send(ctx, ab, Text("the original"))
	if err != nil {
		t.Fatal(err)
	}
	if m := bob.nextMessage(); m.ID != id {
		t.Fatalf("bob got %x, want %x", m.ID, id)
	}
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
