package client

import (
	"bytes"
	"sync"

	"github.com/sotto-im/sotto/crypto"
)

// Caches of the send and receive paths. Every message sent or received
// would otherwise verify the peer's signed device list (an Ed25519
// verification: a fifth of the CPU of a message) and seal or open its
// sealed-sender envelope from scratch (an X25519 operation more each way,
// and on receipt a certificate verification). These results depend only
// on bytes that repeat from one message to the next, so they are cached
// once per client, for both directions:
//
//   - a device list's verification depends only on the signed bytes and
//     the account ID it is checked against, so the cached result is the
//     result;
//   - crypto.Sealer keeps the static Diffie-Hellman output per peer device
//     (the same value whichever way the envelope goes) and the
//     certificates it has verified (still checked against the trust roots
//     and the clock on every message).
//
// What this costs: a message from a recent correspondent is handled a
// little faster than one from a new one. The relay, which times when a
// device acknowledges, could try to learn from that whether the sender of
// a sealed message wrote to this device recently. It is a weak signal — a
// device acknowledges a whole batch at once, after a disk sync whose own
// variation is larger — beside what the relay already sees (the sending
// connection's address and time, and the recipient: THREAT_MODEL.md, what
// the relay sees), and the relay already learns who talks to whom by
// timing when it wants to. On the send side the timing is visible only on
// this device, which knows whom it sends to anyway.
type cryptoCache struct {
	sealerOnce sync.Once
	sealer     *crypto.Sealer

	mu    sync.Mutex
	lists map[crypto.AccountID]verifiedList // the last list verified per account
}

// maxVerifiedLists bounds cryptoCache.lists; beyond it the map starts
// afresh.
const maxVerifiedLists = 1024

// verifiedList returns the verified device list of account from its signed
// form, from the cache when these exact bytes verified before (the cache
// keeps the last list verified per account). Callers must not modify the
// list.
func (c *Client) verifiedList(signed []byte, account crypto.AccountID) (*crypto.DeviceList, error) {
	rc := &c.caches
	rc.mu.Lock()
	e, ok := rc.lists[account]
	rc.mu.Unlock()
	if ok && bytes.Equal(e.signed, signed) {
		return e.list, nil
	}
	l, err := crypto.VerifyDeviceList(signed, account)
	if err != nil {
		return nil, err
	}
	rc.mu.Lock()
	if rc.lists == nil || len(rc.lists) >= maxVerifiedLists {
		rc.lists = make(map[crypto.AccountID]verifiedList)
	}
	rc.lists[account] = verifiedList{signed: bytes.Clone(signed), list: l}
	rc.mu.Unlock()
	return l, nil
}

// verifiedList is a signed device list and what its verification gave.
type verifiedList struct {
	signed []byte
	list   *crypto.DeviceList
}

// contactList is contactRecord.list through the cache.
func (c *Client) contactList(r *contactRecord) (*crypto.DeviceList, error) {
	if r.DeviceList == nil {
		return nil, nil
	}
	return c.verifiedList(r.DeviceList, r.Account)
}

// sealer returns the client's Sealer, or nil if there is none (NewSealer
// fails only without an identity key, which an open client always has;
// without one, seal and openSealed fall back to crypto.Seal and Open).
func (c *Client) sealer() *crypto.Sealer {
	rc := &c.caches
	rc.sealerOnce.Do(func() { rc.sealer, _ = crypto.NewSealer(c.id.ik, 0) })
	return rc.sealer
}

// seal wraps a ratchet message in a sealed-sender envelope for the device
// with identity key to.
func (c *Client) seal(cert *crypto.SenderCertificate, to crypto.IdentityKey, msg []byte) ([]byte, error) {
	if s := c.sealer(); s != nil {
		return s.Seal(cert, to, msg)
	}
	return crypto.Seal(c.id.ik, cert, to, msg)
}

// openSealed opens a sealed-sender envelope (header) or, with a body, a
// multi-recipient message, through the client's Sealer.
func (c *Client) openSealed(header, body []byte) (*crypto.SenderCertificate, []byte, error) {
	s := c.sealer()
	if s == nil {
		if len(body) != 0 {
			return crypto.OpenMulti(c.id.ik, header, body, c.opts.TrustRoots, c.now())
		}
		return crypto.Open(c.id.ik, header, c.opts.TrustRoots, c.now())
	}
	if len(body) != 0 {
		return s.OpenMulti(header, body, c.opts.TrustRoots, c.now())
	}
	return s.Open(header, c.opts.TrustRoots, c.now())
}
