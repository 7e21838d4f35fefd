// Package store defines the storage interfaces of the Sotto client, with an
// in-memory implementation (package memstore), the default encrypted Pebble
// store (package pebblestore) and a conformance suite (package storetest)
// that an application can run against its own implementation.
//
// The interfaces are small and each holds one kind of state. Records are
// opaque, versioned []byte produced by the client (crypto state through the
// crypto package's MarshalBinary, client records through the client's own
// encoding); a store persists them as they are and never interprets them.
//
// # Contract shared by every implementation
//
//   - Every method takes a context and returns an error. A missing record is
//     reported as an error wrapping [ErrNotFound]; use errors.Is.
//   - Stores copy byte slices in and out: a caller may modify a slice after
//     passing it to a Store method, and may keep and modify any slice a Store
//     returns (including those passed to iteration callbacks).
//   - Callbacks of List and Scan methods may call other methods of the same
//     Store. An error returned by a callback stops the iteration and is
//     returned unchanged.
//   - All methods are safe for concurrent use.
//   - After Close, methods return an error wrapping [ErrClosed].
//   - A write method that returns nil has made its write durable (it
//     survives a crash of the process or the machine), unless ctx came from
//     [Deferred] and the store implements [Syncer]: then the write is
//     durable after the next Sync.
//
// # Security properties
//
// The interfaces carry secrets (identity keys, ratchet sessions, sender
// keys) and message content. An implementation must keep them encrypted at
// rest; package pebblestore does so with a store key wrapped under the
// user's passphrase. Package memstore keeps everything in memory and is meant
// for tests and ephemeral clients.
package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/sotto-im/sotto/crypto"
)

// Errors shared by all implementations. Callers test for them with errors.Is.
var (
	// ErrNotFound reports a record that is not in the store.
	ErrNotFound = errors.New("store: not found")
	// ErrClosed reports a call on a store that was closed.
	ErrClosed = errors.New("store: closed")
	// ErrInvalid reports an argument a store cannot accept (a message time
	// outside the representable range, an empty record kind, ...).
	ErrInvalid = errors.New("store: invalid argument")
)

// IdentityStore holds the local account and device record: keys and
// registration. There is one such record per store.
type IdentityStore interface {
	// LoadIdentity returns the identity record, or ErrNotFound before the
	// first StoreIdentity.
	LoadIdentity(ctx context.Context) ([]byte, error)
	// StoreIdentity replaces the identity record.
	StoreIdentity(ctx context.Context, rec []byte) error
}

// PreKeyKind says which of the device's prekey pools a prekey belongs to.
// Each kind has its own ID space.
type PreKeyKind uint8

// The prekey kinds.
const (
	// SignedEC is a signed X25519 prekey (rotated on a schedule; old ones
	// kept for a grace period).
	SignedEC PreKeyKind = iota + 1
	// OneTimeEC is a one-time X25519 prekey.
	OneTimeEC
	// KEM is a signed one-time ML-KEM prekey.
	KEM
	// KEMLastResort is a signed last-resort ML-KEM prekey, used when the
	// one-time KEM prekeys are exhausted.
	KEMLastResort
)

// String returns the name of the kind.
func (k PreKeyKind) String() string {
	switch k {
	case SignedEC:
		return "signed-ec"
	case OneTimeEC:
		return "one-time-ec"
	case KEM:
		return "kem"
	case KEMLastResort:
		return "kem-last-resort"
	}
	return fmt.Sprintf("prekey-kind(%d)", uint8(k))
}

// Valid reports whether k is one of the defined kinds.
func (k PreKeyKind) Valid() bool { return k >= SignedEC && k <= KEMLastResort }

// PreKeyStore holds the private halves of the device's prekeys.
type PreKeyStore interface {
	// LoadPreKey returns the prekey record, or ErrNotFound.
	LoadPreKey(ctx context.Context, kind PreKeyKind, id uint32) ([]byte, error)
	// StorePreKey inserts or replaces a prekey record.
	StorePreKey(ctx context.Context, kind PreKeyKind, id uint32, rec []byte) error
	// RemovePreKey deletes a prekey record. Removing a missing prekey is not
	// an error.
	RemovePreKey(ctx context.Context, kind PreKeyKind, id uint32) error
	// PreKeyIDs returns the IDs of the stored prekeys of kind in ascending
	// order.
	PreKeyIDs(ctx context.Context, kind PreKeyKind) ([]uint32, error)
}

