package harness

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/sotto-im/sotto/client"
	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/client/store/memstore"
	"github.com/sotto-im/sotto/crypto"
)

// durable keeps a memstore across Close, as a directory would, without the
// passphrase KDF's cost.
type durable struct{ store.Store }

func (durable) Close() error { return nil }

// User is a client device whose received messages are recorded in order.
type User struct {
	Name string
	C    *client.Client
	St   store.Store

	mu       sync.Mutex
	received []client.Message
	events   chan client.Event // events other than messages, for waits
	changed  chan struct{}
}

// Options returns client options for sottod at url.
func Options(url string, roots []crypto.TrustRoot, st store.Store) client.Options {
	return client.Options{Store: durable{st}, KeyServerURL: url, RelayURL: url, TrustRoots: roots}
}

// NewUser creates an account on a fresh memory store.
func NewUser(ctx context.Context, name, url string, roots []crypto.TrustRoot) (*User, error) {
	st := memstore.New()
	c, err := client.Create(ctx, Options(url, roots, st))
	if err != nil {
		return nil, fmt.Errorf("harness: create %s: %w", name, err)
	}
	return Watch(name, c, st), nil
}

// Watch records c's events.
func Watch(name string, c *client.Client, st store.Store) *User {
	u := &User{Name: name, C: c, St: st, events: make(chan client.Event, 1<<14), changed: make(chan struct{}, 1)}
	go func() {
		for ev := range c.Events() {
			if m, ok := ev.(client.MessageEvent); ok {
				u.mu.Lock()
				u.received = append(u.received, m.Message)
				u.mu.Unlock()
				select {
				case u.changed <- struct{}{}:
				default:
				}
				continue
			}
			select {
			case u.events <- ev:
			default: // nobody waits for this many; drop
			}
		}
	}()
	return u
}

// Received returns a copy of the messages received so far, in order.
func (u *User) Received() []client.Message {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]client.Message(nil), u.received...)
}

// WaitMessage waits for a message with the given text.
func (u *User) WaitMessage(text string, limit time.Duration) (client.Message, error) {
	deadline := time.Now().Add(limit)
	for {
		for _, m := range u.Received() {
			if m.Text == text {
				return m, nil
			}
		}
		if time.Now().After(deadline) {
			return client.Message{}, fmt.Errorf("harness: %s: no message %q after %v", u.Name, text, limit)
		}
		select {
		case <-u.changed:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// WaitEvent waits for an event (other than a message) that ok accepts.
func (u *User) WaitEvent(ok func(client.Event) bool, limit time.Duration) error {
	timeout := time.After(limit)
	for {
		select {
		case ev := <-u.events:
			if ok(ev) {
				return nil
			}
		case <-timeout:
			return fmt.Errorf("harness: %s: event not seen after %v", u.Name, limit)
		}
	}
}

// Befriend makes a and b contacts and returns their conversations.
func Befriend(ctx context.Context, a, b *User) (ab, ba client.ConversationID, err error) {
	cb, err := a.C.AddContact(ctx, b.C.Invite(false).String())
	if err != nil {
		return ab, ba, err
	}
	ca, err := b.C.AddContact(ctx, a.C.Invite(false).String())
	if err != nil {
		return ab, ba, err
	}
	return cb.Conversation, ca.Conversation, nil
}

// Link links a new device to u's account and returns it.
func Link(ctx context.Context, u *User, name, url string, roots []crypto.TrustRoot) (*User, error) {
	codes := make(chan string, 1)
	type result struct {
		c   *client.Client
		err error
	}
	done := make(chan result, 1)
	st := memstore.New()
	go func() {
		c, err := client.Link(ctx, Options(url, roots, st), func(code client.LinkCode) { codes <- code.String() })
		done <- result{c, err}
	}()
	select {
	case code := <-codes:
		if _, err := u.C.LinkDevice(ctx, code); err != nil {
			return nil, fmt.Errorf("harness: link device: %w", err)
		}
	case r := <-done:
		return nil, fmt.Errorf("harness: link: %v", r.err)
	}
	r := <-done
	if r.err != nil {
		return nil, fmt.Errorf("harness: link: %w", r.err)
	}
	return Watch(name, r.c, st), nil
}
