package client

import (
	"context"
	"crypto/ecdh"
	"crypto/mlkem"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/crypto"
)

// recordVersion is the version of the client's own records (identity,
// contacts, conversations, messages, outbox). They are JSON: they never
// leave the device, are sealed by the store, and JSON lets a newer client
// add fields that an older one ignores.
const recordVersion = 1

// identity is the local account and device.
type identity struct {
	account     crypto.AccountID
	accountKey  crypto.AccountKey
	accountPriv *crypto.AccountPrivateKey // nil on a linked device
	device      crypto.DeviceID
	ik          *crypto.IdentityPrivateKey
	accessKey   [32]byte // delivery access key: authorises sealed sends to this account

	// Guarded by Client.idMu.
	deviceList   []byte // the account's current signed device list
	nextOneTime  uint32
	nextKEM      uint32
	nextSigned   uint32
	signedID     uint32
	lastResortID uint32
	signedAt     time.Time
	handle       string
}

type identityRecord struct {
	V            int              `json:"v"`
	AccountKey   []byte           `json:"account_key"`
	AccountSeed  []byte           `json:"account_seed,omitempty"`
	Device       crypto.DeviceID  `json:"device"`
	IdentitySeed []byte           `json:"identity_seed"`
	AccessKey    []byte           `json:"access_key"`
	DeviceList   []byte           `json:"device_list"`
	NextOneTime  uint32           `json:"next_one_time"`
	NextKEM      uint32           `json:"next_kem"`
	NextSigned   uint32           `json:"next_signed"`
	SignedID     uint32           `json:"signed_id"`
	LastResortID uint32           `json:"last_resort_id"`
	SignedAt     time.Time        `json:"signed_at"`
	Handle       string           `json:"handle,omitempty"`
	Account      crypto.AccountID `json:"account"`
}

// saveIdentity persists the identity record; the caller holds idMu or has
// the identity to itself.
func (c *Client) saveIdentity(ctx context.Context) error {
	id := c.id
	r := identityRecord{V: recordVersion, AccountKey: id.accountKey.Bytes(), Device: id.device,
		IdentitySeed: id.ik.Seed(), AccessKey: id.accessKey[:], DeviceList: id.deviceList,
		NextOneTime: id.nextOneTime, NextKEM: id.nextKEM, NextSigned: id.nextSigned,
		SignedID: id.signedID, LastResortID: id.lastResortID, SignedAt: id.signedAt, Handle: id.handle, Account: id.account}
	if id.accountPriv != nil {
		r.AccountSeed = id.accountPriv.Seed()
	}
	b, err := json.Marshal(&r)
	if err != nil {
		return err
	}
	return wrap("store identity", c.st.StoreIdentity(ctx, b))
}

func (c *Client) loadIdentity(ctx context.Context) error {
	b, err := c.st.LoadIdentity(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return ErrNotRegistered
	}
	if err != nil {
		return wrap("load identity", err)
	}
	id, err := parseIdentity(b)
	if err != nil {
		return err
	}
	c.id = id
	return nil
}

func parseIdentity(b []byte) (*identity, error) {
	var r identityRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("client: identity record: %w", err)
	}
	if r.V != recordVersion {
		return nil, fmt.Errorf("client: identity record version %d not supported", r.V)
	}
	id := &identity{device: r.Device, deviceList: r.DeviceList, nextOneTime: r.NextOneTime, nextKEM: r.NextKEM,
		nextSigned: r.NextSigned, signedID: r.SignedID, lastResortID: r.LastResortID, signedAt: r.SignedAt, handle: r.Handle}
	var err error
	if id.accountKey, err = crypto.NewAccountKey(r.AccountKey); err != nil {
		return nil, fmt.Errorf("client: identity record: %w", err)
	}
	id.account = id.accountKey.ID()
	if r.AccountSeed != nil {
		if id.accountPriv, err = crypto.NewAccountPrivateKey(r.AccountSeed); err != nil {
			return nil, fmt.Errorf("client: identity record: %w", err)
		}
	}
	if id.ik, err = crypto.NewIdentityPrivateKey(r.IdentitySeed); err != nil {
		return nil, fmt.Errorf("client: identity record: %w", err)
	}
	if len(r.AccessKey) != 32 {
		return nil, errors.New("client: identity record: access key")
	}
	copy(id.accessKey[:], r.AccessKey)
	return id, nil
}

