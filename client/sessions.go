package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/crypto"
)

// This file holds the per-device session layer: encrypting one padded
// plaintext for one device (starting a PQXDH session from a prekey bundle
// when there is none) and decrypting what arrives. Every change of session
// state is persisted before the function returns, under cryptoMu.

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
		if !sess.RemoteIdentity().Equal(ik) {
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
	env, err := crypto.Seal(c.id.ik, cert, ik, msg)
	if err != nil {
		return nil, wrap("seal", err)
	}
	return env, nil
}

// decryptFrom decrypts a ratchet message from sender (whose identity key the
// sealed-sender certificate vouched for), starting a session if it is a
// prekey message. The new session state is persisted before it returns.
// It returns the padded plaintext.
func (c *Client) decryptFrom(ctx context.Context, sender crypto.Address, senderIK crypto.IdentityKey, msg []byte) ([]byte, error) {
	c.cryptoMu.Lock()
	defer c.cryptoMu.Unlock()
	var sess *crypto.Session
	rec, err := c.st.LoadSession(ctx, sender)
	switch {
	case err == nil:
		if sess, err = crypto.ParseSession(rec); err != nil {
			return nil, wrap("parse session", err)
		}
	case errors.Is(err, store.ErrNotFound):
	default:
		return nil, wrap("load session", err)
	}
	if sess != nil && sess.RemoteIdentity().Equal(senderIK) {
		pt, err := sess.Decrypt(msg)
		if err == nil {
			return pt, c.storeSession(ctx, sender, sess)
		}
		if !errors.Is(err, crypto.ErrNewSession) || !crypto.IsPreKeyMessage(msg) {
			return nil, err
		}
	}
	if !crypto.IsPreKeyMessage(msg) {
		return nil, fmt.Errorf("client: no session with %s: %w", sender, crypto.ErrDecrypt)
	}
	sess, pt, used, err := crypto.AcceptSession(c.id.ik, c.Address(), preKeyLookup{ctx, c}, msg)
	if err != nil {
		return nil, err
	}
	if sess.RemoteAddress() != sender || !sess.RemoteIdentity().Equal(senderIK) {
		return nil, fmt.Errorf("client: prekey message from %s does not match its certificate: %w", sender, crypto.ErrDecrypt)
	}
	// Consumed one-time prekeys go before the session is stored, so that a
	// replay of the prekey message cannot start a second session.
	if used.HasOneTimePreKey {
		if err := c.st.RemovePreKey(ctx, store.OneTimeEC, used.OneTimePreKeyID); err != nil {
			return nil, wrap("remove one-time prekey", err)
		}
	}
	if !used.KEMLastResort {
		if err := c.st.RemovePreKey(ctx, store.KEM, used.KEMPreKeyID); err != nil {
			return nil, wrap("remove KEM prekey", err)
		}
	}
	if err := c.storeSession(ctx, sender, sess); err != nil {
		return nil, err
	}
	c.prekeysConsumed()
	return pt, nil
}

func (c *Client) storeSession(ctx context.Context, addr crypto.Address, sess *crypto.Session) error {
	rec, err := sess.MarshalBinary()
	if err != nil {
		return wrap("marshal session", err)
	}
	return wrap("store session", c.st.StoreSession(ctx, addr, rec))
}
