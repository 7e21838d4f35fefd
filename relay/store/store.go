// Package store defines the relay's durable storage: per-device message
// queues, the small per-account and per-device records the relay keeps
// beside them, and the blob store for attachment ciphertext.
//
// The relay's server code depends only on the interfaces in this package
// ([Queues], [Devices], [Blobs]) so that a clustered backend can replace the
// embedded one. The embedded implementation over Pebble lives in the
// pebblestore sub-package, the filesystem blob store in blobstore, and the
// conformance suite every implementation must pass in storetest.
//
// Everything stored here is opaque ciphertext: the store never interprets a
// header or a body.
package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/sotto-im/sotto/crypto"
)

// QueueID names one device's queue: the unit of delivery.
type QueueID struct {
	Account crypto.AccountID
	Device  crypto.DeviceID
}

// String returns "accountid.device", for logs and errors.
func (q QueueID) String() string {
	return crypto.Address{Account: q.Account, Device: q.Device}.String()
}

// Entry is one message to place in one queue.
type Entry struct {
	Queue QueueID
	// ID is the sender-chosen message ID: (Queue, ID) is stored at most once,
	// which makes a sender's retry idempotent.
	ID [16]byte
	// Priority orders delivery: higher first, FIFO within one priority.
	Priority uint8
	// Expires is the retention deadline; the sweeper deletes after it and
	// Fetch no longer returns the message.
	Expires time.Time
	// Header is the per-recipient part of a multi-recipient message; it may
	// be empty.
	Header []byte
}

// Message is a stored message as delivered to a device.
type Message struct {
	Queue QueueID
	// Key is the message's position in its queue; pass it to Ack, or to Fetch
	// as the cursor to continue after.
	Key      Cursor
	ID       [16]byte
	Priority uint8
	Stored   time.Time
	Expires  time.Time
	Header   []byte
	// Body is the shared body, stored once per Put and referenced by each of
	// its entries.
	Body []byte
}

// Cursor is an opaque, ordered position in a queue. Cursors compare
// bytewise in delivery order; the zero Cursor sorts before every message.
// The first byte is 255-priority, the other eight the big-endian sequence
// number of [Cursor.Seq].
type Cursor [9]byte

// Seq returns the cursor's sequence number within its queue. Every
// implementation numbers the entries stored in one queue 1, 2, 3... in
// commit order, whatever their priority, so that a connection that has
// seen every message up to sequence number n knows that the entry numbered
// n+1 is the only one it has not seen.
func (c Cursor) Seq() uint64 {
	var n uint64
	for _, b := range c[1:] {
		n = n<<8 | uint64(b)
	}
	return n
}

// PutResult says for one entry of a Put whether it was newly stored or was a
// duplicate of an earlier Put with the same (Queue, ID), and where a new
// entry was stored: with them the caller can hand the stored message to a
// connected device without reading it back.
type PutResult struct {
	Duplicate bool
	// Cursor and Stored are set for a newly stored entry (Duplicate false):
	// its position in its queue and its storage time, as Fetch returns
	// them.
	Cursor Cursor
	Stored time.Time
}

// Queues is the relay's durable queue store.
type Queues interface {
	// Put stores body once and one entry per element of entries, atomically,
	// and returns only after the write is durable (synced). Concurrent Puts
	// share syncs (group commit). Entries whose (Queue, ID) already exist are
	// not stored again (PutResult.Duplicate). It returns ErrQueueFull
	// (wrapped in *QueueFullError naming the queue) when a queue's message or
	// byte quota is exceeded, in which case nothing of this Put is stored.
	Put(ctx context.Context, body []byte, entries []Entry) ([]PutResult, error)
	// Fetch returns up to limit messages of q strictly after cursor after
	// (zero Cursor = from the start), in delivery order, skipping expired
	// ones.
	Fetch(ctx context.Context, q QueueID, after Cursor, limit int) ([]Message, error)
	// Ack deletes the message at key from q (and frees the shared body when
	// its last reference goes). Acknowledging a missing message is not an
	// error.
	Ack(ctx context.Context, q QueueID, key Cursor) error
	// Depth reports the number of messages and bytes held in q.
	Depth(ctx context.Context, q QueueID) (messages int, bytes int64, err error)
	// PurgeDevice deletes everything held for one device: its queue,
	// idempotency records and counters.
	PurgeDevice(ctx context.Context, q QueueID) error
	// PurgeAccount deletes everything held for an account and every device
	// of it.
	PurgeAccount(ctx context.Context, account crypto.AccountID) error
	// Sweep deletes messages whose Expires is before now; it returns how
	// many.
	Sweep(ctx context.Context, now time.Time) (int, error)
}

