package client

import (
	"context"
	"testing"

	"github.com/sotto-im/sotto/client/internal/testenv"
	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/crypto"
)

// OwnSenderKeyForTest returns this device's stored sender key for a group.
func (c *Client) OwnSenderKeyForTest(g GroupID) (*crypto.SenderKey, error) {
	b, err := c.st.LoadSenderKey(context.Background(), store.GroupID(g), c.Address())
	if err != nil {
		return nil, err
	}
	return crypto.ParseSenderKey(b)
}

// ReceiverForTest returns the stored sender-key receiver of a group member.
func (c *Client) ReceiverForTest(g GroupID, sender crypto.Address) (*crypto.GroupReceiver, error) {
	b, err := c.st.LoadSenderKey(context.Background(), store.GroupID(g), sender)
	if err != nil {
		return nil, err
	}
	return crypto.ParseGroupReceiver(b)
}

func init() { testOnlyExportWorkFactor = 10 }

// SweepForTest runs the deletion of disappeared messages now.
func (c *Client) SweepForTest() (int, error) { return c.sweepDisappeared(context.Background()) }

// MaintainPreKeysForTest runs the prekey maintenance now.
func (c *Client) MaintainPreKeysForTest() error { return c.maintainPreKeys(context.Background()) }

// SignedPreKeyIDsForTest lists the stored signed prekey IDs and the current one.
func (c *Client) SignedPreKeyIDsForTest() ([]uint32, uint32, error) {
	ids, err := c.st.PreKeyIDs(context.Background(), store.SignedEC)
	c.idMu.Lock()
	defer c.idMu.Unlock()
	return ids, c.id.signedID, err
}

// StartTestEnv starts a key server and a relay in this process for the
// test, stopped by its cleanup.
func StartTestEnv(t testing.TB) *testenv.Env {
	t.Helper()
	env, err := testenv.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	return env
}

// DropSessionForTest forgets this device's ratchet session with addr, as a
// device restored from an export (which carries no sessions) would have.
func (c *Client) DropSessionForTest(addr crypto.Address) {
	c.cryptoMu.Lock()
	defer c.cryptoMu.Unlock()
	c.deleteSession(context.Background(), addr)
}