// SessionStore holds ratchet sessions, one per remote device.
type SessionStore interface {
	// LoadSession returns the session record for addr, or ErrNotFound.
	LoadSession(ctx context.Context, addr crypto.Address) ([]byte, error)
	// StoreSession inserts or replaces the session record for addr.
	StoreSession(ctx context.Context, addr crypto.Address, rec []byte) error
	// DeleteSession deletes the session for addr. Deleting a missing session
	// is not an error.
	DeleteSession(ctx context.Context, addr crypto.Address) error
	// SessionDevices returns the devices of account that have a session, in
	// ascending order.
	SessionDevices(ctx context.Context, account crypto.AccountID) ([]crypto.DeviceID, error)
}

// GroupID names a group. It is chosen at random by the group's creator.
type GroupID [16]byte

// SenderKeyStore holds sender-key state per (group, sender device).
type SenderKeyStore interface {
	// LoadSenderKey returns the sender-key record, or ErrNotFound.
	LoadSenderKey(ctx context.Context, group GroupID, sender crypto.Address) ([]byte, error)
	// StoreSenderKey inserts or replaces a sender-key record.
	StoreSenderKey(ctx context.Context, group GroupID, sender crypto.Address, rec []byte) error
	// DeleteSenderKeys deletes every sender key of group (all senders), as
	// done when the group's membership shrinks and keys are rotated.
	DeleteSenderKeys(ctx context.Context, group GroupID) error
}

// RecordStore holds small records by kind ("contact", "group",
// "setting", ...) and key. Kinds are separate namespaces: the same key in two
// kinds names two records.
type RecordStore interface {
	// LoadRecord returns the record, or ErrNotFound. kind must not be empty.
	LoadRecord(ctx context.Context, kind string, key []byte) ([]byte, error)
	// StoreRecord inserts or replaces a record. kind must not be empty.
	StoreRecord(ctx context.Context, kind string, key []byte, rec []byte) error
	// DeleteRecord deletes a record. Deleting a missing record is not an
	// error.
	DeleteRecord(ctx context.Context, kind string, key []byte) error
	// ListRecords calls fn for every record of kind, in no particular order.
	ListRecords(ctx context.Context, kind string, fn func(key, rec []byte) error) error
}

// ConversationID names a conversation. It is chosen by the client (e.g. a
// hash of the peer's account ID or of the group ID).
type ConversationID [32]byte

// MessageRecord is one message of a conversation's history.
type MessageRecord struct {
	Conversation ConversationID
	ID           [16]byte
	// Time orders the history (the sent time). It must lie within the range
	// of time.Time.UnixNano (years 1678 to 2262); stores keep it to the
	// nanosecond and return it in the local time zone without a monotonic
	// clock reading, so compare times with Equal.
	Time time.Time
	// Data is the client's encoded message (text, status, reactions ...).
	Data []byte
}

// MessageStore holds the message history.
type MessageStore interface {
	// PutMessage inserts m, or replaces the message with the same
	// Conversation and ID (whose Time may change).
	PutMessage(ctx context.Context, m MessageRecord) error
	// AddMessage inserts m unless the conversation already holds a
	// message with its ID, which it then leaves as it is; it reports
	// whether it inserted m. The check and the insert are one step. (The
	// client stores received messages with it: a sender must not replace
	// a message by reusing its ID.)
	AddMessage(ctx context.Context, m MessageRecord) (added bool, err error)
	// GetMessage returns a message, or ErrNotFound.
	GetMessage(ctx context.Context, conv ConversationID, id [16]byte) (MessageRecord, error)
	// DeleteMessage deletes a message. Deleting a missing message is not an
	// error.
	DeleteMessage(ctx context.Context, conv ConversationID, id [16]byte) error
	// ListMessages returns up to limit messages of conv with
	// before > Time >= after, newest first. A zero after or before leaves
	// that side unbounded; limit <= 0 means no limit. Messages with equal
	// times come in an order that is stable but otherwise unspecified, so a
	// client paging backwards with before = oldest time of the previous page
	// should give its messages distinct times (as sent times to the
	// nanosecond are in practice).
	ListMessages(ctx context.Context, conv ConversationID, after, before time.Time, limit int) ([]MessageRecord, error)
	// ScanMessages calls fn for every stored message of every conversation,
	// in no particular order. It serves search.
	ScanMessages(ctx context.Context, fn func(MessageRecord) error) error
}

