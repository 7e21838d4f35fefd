package client

import (
	"context"
	"errors"
	"sync"

	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/internal/boundedmap"
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
		s, err := c.loadSession(ctx, addr)
		if errors.Is(err, store.ErrNotFound) {
			return nil, errNeedBundle
		}
		if err != nil {
			return nil, err
		}
		sess = s
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
	if err := c.storeSession(ctx, addr, sess); err != nil {
		return nil, err
	}
	env, err := c.seal(cert, ik, msg)
	if err != nil {
		return nil, wrap("seal", err)
	}
	return env, nil
}

// Parsed sessions are cached (c.sessions): loading one from the store is
// a Pebble lookup, an XChaCha20-Poly1305 open and a parse, on both sides
// of every message. A session is checked out of the cache while in use:
// loadSession takes it out, and only storeSession, once the store holds
// the new state, puts it back. A session that was changed but not stored
// (a failed decryption, a store error, a message whose handling stopped
// before its commit) is therefore never seen again: the next load reads
// the store, which is what a crash at that point would do too. Callers
// hold cryptoMu.

// loadSession returns the session with addr, from the cache or the store
// (store.ErrNotFound if there is none). The caller owns it until
// storeSession.
func (c *Client) loadSession(ctx context.Context, addr crypto.Address) (*crypto.Session, error) {
	if s := c.sessions.take(addr); s != nil {
		return s, nil
	}
	rec, err := c.st.LoadSession(ctx, addr)
	if err != nil {
		return nil, wrap("load session", err)
	}
	s, err := crypto.ParseSession(rec)
	if err != nil {
		return nil, wrap("parse session", err)
	}
	return s, nil
}

// storeSession stores sess as the session with addr and caches it.
func (c *Client) storeSession(ctx context.Context, addr crypto.Address, sess *crypto.Session) error {
	rec, err := sess.MarshalBinary()
	if err != nil {
		return wrap("marshal session", err)
	}
	if err := c.st.StoreSession(ctx, addr, rec); err != nil {
		return wrap("store session", err)
	}
	c.sessions.put(addr, sess)
	return nil
}

// deleteSession deletes the session with addr.
func (c *Client) deleteSession(ctx context.Context, addr crypto.Address) error {
	c.sessions.take(addr)
	return c.st.DeleteSession(ctx, addr)
}

// sessionCache holds parsed sessions by peer device; see loadSession. It
// holds at most maxCachedSessions; when full, an arbitrary one makes room.
type sessionCache struct {
	once sync.Once
	m    *boundedmap.Map[crypto.Address, *crypto.Session]
}

const maxCachedSessions = 1024

func (sc *sessionCache) sessions() *boundedmap.Map[crypto.Address, *crypto.Session] {
	sc.once.Do(func() { sc.m = boundedmap.New[crypto.Address, *crypto.Session](maxCachedSessions) })
	return sc.m
}

// take removes and returns the session cached for addr (nil if none).
func (sc *sessionCache) take(addr crypto.Address) *crypto.Session {
	s, _ := sc.sessions().Take(addr)
	return s
}

func (sc *sessionCache) put(addr crypto.Address, s *crypto.Session) { sc.sessions().Put(addr, s) }
