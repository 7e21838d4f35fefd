package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/client/store/memstore"
)

// putFailStore is a memstore that refuses, once, to store the received
// message whose record contains marker.
type putFailStore struct {
	*memstore.Store
	marker  []byte
	refused atomic.Bool
}

func (s *putFailStore) AddMessage(ctx context.Context, m store.MessageRecord) (bool, error) {
	if bytes.Contains(m.Data, s.marker) && s.refused.CompareAndSwap(false, true) {
		return false, errors.New("test: message refused")
	}
	return s.Store.AddMessage(ctx, m)
}

// TestSessionCacheNeverShowsUnstoredState: a message whose handling fails
// after its decryption (here the history refuses it) has advanced the
// session in memory but not in the store. The session cache must not
// keep that advanced state: the relay delivers the message again, and it
// must decrypt with the stored state and appear exactly once, followed by
// the rest of the conversation.
func TestSessionCacheNeverShowsUnstoredState(t *testing.T) {
	env := StartTestEnv(t)
	bobStore := &putFailStore{Store: memstore.New(), marker: []byte("refused once")}
	alice, bob := startRecvParty(t, env, memstore.New(), true), startRecvParty(t, env, bobStore, true)
	ab := recvBefriend(t, alice, bob)
	ctx := context.Background()
	texts := []string{"before", "refused once", "after 1", "after 2"}
	for _, text := range texts {
		if _, err := alice.c.Send(ctx, ab, Text(text)); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range texts {
		if m := bob.nextMessage(); m.Text != want {
			t.Fatalf("got %q, want %q", m.Text, want)
		}
	}
	if !bobStore.refused.Load() {
		t.Fatal("the store never refused the message")
	}
	hist, err := bob.c.History(ctx, directConversation(alice.c.Account()), time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != len(texts) {
		t.Fatalf("history holds %d messages, want %d: %v", len(hist), len(texts), fmt.Sprint(hist))
	}
}
