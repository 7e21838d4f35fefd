// Package store holds the key server's durable state: accounts with their
// signed device lists, each device's prekeys, and the handle directory.
//
// The key server depends only on the [Store] interface; [Open] returns the
// embedded implementation over Pebble, and package storetest holds the
// conformance suite every implementation must pass.
//
// The store does not verify signatures: the key server verifies everything
// with the crypto package before it calls the store. The store is
// responsible for atomicity: a one-time prekey is handed out by
// [Store.ClaimBundles] at most once, also under concurrency, and a claim
// is durable (synced) before it returns.
package store

import (
	"context"
	"errors"

	"github.com/sotto-im/sotto/crypto"
)

// Implementation constants.
const (
	// MaxOneTimePreKeys bounds the one-time prekeys of each kind one device
	// may hold, so that one device cannot fill the disk; clients refill in
	// batches well below it.
	MaxOneTimePreKeys = 1000
	// MaxHandleLen bounds the stored handle, whatever the server's policy.
	MaxHandleLen = 64
)

// Errors returned by implementations; test with errors.Is.
var (
	// ErrNotFound reports a missing account, device, handle or key.
	ErrNotFound = errors.New("store: not found")
	// ErrExists reports an account registered twice.
	ErrExists = errors.New("store: already exists")
	// ErrVersion reports a device list whose version is not greater than
	// the stored one (the compare-and-set of [Store.ReplaceDeviceList] lost).
	ErrVersion = errors.New("store: device list version does not grow")
	// ErrDuplicatePreKey reports a one-time prekey ID that the device
	// already holds (or repeated within one upload).
	ErrDuplicatePreKey = errors.New("store: duplicate prekey ID")
	// ErrTooManyPreKeys reports an upload that would exceed MaxOneTimePreKeys.
	ErrTooManyPreKeys = errors.New("store: too many one-time prekeys")
	// ErrHandleTaken reports a handle (or one that looks like it) held by
	// another account.
	ErrHandleTaken = errors.New("store: handle taken")
	// ErrClosed reports use of a closed store.
	ErrClosed = errors.New("store: closed")
)

// Device is one device of an account as the store indexes it: the key
// server extracts it from the verified device list so that authenticating a
// request needs no signature check.
type Device struct {
	ID       crypto.DeviceID
	Identity [crypto.PublicKeySize]byte // Ed25519 identity key
}

// Account is an account's record.
type Account struct {
	ID  crypto.AccountID
	Key [crypto.PublicKeySize]byte // Ed25519 account key
	// DeviceList is the signed device list exactly as uploaded.
	DeviceList []byte
	// Version is the device list's version.
	Version uint64
	// Devices are the devices of DeviceList, sorted by ID.
	Devices []Device
}

// Device returns the device with the given ID.
func (a *Account) Device(id crypto.DeviceID) (Device, bool) {
	for _, d := range a.Devices {
		if d.ID == id {
			return d, true
		}
	}
	return Device{}, false
}

// PreKey is one prekey in its canonical crypto encoding (crypto's
// MarshalBinary form), with its ID.
type PreKey struct {
	ID      uint32
	Encoded []byte
}

// DeviceKeys are the prekeys of one device as uploaded together. Any field
// may be empty in an upload; at registration SignedPreKey and LastResort
// are required by the key server.
type DeviceKeys struct {
	SignedPreKey *PreKey
	LastResort   *PreKey // the last-resort ML-KEM prekey
	OneTimeEC    []PreKey
	OneTimeKEM   []PreKey
}

// Counts are the one-time prekeys a device has left.
type Counts struct {
	OneTimeEC  int
	OneTimeKEM int
}

// Bundle is what a claim returns for one device: its current signed and
// last-resort prekeys, and the one-time prekeys claimed for this fetch (nil
// when the device had none left). A claimed one-time prekey is deleted
// durably before the claim returns and never returned again.
type Bundle struct {
	Device       Device
	SignedPreKey []byte
	LastResort   []byte
	OneTimeEC    []byte
	OneTimeKEM   []byte
}

// Store is the key server's storage. Every method is safe for concurrent
// use and every mutation is durable (synced) when it returns. Slices in
// returned values may be shared with a cache: callers must not modify them.
type Store interface {
	// CreateAccount stores a new account with its first device's keys. It
	// returns ErrExists if the account is registered.
	CreateAccount(ctx context.Context, a *Account, device crypto.DeviceID, keys DeviceKeys) error
	// Account returns the account record, or ErrNotFound.
	Account(ctx context.Context, id crypto.AccountID) (*Account, error)
	// ReplaceDeviceList replaces the account's device list if its version
	// is greater than the stored one (ErrVersion otherwise) and deletes,
	// in the same atomic write, every prekey of a device not in the new
	// list. It returns the devices removed.
	ReplaceDeviceList(ctx context.Context, a *Account) (removed []crypto.DeviceID, err error)
	// DeleteAccount erases everything stored for the account: record,
	// prekeys, handle. It returns ErrNotFound if there is no account.
	DeleteAccount(ctx context.Context, id crypto.AccountID) error

	// PutPreKeys adds a device's keys: a signed or last-resort prekey
	// replaces the previous one; one-time prekeys are added, refusing IDs
	// the device holds (ErrDuplicatePreKey) and totals above
	// MaxOneTimePreKeys (ErrTooManyPreKeys). All or nothing. The device
	// must be in the account's list (ErrNotFound otherwise).
	PutPreKeys(ctx context.Context, addr crypto.Address, keys DeviceKeys) error
	// Counts returns the device's one-time prekey counts.
	Counts(ctx context.Context, addr crypto.Address) (Counts, error)
	// ClaimBundles returns a bundle for each of devices of the account
	// (every device in the list when devices is empty), claiming at most
	// one one-time EC and one one-time KEM prekey per device. Devices
	// without a signed prekey and last-resort key are skipped. It returns
	// ErrNotFound for an unknown account or a device not in its list.
	ClaimBundles(ctx context.Context, account crypto.AccountID, devices []crypto.DeviceID) (*Account, []Bundle, error)

	// ClaimHandle gives handle to the account, releasing the account's
	// previous handle. skeleton is the key under which uniqueness is
	// enforced (handles that look alike share it); ErrHandleTaken if
	// another account holds it.
	ClaimHandle(ctx context.Context, account crypto.AccountID, handle, skeleton string) error
	// ReleaseHandle removes the account's handle (ErrNotFound if none).
	ReleaseHandle(ctx context.Context, account crypto.AccountID) error
	// LookupHandle returns the account holding exactly handle, whose
	// skeleton is skeleton.
	LookupHandle(ctx context.Context, handle, skeleton string) (crypto.AccountID, error)
	// Handle returns the account's handle (ErrNotFound if none).
	Handle(ctx context.Context, account crypto.AccountID) (string, error)

	// Close releases the store.
	Close() error
}