// OrderedPutter is implemented by stores that can split a Put into its
// submission and its completion. Puts started one after another by one
// goroutine are committed in that order: for each queue, entries of an
// earlier StartPut get smaller cursors than entries of a later one.
//
// The relay stores the Send frames of one connection through it, so that a
// client may pipeline its sends and still have them stored in the order it
// wrote them; a store without it only offers Put, and pipelined sends may
// then be stored in any order.
type OrderedPutter interface {
	// StartPut submits the Put and returns at once (after the submission
	// has its place in the commit order); wait blocks until the Put is
	// durable (or failed) and returns what Put would have returned.
	//
	// A Put refused by validation (a full queue) takes no place: it does
	// not hold up the Puts started after it, which may then succeed. ctx
	// bounds both the submission and the wait; if it ends first the outcome
	// is unknown (the Put may still be committed). wait may be called more
	// than once and returns the same outcome each time.
	StartPut(ctx context.Context, body []byte, entries []Entry) (wait func() ([]PutResult, error))
}

// Devices holds what the relay keeps per account/device besides queues.
type Devices interface {
	// SetAccessKeyHash records the SHA-256 of the account's delivery access
	// key, registered by the recipient, which authorises sealed sends to it.
	SetAccessKeyHash(ctx context.Context, account crypto.AccountID, hash [32]byte) error
	// AccessKeyHash returns the registered hash; ok is false if none is.
	AccessKeyHash(ctx context.Context, account crypto.AccountID) (hash [32]byte, ok bool, err error)
	// SetPushEndpoint records a device's wakeup URL ("" removes it).
	SetPushEndpoint(ctx context.Context, q QueueID, url string) error
	// PushEndpoint returns a device's wakeup URL, "" if none.
	PushEndpoint(ctx context.Context, q QueueID) (string, error)
	// PurgeDevice deletes every record held for one device (its push
	// endpoint), durably.
	PurgeDevice(ctx context.Context, q QueueID) error
	// PurgeAccount deletes every record held for an account (its access key
	// hash) and for each of its devices, durably: afterwards the store holds
	// nothing that names the account. The method has the same signature as
	// [Queues.PurgeAccount] (and PurgeDevice as [Queues.PurgeDevice]) so
	// that one store implementing both interfaces erases queues and
	// records in one operation.
	PurgeAccount(ctx context.Context, account crypto.AccountID) error
}

// ReadSeekCloser is what [Blobs.Open] returns: seekable so that
// http.ServeContent can answer Range requests.
type ReadSeekCloser = io.ReadSeekCloser

// BlobID names a blob. It is random and unguessable (128 bits), so knowing
// it is the capability to download the blob.
type BlobID [16]byte

// Blobs stores attachment ciphertext apart from the queues.
type Blobs interface {
	// Create streams r into a new blob owned by owner, refusing more than
	// declared bytes or more than the configured max size / the account
	// quota (ErrTooLarge / ErrQuotaExceeded); a short body is an error and
	// nothing is kept. It returns the new unguessable 128-bit ID.
	Create(ctx context.Context, owner crypto.AccountID, declared int64, expires time.Time, r io.Reader) (BlobID, error)
	// Open returns a reader (usable with http.ServeContent for Range) and
	// the blob's size; ErrNotFound if it is missing or expired.
	Open(ctx context.Context, id BlobID) (ReadSeekCloser, int64, error)
	// Delete removes a blob; deleting a missing blob is not an error.
	Delete(ctx context.Context, id BlobID) error
	// PurgeAccount deletes every blob owned by owner.
	PurgeAccount(ctx context.Context, owner crypto.AccountID) error
	// Sweep deletes blobs whose expiry is before now; it returns how many.
	Sweep(ctx context.Context, now time.Time) (int, error)
}

// Errors returned by implementations; test with errors.Is.
var (
	ErrQueueFull     = errors.New("store: queue full")
	ErrNotFound      = errors.New("store: not found")
	ErrTooLarge      = errors.New("store: blob too large")
	ErrQuotaExceeded = errors.New("store: blob quota exceeded")
)

// QueueFullError reports which queue refused a Put and why. It matches
// ErrQueueFull with errors.Is.
type QueueFullError struct {
	Queue QueueID
	// Messages and Bytes are the queue's depth when the Put was refused.
	Messages int
	Bytes    int64
}

// Error implements error.
func (e *QueueFullError) Error() string {
	return fmt.Sprintf("store: queue %s full (%d messages, %d bytes)", e.Queue, e.Messages, e.Bytes)
}

// Unwrap returns ErrQueueFull.
func (e *QueueFullError) Unwrap() error { return ErrQueueFull }
