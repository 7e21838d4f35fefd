package client

import (
	"sync"

	"github.com/sotto-im/sotto/crypto"
)

// Caches of the receive path. Every message received would otherwise
// verify its sender's signed device list (an Ed25519 verification: a fifth
// of the CPU of receiving a message) and open its sealed-sender envelope
// from scratch (two X25519 operations and a certificate verification,
// half of it). Both results depend only on bytes that repeat from one
// message to the next, so they are cached:
//
//   - a device list's verification depends only on the signed bytes and
//     the account ID it is checked against, so the cached result is the
//     result;
//   - crypto.Sealer keeps the static Diffie-Hellman output per peer device
//     and the certificates it has verified (still checked against the trust
//     roots and the clock on every message).
//
// What this costs: a message from a recent correspondent is handled a
// little faster than one from a new one. The relay, which times when a
// device acknowledges, could try to learn from that whether the sender of
// a sealed message wrote to this device recently. It is a weak signal — a
// device acknowledges a whole batch at once, after a disk sync whose own
// variation is larger — beside what the relay already sees (the sending
// connection's address and time, and the recipient: THREAT_MODEL.md, what
// the relay sees), and the relay already learns who talks to whom by
// timing when it wants to. The send side has the same caches (sender.go).
type receiveCache struct {
	sealerOnce sync.Once
	sealer     *crypto.Sealer

	mu    sync.Mutex
	lists map[string]*crypto.DeviceList // account ID + signed list → verified list
}

// maxVerifiedLists bounds receiveCache.lists; beyond it the map starts
// afresh.
const maxVerifiedLists = 1024

// verifiedList returns the verified device list of account from its signed
// form, from the cache when these exact bytes verified before. Callers must
// not modify the list.
func (c *Client) verifiedList(signed []byte, account crypto.AccountID) (*crypto.DeviceList, error) {
	rc := &c.recvCache
	key := string(account[:]) + string(signed)
	rc.mu.Lock()
	l, ok := rc.lists[key]
	rc.mu.Unlock()
	if ok {
		return l, nil
	}
	l, err := crypto.VerifyDeviceList(signed, account)
	if err != nil {
		return nil, err
	}
	rc.mu.Lock()
	if rc.lists == nil || len(rc.lists) >= maxVerifiedLists {
		rc.lists = make(map[string]*crypto.DeviceList)
	}
	rc.lists[key] = l
	rc.mu.Unlock()
	return l, nil
}

// contactList is contactRecord.list through the cache.
func (c *Client) contactList(r *contactRecord) (*crypto.DeviceList, error) {
	if r.DeviceList == nil {
		return nil, nil
	}
	return c.verifiedList(r.DeviceList, r.Account)
}

// openSealed opens a sealed-sender envelope (header) or, with a body, a
// multi-recipient message, through the client's Sealer.
func (c *Client) openSealed(header, body []byte) (*crypto.SenderCertificate, []byte, error) {
	rc := &c.recvCache
	rc.sealerOnce.Do(func() {
		// NewSealer fails only without an identity key, which an open
		// client always has; a nil sealer falls back to crypto.Open.
		rc.sealer, _ = crypto.NewSealer(c.id.ik, 0)
	})
	if rc.sealer == nil {
		if len(body) != 0 {
			return crypto.OpenMulti(c.id.ik, header, body, c.opts.TrustRoots, c.now())
		}
		return crypto.Open(c.id.ik, header, c.opts.TrustRoots, c.now())
	}
	if len(body) != 0 {
		return rc.sealer.OpenMulti(header, body, c.opts.TrustRoots, c.now())
	}
	return rc.sealer.Open(header, c.opts.TrustRoots, c.now())
}
