package client_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/sotto-im/sotto/client"
	"github.com/sotto-im/sotto/client/internal/testenv"
	"github.com/sotto-im/sotto/client/store/memstore"
)

// newClient creates an account on the servers of env. A real app passes
// Dir and Passphrase instead of Store, and its servers' URLs and roots.
func newClient(env *testenv.Env) *client.Client {
	c, err := client.Create(context.Background(), client.Options{
		Store:        memstore.New(),
		KeyServerURL: env.KeyServerURL,
		RelayURL:     env.RelayURL,
		TrustRoots:   env.TrustRoots,
	})
	if err != nil {
		log.Fatal(err)
	}
	return c
}

// nextMessage waits for the next message event.
func nextMessage(c *client.Client) client.Message {
	for ev := range c.Events() {
		if m, ok := ev.(client.MessageEvent); ok {
			return m.Message
		}
	}
	panic("events closed")
}

// bob runs on another device: all he gives Alice is his invite link, and
// all he gets from her is what the relay delivers.
func bob(env *testenv.Env, invites chan<- string, done chan<- string) {
	c := newClient(env)
	defer c.Close()
	invites <- c.Invite(false).String()
	m := nextMessage(c) // Alice is a first contact: she becomes a contact
	if _, err := c.Send(context.Background(), m.Conversation, client.Text("hi Alice, got: "+m.Text)); err != nil {
		log.Fatal(err)
	}
	// Wait until the relay accepted the reply before closing.
	for ev := range c.Events() {
		if u, ok := ev.(client.UpdateEvent); ok && u.Message.Status == client.StatusSent {
			break
		}
	}
	done <- "bob done"
}

// Alice adds Bob from his invite link and they exchange a message.
func Example() {
	env, err := testenv.New()
	if err != nil {
		log.Fatal(err)
	}
	defer env.Close()
	ctx := context.Background()

	invites, done := make(chan string), make(chan string)
	go bob(env, invites, done)

	alice := newClient(env)
	defer alice.Close()
	contact, err := alice.AddContact(ctx, <-invites)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := alice.Send(ctx, contact.Conversation, client.Text("hello, Bob")); err != nil {
		log.Fatal(err)
	}
	fmt.Println(nextMessage(alice).Text)
	fmt.Println(<-done)
	// Output:
	// hi Alice, got: hello, Bob
	// bob done
}

// An invite is a link that is also the QR payload; parsing checks its
// syntax, adding the contact verifies the account.
func ExampleParseInvite() {
	inv, err := client.ParseInvite("sotto:invite?a=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa&k=https%3A%2F%2Fkeys.example.org&r=https%3A%2F%2Frelay.example.org")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(inv.KeyServerURL, inv.RelayURL)
	_, err = client.ParseInvite("sotto:invite?a=not-an-account")
	fmt.Println(err)
	// Output:
	// https://keys.example.org https://relay.example.org
	// client: invalid invite
}

// History pages backwards through a conversation; Search finds text.
func ExampleClient_History() {
	env, err := testenv.New()
	if err != nil {
		log.Fatal(err)
	}
	defer env.Close()
	ctx := context.Background()
	alice, bob := newClient(env), newClient(env)
	defer alice.Close()
	defer bob.Close()
	contact, err := alice.AddContact(ctx, bob.Invite(false).String())
	if err != nil {
		log.Fatal(err)
	}
	for _, text := range []string{"one", "two", "three", "four"} {
		if _, err := alice.Send(ctx, contact.Conversation, client.Text(text)); err != nil {
			log.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond) // distinct sent times
	}
	var before time.Time
	for {
		page, err := alice.History(ctx, contact.Conversation, before, 3)
		if err != nil {
			log.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, m := range page {
			fmt.Print(m.Text, " ")
		}
		fmt.Println("|")
		before = page[len(page)-1].Sent
	}
	found, _ := alice.Search(ctx, "THR", 10)
	fmt.Println(len(found), found[0].Text)
	// Output:
	// four three two |
	// one |
	// 1 three
}

// Both people see the same safety number; comparing it (digits or QR
// code) proves that no one substituted keys.
func ExampleClient_SafetyNumber() {
	env, err := testenv.New()
	if err != nil {
		log.Fatal(err)
	}
	defer env.Close()
	ctx := context.Background()
	alice, bob := newClient(env), newClient(env)
	defer alice.Close()
	defer bob.Close()
	if _, err := alice.AddContact(ctx, bob.Invite(false).String()); err != nil {
		log.Fatal(err)
	}
	if _, err := bob.AddContact(ctx, alice.Invite(false).String()); err != nil {
		log.Fatal(err)
	}
	a, _ := alice.SafetyNumber(ctx, bob.Account())
	b, _ := bob.SafetyNumber(ctx, alice.Account())
	fmt.Println(a.String() == b.String(), len(a.Digits()))
	fmt.Println(b.VerifyScanned(a.QRPayload()) == nil)
	// Output:
	// true 60
	// true
}
