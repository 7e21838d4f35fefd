package client

import (
	"context"
	"errors"

	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/crypto"
)

// This file holds the sending half of the per-device session layer:
// encrypting one padded plaintext for one device, starting a PQXDH session
// from a prekey bundle when there is none. The session state is written
// under cryptoMu before the envelope is returned. Under a deferred context
// (deferWrites) that write need not be durable yet: the caller then syncs
// the store before the envelope leaves the device, which lets the outbox
// encrypt a whole batch with one sync. (Receiving is in receive.go.)

// errNeedBundle reports that no session exists for a device: the caller
// fetches the device's bundle and calls encryptTo again with it.
var errNeedBundle = errors.New("client: no session")

// encryptTo encrypts plaintext (already padded) for addr and seals it for
// the device's identity key. bundle, if non-nil, starts a new session
// (replacing any existing one).
func (c *Client) encryptTo(ctx context.Context, addr crypto.Address, ik crypto.IdentityKey, bundle *crypto.PreKeyBundle, plaintext []byte, cert *crypto.SenderCertificate) ([]byte, error) {
	c.cryptoMu.Lock()
	defer c.cryptoMu.Unlock()
	var sess *crypto.Session
	if bundle != nil {
		s, err := crypto.InitiateSession(c.id.ik, c.Address(), bundle)
		if err != nil {
			return nil, wrap("start session with "+addr.String(), err)
		}
		sess = s
	} else {
		rec, err := c.st.LoadSession(ctx, addr)
		if errors.Is(err, store.ErrNotFound) {
			return nil, errNeedBundle
		}
		if err != nil {
			return nil, wrap("load session", err)
		}
		if sess, err = crypto.ParseSession(rec); err != nil {
			return nil, wrap("parse session", err)
		}
		if !sess.HasRemoteIdentity(ik) {
			// The device's key changed under the same ID: the old session
			// is useless.
			return nil, errNeedBundle
		}
	}
	msg, err := sess.Encrypt(plaintext)
	if err != nil {
		return nil, wrap("encrypt", err)
	}
	rec, err := sess.MarshalBinary()
	if err != nil {
		return nil, wrap("marshal session", err)
	}
	if err := c.st.StoreSession(ctx, addr, rec); err != nil {
		return nil, wrap("store session", err)
	}
	env, err := c.seal(cert, ik, msg)
	if err != nil {
		return nil, wrap("seal", err)
	}
	return env, nil
}

func (c *Client) storeSession(ctx context.Context, addr crypto.Address, sess *crypto.Session) error {
	rec, err := sess.MarshalBinary()
	if err != nil {
		return wrap("marshal session", err)
	}
	return wrap("store session", c.st.StoreSession(ctx, addr, rec))
}