// OutboxStore holds messages persisted before sending; the client removes
// each one when the relay has accepted it.
type OutboxStore interface {
	// PutOutbox inserts or replaces an outbox entry. A replaced entry keeps
	// its place in the order.
	PutOutbox(ctx context.Context, id [16]byte, rec []byte) error
	// DeleteOutbox deletes an entry. Deleting a missing entry is not an
	// error.
	DeleteOutbox(ctx context.Context, id [16]byte) error
	// ListOutbox calls fn for every entry in the order in which the entries
	// were first put, so that retries preserve the sending order.
	ListOutbox(ctx context.Context, fn func(id [16]byte, rec []byte) error) error
}

// SeenStore de-duplicates received messages.
type SeenStore interface {
	// Seen reports whether (sender, id) has been recorded, without
	// recording it. The client checks before it stores a message and
	// records only after, so that a message whose storing failed is not
	// taken for a duplicate when it is delivered again.
	Seen(ctx context.Context, sender crypto.AccountID, id [16]byte) (bool, error)
	// MarkSeen records (sender, id), received at at, and reports whether it
	// had been recorded before. A repeated MarkSeen keeps the first time.
	MarkSeen(ctx context.Context, sender crypto.AccountID, id [16]byte, at time.Time) (seen bool, err error)
	// PruneSeen forgets the entries recorded at a time before cutoff, so that
	// the de-duplication table stays bounded.
	PruneSeen(ctx context.Context, cutoff time.Time) error
}

// Syncer is implemented by stores whose writes can be made durable in
// groups. Under a context from Deferred, the store's write methods may
// return before the write is durable; Sync makes every write that
// returned before it durable (in the order they were made). Stores that
// do not implement Syncer make every write durable before returning, and
// callers then need no Sync.
//
// A device that receives many messages at once writes each one under a
// Deferred context and syncs once before it acknowledges them: one disk
// flush for the group instead of several per message.
type Syncer interface {
	// Sync makes every write that returned before the call durable. After
	// Close it fails with an error wrapping ErrClosed.
	Sync(ctx context.Context) error
}

// deferredKey is the context key of Deferred.
type deferredKey struct{}

// Deferred returns a context under which writes of a Syncer store need not
// be durable until the next Sync. Reads under it see the deferred writes
// at once, like any other write.
func Deferred(ctx context.Context) context.Context {
	return context.WithValue(ctx, deferredKey{}, true)
}

// IsDeferred reports whether ctx came from Deferred (for implementations).
func IsDeferred(ctx context.Context) bool {
	v, _ := ctx.Value(deferredKey{}).(bool)
	return v
}

// Store is everything the client persists.
type Store interface {
	IdentityStore
	PreKeyStore
	SessionStore
	SenderKeyStore
	RecordStore
	MessageStore
	OutboxStore
	SeenStore
	// Close releases the store. Further calls fail with ErrClosed.
	Close() error
}

// Bounds of the times a store accepts (the range of UnixNano).
var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

// CheckTime returns an error wrapping [ErrInvalid] if t cannot be stored to
// the nanosecond: it is zero or outside the range of time.Time.UnixNano.
// Implementations call it on message and seen times.
func CheckTime(t time.Time) error {
	if t.IsZero() || t.Before(minTime) || t.After(maxTime) {
		return fmt.Errorf("store: time %v outside the storable range: %w", t, ErrInvalid)
	}
	return nil
}

// CheckKind returns an error wrapping [ErrInvalid] if kind is not a valid
// record kind (it must be non-empty and at most 255 bytes).
func CheckKind(kind string) error {
	if kind == "" || len(kind) > 255 {
		return fmt.Errorf("store: record kind of length %d: %w", len(kind), ErrInvalid)
	}
	return nil
}
