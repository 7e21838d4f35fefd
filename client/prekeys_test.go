package client_test

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sotto-im/sotto/client"
	"github.com/sotto-im/sotto/client/store/memstore"
)

// TestSignedPreKeyRotation advances a device's clock past the rotation
// period: it uploads a new signed prekey, keeps the old one for the grace
// period (a session started from the old bundle still works), and drops it
// after the grace period.
func TestSignedPreKeyRotation(t *testing.T) {
	env := startEnv(t)
	var skew atomic.Int64
	opts := options(env, memstore.New())
	opts.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	c, err := client.Create(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	bob := &party{t: t, c: c, ev: make(chan client.Event, 1<<12)}
	go func() {
		for ev := range c.Events() {
			bob.ev <- ev
		}
		close(bob.ev)
	}()
	t.Cleanup(func() { c.Close() })
	_, first, err := c.SignedPreKeyIDsForTest()
	if err != nil {
		t.Fatal(err)
	}
	// Rotation is due after SignedPreKeyRotation. (Only the maintenance
	// call runs on the skewed clock: certificates are checked against it.)
	skew.Store(int64(client.SignedPreKeyRotation + time.Hour))
	err = c.MaintainPreKeysForTest()
	skew.Store(0)
	if err != nil {
		t.Fatal(err)
	}
	ids, cur, _ := c.SignedPreKeyIDsForTest()
	if cur == first || !slices.Contains(ids, first) || !slices.Contains(ids, cur) {
		t.Fatalf("after rotation: current %d (was %d), stored %v", cur, first, ids)
	}
	// New sessions use the new signed prekey, and work.
	alice := newParty(t, env)
	ct, err := alice.c.AddContact(context.Background(), c.Invite(false).String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.c.Send(context.Background(), ct.Conversation, client.Text("after rotation")); err != nil {
		t.Fatal(err)
	}
	bob.waitMessage("after rotation")
	// After the grace period the old one goes.
	skew.Store(int64(2*client.SignedPreKeyRotation + client.SignedPreKeyGrace + time.Hour))
	err = c.MaintainPreKeysForTest()
	skew.Store(0)
	if err != nil {
		t.Fatal(err)
	}
	if ids, _, _ := c.SignedPreKeyIDsForTest(); slices.Contains(ids, first) {
		t.Fatalf("old signed prekey %d still stored after the grace period: %v", first, ids)
	}
}
