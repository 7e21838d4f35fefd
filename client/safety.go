package client

import (
	"context"
	"errors"

	"github.com/sotto-im/sotto/crypto"
)

// SafetyNumber returns the safety number of this account and a contact:
// 60 digits (String groups them) and a QR payload, the same on both sides.
// Comparing them out of band proves that no one substituted account keys;
// record the result with SetVerified.
func (c *Client) SafetyNumber(ctx context.Context, a crypto.AccountID) (*crypto.SafetyNumber, error) {
	r, err := c.loadContact(ctx, a)
	if err != nil {
		return nil, err
	}
	l, err := r.list()
	if err != nil {
		return nil, err
	}
	if l == nil {
		return nil, errors.New("client: contact's account key is not known yet")
	}
	return crypto.NewSafetyNumber(c.id.accountKey, l.AccountKey), nil
}

// SetVerified records whether the safety number of a contact was compared
// (it is cleared when the contact's devices change).
func (c *Client) SetVerified(ctx context.Context, a crypto.AccountID, verified bool) error {
	r, err := c.loadContact(ctx, a)
	if err != nil {
		return err
	}
	r.Verified = verified
	return c.saveContact(ctx, r)
}
