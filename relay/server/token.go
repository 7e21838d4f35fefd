package server

import (
	"context"
	"fmt"
	"time"

	"github.com/sotto-im/sotto/internal/token"
	"github.com/sotto-im/sotto/relay/store"
)

// TokenAuthenticator is the Authenticator over the key server's device
// tokens: the token's subject names the device, and so the one queue its
// bearer may read.
type TokenAuthenticator struct {
	Verifier *token.Verifier
	// Now is the clock tokens are checked against; nil uses time.Now.
	Now func() time.Time
}

// Authenticate implements Authenticator.
func (a TokenAuthenticator) Authenticate(ctx context.Context, bearer string) (store.QueueID, error) {
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	c, err := a.Verifier.Verify(ctx, bearer, now())
	if err != nil {
		return store.QueueID{}, fmt.Errorf("relay: authenticate: %w", err)
	}
	return store.QueueID{Account: c.Account, Device: c.Device}, nil
}
