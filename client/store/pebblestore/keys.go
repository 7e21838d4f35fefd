package pebblestore

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"sync"
	"time"
)

// Key layout. Every Pebble key starts with a table byte. Natural keys
// (account IDs, addresses, group and conversation IDs, message IDs, record
// kinds and keys) never appear: they are replaced by H(...), an
// HMAC-SHA-256 under the index key (db.go), with a distinct
// domain byte per use so that equal inputs in two roles give unrelated
// hashes. Values are sealed (seal.go) and carry whatever natural key a
// listing must return.
//
//	table            key                                            sealed value
//	tIndexKey 0x00   0x00                                           index key (32)
//	tIdentity 0x01   0x01                                           record
//	tPreKey   0x02   0x02 || kind || H(kind, id)                    id (4) || record
//	tSession  0x03   0x03 || H(account) || H(account, device)       device (4) || record
//	tSender   0x04   0x04 || H(group) || H(group, account, device)  record
//	tRecord   0x05   0x05 || H(kind) || H(kind, key)                uvarint len(key) || key || record
//	tMsgByID  0x06   0x06 || H(conv) || H(conv, id)                 time (8)
//	tMsgIndex 0x07   0x07 || H(conv) || T(time) || H(conv, id)      conv (32) || id (16) || data
//	tOutbox   0x08   0x08 || seq (8, big-endian)                    id (16) || record
//	tOutboxID 0x09   0x09 || H(id)                                  seq (8)
//	tSeen     0x0a   0x0a || H(sender, id)                          time (8)
//
// T(time) = NOT(UnixNano XOR 2^63) as 8 big-endian bytes: ascending keys
// are descending times, so the newest message of a conversation comes
// first in Pebble's fast forward direction.
//
// What the layout still reveals to someone holding the directory but not
// the passphrase: the number of records in each table; which messages
// belong to the same (unnamed) conversation, so the number of
// conversations and of messages in each; the time of every message to the
// nanosecond; which sessions belong to the same (unnamed) account, so how
// many devices each peer has; how many sender keys each group holds; the
// prekey kinds and counts; the outbox's insertion order; and value sizes
// (records are not padded).
const (
	tIndexKey byte = 0x00
	tIdentity byte = 0x01
	tPreKey   byte = 0x02
	tSession  byte = 0x03
	tSender   byte = 0x04
	tRecord   byte = 0x05
	tMsgByID  byte = 0x06
	tMsgIndex byte = 0x07
	tOutbox   byte = 0x08
	tOutboxID byte = 0x09
	tSeen     byte = 0x0a
)

// Domain bytes of H, one per role.
const (
	hPreKey byte = iota + 1
	hAccount
	hAddress
	hGroup
	hGroupSender
	hKind
	hKindKey
	hConv
	hConvID
	hOutboxID
	hSeen
)

const hashSize = sha256.Size

// hasher computes H under the index key. HMAC states are pooled: a
// scan or a burst of puts would otherwise allocate two SHA-256 states per
// key.
type hasher struct {
	pool sync.Pool
}

func newHasher(key []byte) *hasher {
	k := append([]byte(nil), key...)
	h := &hasher{}
	h.pool.New = func() any { return hmac.New(sha256.New, k) }
	return h
}

// sum appends H(domain, parts...) to dst. Every part but the last must have
// a fixed length for its domain, so that the concatenation is unambiguous
// (record kinds, the only variable part before another, are
// length-prefixed by the caller).
func (h *hasher) sum(dst []byte, domain byte, parts ...[]byte) []byte {
	m := h.pool.Get().(hash.Hash)
	m.Reset()
	m.Write([]byte{domain})
	for _, p := range parts {
		m.Write(p)
	}
	dst = m.Sum(dst)
	h.pool.Put(m)
	return dst
}

// encodeTime returns T(t).
func encodeTime(t time.Time) [8]byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], ^(uint64(t.UnixNano()) ^ 1<<63))
	return b
}

// decodeTime inverts encodeTime.
func decodeTime(b []byte) time.Time {
	return time.Unix(0, int64(^binary.BigEndian.Uint64(b)^1<<63))
}

// prefixEnd returns the smallest key greater than every key with prefix p,
// or nil if there is none (p is all 0xff).
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil
}
