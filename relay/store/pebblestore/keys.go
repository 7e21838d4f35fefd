package pebblestore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/relay/store"
)

// Key layout. Every key starts with one byte naming its table, so that each
// table is one contiguous, bounded range of the keyspace.
//
//	'a' account(20)                                   -> access key hash (32)
//	'b' bodyID(8)                                     -> body shared by several entries
//	'e' time(8) account(20) device(4) cursor(9)       -> message ID (16)
//	'i' account(20) device(4) messageID(16)           -> cursor(9) time(8)
//	'n' account(20) device(4)                         -> messages(8) bytes(8) lastSeq(8)
//	'p' account(20) device(4)                         -> push endpoint URL
//	'q' account(20) device(4) cursor(9)               -> entry (see encodeEntry)
//	'r' bodyID(8)                                     -> reference count (4) of a shared body
//
// cursor = (255 - priority)(1) seq(8): bytewise order is delivery order.
// Integers are big-endian so that bytewise order is numeric order; times are
// Unix nanoseconds, clamped to [0, MaxInt64].
//
// The 'e' (expiry) index is what Sweep walks, in time order. For a queued
// message its time is the message's expiry; once acknowledged, the message
// leaves 'q' but its 'i' (idempotency) record stays until min(expiry,
// ack time + DedupWindow) so a late retry of the same send is still
// recognised; the 'i' value names the 'e' key so both go together.
// Every key that names an account starts with the account right after the
// table byte, except 'e', which is reached through 'i'; that is what lets a
// purge find everything.
const (
	tAccess  = 'a'
	tBody    = 'b'
	tExpiry  = 'e'
	tIdem    = 'i'
	tCounter = 'n'
	tPush    = 'p'
	tQueue   = 'q'
	tRefs    = 'r'
)

const (
	queueIDLen  = crypto.AccountIDSize + 4
	cursorLen   = len(store.Cursor{})
	entryKeyLen = 1 + queueIDLen + cursorLen
)

func putQueueID(b []byte, q store.QueueID) []byte {
	b = append(b, q.Account[:]...)
	return binary.BigEndian.AppendUint32(b, uint32(q.Device))
}

func queueKey(table byte, q store.QueueID) []byte {
	return putQueueID(append(make([]byte, 0, 1+queueIDLen+cursorLen+8), table), q)
}

func accountKey(table byte, a crypto.AccountID) []byte {
	return append([]byte{table}, a[:]...)
}

func entryKey(q store.QueueID, c store.Cursor) []byte {
	return append(queueKey(tQueue, q), c[:]...)
}

func idemKey(q store.QueueID, id [16]byte) []byte {
	return append(queueKey(tIdem, q), id[:]...)
}

func expiryKey(t uint64, q store.QueueID, c store.Cursor) []byte {
	k := make([]byte, 0, 1+8+queueIDLen+cursorLen)
	k = append(k, tExpiry)
	k = binary.BigEndian.AppendUint64(k, t)
	k = putQueueID(k, q)
	return append(k, c[:]...)
}

func bodyKey(table byte, id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{table}, id)
}

// prefixEnd returns the smallest key greater than every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil // p is all 0xff: no upper bound
}

func makeCursor(priority uint8, seq uint64) store.Cursor {
	var c store.Cursor
	c[0] = 255 - priority
	binary.BigEndian.PutUint64(c[1:], seq)
	return c
}

func cursorPriority(c store.Cursor) uint8 { return 255 - c[0] }

// parseQueueID reads account(20) device(4) from b.
func parseQueueID(b []byte) store.QueueID {
	var q store.QueueID
	copy(q.Account[:], b[:crypto.AccountIDSize])
	q.Device = crypto.DeviceID(binary.BigEndian.Uint32(b[crypto.AccountIDSize:]))
	return q
}

// timeKey converts t to the index's clamped nanosecond form.
func timeKey(t time.Time) uint64 {
	switch {
	case t.Before(time.Unix(0, 0)):
		return 0
	case t.After(time.Unix(0, math.MaxInt64)):
		return math.MaxInt64
	}
	return uint64(t.UnixNano())
}

func timeOf(n uint64) time.Time { return time.Unix(0, int64(n)).UTC() }

