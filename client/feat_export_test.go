package client

import (
	"context"

	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/crypto"
)

// DeleteSenderKeyForTest forgets the stored sender key of one group member's
// device, as a reinstall or a lost distribution message would.
func (c *Client) DeleteSenderKeyForTest(g GroupID, sender crypto.Address) error {
	ctx := context.Background()
	// The store deletes per group only: keep the others.
	var keep = map[crypto.Address][]byte{}
	for _, m := range c.groupMembersForTest(g) {
		for d := crypto.DeviceID(1); d <= 8; d++ {
			a := crypto.Address{Account: m, Device: d}
			if a == sender {
				continue
			}
			if b, err := c.st.LoadSenderKey(ctx, store.GroupID(g), a); err == nil {
				keep[a] = b
			}
		}
	}
	if err := c.st.DeleteSenderKeys(ctx, store.GroupID(g)); err != nil {
		return err
	}
	for a, b := range keep {
		if err := c.st.StoreSenderKey(ctx, store.GroupID(g), a, b); err != nil {
			return err
		}
	}
	return nil
}

func (c *Client) groupMembersForTest(id GroupID) []crypto.AccountID {
	g, err := c.loadGroup(context.Background(), id)
	if err != nil {
		return nil
	}
	var out []crypto.AccountID
	for _, m := range g.Members {
		out = append(out, m.Account)
	}
	return out
}

// LinkDeviceWithBudgetForTest is LinkDevice with another bound on the
// provisioning payload's groups and contacts.
func (c *Client) LinkDeviceWithBudgetForTest(ctx context.Context, code string, budget int) (crypto.DeviceID, error) {
	return c.linkDevice(ctx, code, budget)
}
