package client

import (
	"context"
	"crypto/rand"
	"fmt"
	"time"

	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/crypto"
)

// firstDevice is the device ID of the device that creates an account.
const firstDevice crypto.DeviceID = 1

// register creates the account and its first device and publishes them.
func (c *Client) register(ctx context.Context) error {
	ak := crypto.GenerateAccountKey()
	id := &identity{account: ak.ID(), accountKey: ak.Public(), accountPriv: ak, device: firstDevice,
		ik: crypto.GenerateIdentityKey(), nextOneTime: 1, nextKEM: 1, nextSigned: 1}
	rand.Read(id.accessKey[:])
	list := &crypto.DeviceList{AccountKey: ak.Public(), Version: 1,
		Devices: []crypto.Device{{ID: firstDevice, Identity: id.ik.Public(), Added: c.now().Truncate(time.Second)}}}
	signed, err := crypto.SignDeviceList(ak, list)
	if err != nil {
		return wrap("sign device list", err)
	}
	id.deviceList = signed
	c.id = id
	keys, err := c.newPreKeys(ctx, true, PreKeyBatch)
	if err != nil {
		return err
	}
	if err := c.ks.register(ctx, ak.Public(), signed, keys); err != nil {
		return wrap("register", err)
	}
	// The identity is stored only once the key server accepted it, so a
	// failed registration leaves the store empty and Create can be retried.
	if err := c.saveIdentity(ctx); err != nil {
		return err
	}
	if err := c.ks.login(ctx, c.Address(), id.ik, c.now); err != nil {
		return wrap("login", err)
	}
	if err := c.ks.setAccessKey(ctx, c.opts.RelayURL, id.accessKey); err != nil {
		return wrap("register access key", err)
	}
	if c.opts.Handle != "" {
		if err := c.ks.claimHandle(ctx, c.opts.Handle); err != nil {
			return wrap("claim handle", err)
		}
		id.handle = c.opts.Handle
		return c.saveIdentity(ctx)
	}
	return nil
}

// uploadKeys is a batch of public prekeys to publish.
type uploadKeys struct {
	SignedPreKey *crypto.SignedPreKey
	LastResort   *crypto.KEMPreKey
	OneTimeEC    []crypto.OneTimePreKey
	OneTimeKEM   []crypto.KEMPreKey
}

// newPreKeys generates n one-time EC and KEM prekeys (and, if rotate, a
// new signed and last-resort prekey), stores their private halves and
// returns the public halves to upload. Private halves are stored first: a
// prekey the server hands out is always one this device can use.
func (c *Client) newPreKeys(ctx context.Context, rotate bool, n int) (*uploadKeys, error) {
	c.idMu.Lock()
	defer c.idMu.Unlock()
	id := c.id
	out := new(uploadKeys)
	if rotate {
		spk := crypto.GenerateSignedPreKey(id.ik, id.nextSigned)
		if err := c.st.StorePreKey(ctx, store.SignedEC, spk.ID, encodeSignedPreKey(spk, c.now())); err != nil {
			return nil, wrap("store signed prekey", err)
		}
		lr := crypto.GenerateKEMPreKey(id.ik, id.nextKEM, true)
		if err := c.st.StorePreKey(ctx, store.KEMLastResort, lr.ID, encodeKEMPreKey(lr)); err != nil {
			return nil, wrap("store last-resort prekey", err)
		}
		id.signedID, id.lastResortID, id.signedAt = spk.ID, lr.ID, c.now()
		id.nextSigned++
		id.nextKEM++
		out.SignedPreKey, out.LastResort = &spk.SignedPreKey, &lr.KEMPreKey
	}
	for range n {
		otk := crypto.GenerateOneTimePreKey(id.nextOneTime)
		id.nextOneTime++
		if err := c.st.StorePreKey(ctx, store.OneTimeEC, otk.ID, otk.Private.Bytes()); err != nil {
			return nil, wrap("store one-time prekey", err)
		}
		out.OneTimeEC = append(out.OneTimeEC, otk.OneTimePreKey)
		kk := crypto.GenerateKEMPreKey(id.ik, id.nextKEM, false)
		id.nextKEM++
		if err := c.st.StorePreKey(ctx, store.KEM, kk.ID, encodeKEMPreKey(kk)); err != nil {
			return nil, wrap("store KEM prekey", err)
		}
		out.OneTimeKEM = append(out.OneTimeKEM, kk.KEMPreKey)
	}
	return out, nil
}

// prekeysConsumed is called after a prekey message consumed one-time
// prekeys: it wakes the maintenance check without blocking the receiver.
func (c *Client) prekeysConsumed() {
	select {
	case c.refill <- struct{}{}:
	default:
	}
}

// maintainPreKeys refills one-time prekeys below PreKeyRefillThreshold and
// rotates the signed and last-resort prekeys after SignedPreKeyRotation,
// deleting replaced ones after SignedPreKeyGrace.
func (c *Client) maintainPreKeys(ctx context.Context) error {
	ec, kem, err := c.ks.counts(ctx)
	if err != nil {
		return err
	}
	c.idMu.Lock()
	rotate := c.now().Sub(c.id.signedAt) > SignedPreKeyRotation
	c.idMu.Unlock()
	n := 0
	if min(ec, kem) < PreKeyRefillThreshold {
		n = PreKeyBatch - min(ec, kem)
	}
	if n == 0 && !rotate {
		// Pruning runs on every pass, not only after a rotation, so that a
		// pass that found the rotation already done still drops what has
		// outlived the grace period.
		return c.pruneSignedPreKeys(ctx)
	}
	keys, err := c.newPreKeys(ctx, rotate, n)
	if err != nil {
		return err
	}
	c.idMu.Lock()
	err = c.saveIdentity(ctx)
	c.idMu.Unlock()
	if err != nil {
		return err
	}
	if err := c.ks.uploadPreKeys(ctx, keys); err != nil {
		return wrap("upload prekeys", err)
	}
	c.log.Debug("client: prekeys uploaded", "one_time", n, "rotated", rotate)
	return c.pruneSignedPreKeys(ctx)
}

// pruneSignedPreKeys deletes signed and last-resort prekeys replaced more
// than SignedPreKeyGrace ago (approximated by their own creation time
// plus rotation period).
func (c *Client) pruneSignedPreKeys(ctx context.Context) error {
	ids, err := c.st.PreKeyIDs(ctx, store.SignedEC)
	if err != nil {
		return err
	}
	c.idMu.Lock()
	current := c.id.signedID
	c.idMu.Unlock()
	for _, id := range ids {
		if id == current {
			continue
		}
		b, err := c.st.LoadPreKey(ctx, store.SignedEC, id)
		if err != nil {
			continue
		}
		_, created, err := decodeSignedPreKey(b, c.id.ik.Public())
		if err == nil && c.now().Sub(created) > SignedPreKeyRotation+SignedPreKeyGrace {
			if err := c.st.RemovePreKey(ctx, store.SignedEC, id); err != nil {
				return fmt.Errorf("client: prune signed prekey: %w", err)
			}
		}
	}
	return nil
}
