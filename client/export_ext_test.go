package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/sotto-im/sotto/client"
	"github.com/sotto-im/sotto/client/store/memstore"
	"github.com/sotto-im/sotto/crypto"
)

// TestExportImport exports a device, restores it on a fresh store, and
// checks that history and contacts came along, that a message sent to the
// old sessions arrives anyway (the resend request path), and that the
// restored device can send.
func TestExportImport(t *testing.T) {
	env := startEnv(t)
	alice, bob := newParty(t, env), newParty(t, env)
	ab, ba := befriend(t, alice, bob)
	ctx := context.Background()
	for i := range 3 {
		if _, err := alice.c.Send(ctx, ab, client.Text(fmt.Sprintf("before %d", i))); err != nil {
			t.Fatal(err)
		}
		bob.waitMessage(fmt.Sprintf("before %d", i))
		if _, err := bob.c.Send(ctx, ba, client.Text(fmt.Sprintf("reply %d", i))); err != nil {
			t.Fatal(err)
		}
		alice.waitMessage(fmt.Sprintf("reply %d", i))
	}
	var buf bytes.Buffer
	if err := alice.c.Export(ctx, &buf, []byte("export passphrase")); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(buf.Bytes(), []byte("before 1")) {
		t.Fatal("export holds plaintext")
	}
	account := alice.c.Account()
	alice.c.Close()

	if _, err := client.Import(ctx, options(env, memstore.New()), bytes.NewReader(buf.Bytes()), []byte("wrong")); !errors.Is(err, crypto.ErrDecrypt) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	c, err := client.Import(ctx, options(env, memstore.New()), bytes.NewReader(buf.Bytes()), []byte("export passphrase"))
	if err != nil {
		t.Fatal(err)
	}
	restored := &party{t: t, c: c, ev: make(chan client.Event, 1<<12)}
	go func() {
		for ev := range c.Events() {
			restored.ev <- ev
		}
		close(restored.ev)
	}()
	t.Cleanup(func() { c.Close() })
	if c.Account() != account {
		t.Fatal("another account")
	}
	h, err := c.History(ctx, ab, time.Time{}, 0)
	if err != nil || len(h) != 6 {
		t.Fatalf("restored history: %d messages, %v", len(h), err)
	}
	if ct, err := c.Contact(ctx, bob.c.Account()); err != nil || ct.Account != bob.c.Account() {
		t.Fatalf("restored contact: %v", err)
	}
	// Bob still holds the old session: his message does not decrypt on the
	// restored device, which asks him to resend over a fresh session.
	if _, err := bob.c.Send(ctx, ba, client.Text("after restore")); err != nil {
		t.Fatal(err)
	}
	restored.waitMessage("after restore")
	if _, err := c.Send(ctx, ab, client.Text("restored says hi")); err != nil {
		t.Fatal(err)
	}
	bob.waitMessage("restored says hi")
}