// entryVersion is the first byte of every stored entry value.
const entryVersion = 1

// entry is the decoded value of a 'q' key:
//
//	version(1) id(16) stored(8) expires(8) bodyID(8) bodyLen(4) headerLen(4) header [body]
//
// A body referenced by one entry only (the common one-recipient send) is
// stored inline, after the header, with bodyID 0: that saves the 'b' and 'r'
// records and their reads and writes on Put and Ack. A body shared by
// several entries is stored once under 'b' with a reference count under
// 'r'.
type entry struct {
	id      [16]byte
	stored  uint64
	expires uint64
	bodyID  uint64 // 0: inline
	bodyLen uint32
	header  []byte
	inline  []byte // the body when bodyID is 0
}

const entryFixedLen = 1 + 16 + 8 + 8 + 8 + 4 + 4

func (e *entry) encode() []byte {
	b := make([]byte, 0, entryFixedLen+len(e.header)+len(e.inline))
	b = append(b, entryVersion)
	b = append(b, e.id[:]...)
	b = binary.BigEndian.AppendUint64(b, e.stored)
	b = binary.BigEndian.AppendUint64(b, e.expires)
	b = binary.BigEndian.AppendUint64(b, e.bodyID)
	b = binary.BigEndian.AppendUint32(b, e.bodyLen)
	b = binary.BigEndian.AppendUint32(b, uint32(len(e.header)))
	b = append(b, e.header...)
	return append(b, e.inline...)
}

var errCorrupt = errors.New("pebblestore: corrupt record")

// decodeEntry decodes b, which the caller must own (header and inline body
// alias it).
func decodeEntry(b []byte) (entry, error) {
	var e entry
	if len(b) < entryFixedLen || b[0] != entryVersion {
		return e, fmt.Errorf("%w: entry of %d bytes", errCorrupt, len(b))
	}
	copy(e.id[:], b[1:17])
	e.stored = binary.BigEndian.Uint64(b[17:])
	e.expires = binary.BigEndian.Uint64(b[25:])
	e.bodyID = binary.BigEndian.Uint64(b[33:])
	e.bodyLen = binary.BigEndian.Uint32(b[41:])
	hl := uint64(binary.BigEndian.Uint32(b[45:]))
	rest := b[entryFixedLen:]
	want := hl
	if e.bodyID == 0 {
		want += uint64(e.bodyLen)
	}
	if uint64(len(rest)) != want {
		return entry{}, fmt.Errorf("%w: entry lengths", errCorrupt)
	}
	e.header = rest[:hl:hl]
	if e.bodyID == 0 {
		e.inline = rest[hl:]
	}
	return e, nil
}

func (e *entry) size() int64 { return int64(len(e.header)) + int64(e.bodyLen) }

// counters is the decoded value of an 'n' key.
type counters struct {
	messages int64
	bytes    int64
	lastSeq  uint64
}

func (c counters) encode() []byte {
	b := make([]byte, 0, 24)
	b = binary.BigEndian.AppendUint64(b, uint64(c.messages))
	b = binary.BigEndian.AppendUint64(b, uint64(c.bytes))
	return binary.BigEndian.AppendUint64(b, c.lastSeq)
}

func decodeCounters(b []byte) (counters, error) {
	if len(b) != 24 {
		return counters{}, fmt.Errorf("%w: counters of %d bytes", errCorrupt, len(b))
	}
	return counters{
		messages: int64(binary.BigEndian.Uint64(b)),
		bytes:    int64(binary.BigEndian.Uint64(b[8:])),
		lastSeq:  binary.BigEndian.Uint64(b[16:]),
	}, nil
}

// idem is the decoded value of an 'i' key.
type idem struct {
	cursor store.Cursor
	etime  uint64 // time component of the matching 'e' key
}

func (v idem) encode() []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), v.cursor[:]...), v.etime)
}

func decodeIdem(b []byte) (idem, error) {
	var v idem
	if len(b) != cursorLen+8 {
		return v, fmt.Errorf("%w: idempotency record of %d bytes", errCorrupt, len(b))
	}
	copy(v.cursor[:], b)
	v.etime = binary.BigEndian.Uint64(b[cursorLen:])
	return v, nil
}