// Prekey records: the private halves of this device's prekeys. Layouts:
//
//	signed:      private [32] || SignedPreKey encoding || created u64
//	one-time:    private [32]
//	KEM:         decapsulation seed [64] || KEMPreKey encoding
func encodeSignedPreKey(p *crypto.SignedPreKeyPair, created time.Time) []byte {
	pub, _ := p.SignedPreKey.MarshalBinary()
	b := append(p.Private.Bytes(), pub...)
	return append(b, byte(created.Unix()>>56), byte(created.Unix()>>48), byte(created.Unix()>>40), byte(created.Unix()>>32),
		byte(created.Unix()>>24), byte(created.Unix()>>16), byte(created.Unix()>>8), byte(created.Unix()))
}

func decodeSignedPreKey(b []byte, ik crypto.IdentityKey) (*crypto.SignedPreKeyPair, time.Time, error) {
	if len(b) < 32+8 {
		return nil, time.Time{}, errors.New("client: signed prekey record")
	}
	priv, err := ecdh.X25519().NewPrivateKey(b[:32])
	if err != nil {
		return nil, time.Time{}, errors.New("client: signed prekey record")
	}
	pub, err := crypto.ParseSignedPreKey(b[32:len(b)-8], ik)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("client: signed prekey record: %w", err)
	}
	var sec int64
	for _, x := range b[len(b)-8:] {
		sec = sec<<8 | int64(x)
	}
	return &crypto.SignedPreKeyPair{Private: priv, SignedPreKey: *pub}, time.Unix(sec, 0), nil
}

func encodeKEMPreKey(p *crypto.KEMPreKeyPair) []byte {
	pub, _ := p.KEMPreKey.MarshalBinary()
	return append(p.Private.Bytes(), pub...)
}

func decodeKEMPreKey(b []byte, ik crypto.IdentityKey) (*crypto.KEMPreKeyPair, error) {
	if len(b) < mlkem.SeedSize {
		return nil, errors.New("client: KEM prekey record")
	}
	dk, err := mlkem.NewDecapsulationKey768(b[:mlkem.SeedSize])
	if err != nil {
		return nil, errors.New("client: KEM prekey record")
	}
	pub, err := crypto.ParseKEMPreKey(b[mlkem.SeedSize:], ik)
	if err != nil {
		return nil, fmt.Errorf("client: KEM prekey record: %w", err)
	}
	return &crypto.KEMPreKeyPair{Private: dk, KEMPreKey: *pub}, nil
}

// preKeyLookup gives crypto.AcceptSession this device's private prekeys.
type preKeyLookup struct {
	ctx context.Context
	c   *Client
}

func (l preKeyLookup) SignedPreKey(id uint32) (*crypto.SignedPreKeyPair, error) {
	b, err := l.c.st.LoadPreKey(l.ctx, store.SignedEC, id)
	if err != nil {
		return nil, lookupErr(err)
	}
	p, _, err := decodeSignedPreKey(b, l.c.id.ik.Public())
	return p, err
}

func (l preKeyLookup) KEMPreKey(id uint32) (*crypto.KEMPreKeyPair, error) {
	b, err := l.c.st.LoadPreKey(l.ctx, store.KEM, id)
	if errors.Is(err, store.ErrNotFound) {
		b, err = l.c.st.LoadPreKey(l.ctx, store.KEMLastResort, id)
	}
	if err != nil {
		return nil, lookupErr(err)
	}
	return decodeKEMPreKey(b, l.c.id.ik.Public())
}

func (l preKeyLookup) OneTimePreKey(id uint32) (*crypto.OneTimePreKeyPair, error) {
	b, err := l.c.st.LoadPreKey(l.ctx, store.OneTimeEC, id)
	if err != nil {
		return nil, lookupErr(err)
	}
	priv, err := ecdh.X25519().NewPrivateKey(b)
	if err != nil {
		return nil, errors.New("client: one-time prekey record")
	}
	return &crypto.OneTimePreKeyPair{Private: priv, OneTimePreKey: crypto.OneTimePreKey{ID: id, Public: priv.PublicKey()}}, nil
}

func lookupErr(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return crypto.ErrUnknownPreKey
	}
	return err
}
