package pebblestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/sotto-im/sotto/client/store"
)

// Messages live under two keys (layout in keys.go): the index entry
// tMsgIndex || H(conv) || T(time) || H(conv, id), which holds the message
// and orders a conversation newest first, and tMsgByID || H(conv) ||
// H(conv, id), which holds the time and so finds the index entry of a
// message from its ID. Both change in one synced batch.

// Range of the times a message can have (store.CheckTime).
var (
	minMessageTime = time.Unix(0, math.MinInt64)
	maxMessageTime = time.Unix(0, math.MaxInt64)
)

const (
	idSize       = 16
	convSize     = 32
	timeSize     = 8
	msgValueHead = convSize + idSize
)

type messageKeys struct {
	conv   []byte // H(conv)
	id     []byte // H(conv, id)
	byID   []byte // tMsgByID || H(conv) || H(conv, id)
	prefix []byte // tMsgIndex || H(conv)
}

func (d *DB) messageKeys(conv store.ConversationID, id [16]byte) messageKeys {
	var k messageKeys
	k.conv = d.hasher.sum(nil, hConv, conv[:])
	k.id = d.hasher.sum(nil, hConvID, conv[:], id[:])
	k.byID = keyOf(tMsgByID, k.conv, k.id)
	k.prefix = keyOf(tMsgIndex, k.conv)
	return k
}

func (k messageKeys) index(t []byte) []byte { return keyOf(tMsgIndex, k.conv, t, k.id) }

// decodeMessage rebuilds a message from its index key and opened value.
func decodeMessage(key, v []byte) (store.MessageRecord, error) {
	var m store.MessageRecord
	if len(key) != 1+hashSize+timeSize+hashSize || len(v) < msgValueHead {
		return m, fmt.Errorf("pebblestore: message entry: %w", ErrCorrupt)
	}
	copy(m.Conversation[:], v)
	copy(m.ID[:], v[convSize:])
	m.Time = decodeTime(key[1+hashSize:])
	m.Data = v[msgValueHead:]
	return m, nil
}

// PutMessage implements [store.MessageStore]. The write is synced.
func (d *DB) PutMessage(ctx context.Context, m store.MessageRecord) error {
	_, err := d.putMessage(ctx, m, false)
	return err
}

// AddMessage implements [store.MessageStore]. The write is synced.
func (d *DB) AddMessage(ctx context.Context, m store.MessageRecord) (bool, error) {
	return d.putMessage(ctx, m, true)
}

// putMessage stores m, or with onlyNew leaves an existing message with
// its ID alone; it reports whether it wrote m.
func (d *DB) putMessage(ctx context.Context, m store.MessageRecord, onlyNew bool) (bool, error) {
	if err := store.CheckTime(m.Time); err != nil {
		return false, err
	}
	if err := d.enter(ctx); err != nil {
		return false, err
	}
	defer d.exit()
	k := d.messageKeys(m.Conversation, m.ID)
	t := encodeTime(m.Time)
	value := make([]byte, 0, msgValueHead+len(m.Data))
	value = append(append(append(value, m.Conversation[:]...), m.ID[:]...), m.Data...)
	ik := k.index(t[:])

	// The stripe lock keeps the read of the old time and the batch that
	// replaces it atomic against a concurrent put of the same message.
	mu := d.stripe(k.id[0])
	mu.Lock()
	defer mu.Unlock()
	var old []byte
	var err error
	if ct, ok := d.times.Get(string(k.byID)); ok {
		old = ct[:]
	} else if old, err = d.get(k.byID); err != nil && err != errMissing {
		return false, fmt.Errorf("pebblestore: put message: %w", err)
	}
	if onlyNew && err == nil {
		return false, nil
	}
	b := d.db.NewBatch()
	defer b.Close()
	if err == errMissing || !bytes.Equal(old, t[:]) {
		if err == nil {
			if len(old) != timeSize {
				return false, fmt.Errorf("pebblestore: put message: time entry: %w", ErrCorrupt)
			}
			if err := b.Delete(k.index(old), nil); err != nil {
				return false, fmt.Errorf("pebblestore: put message: %w", err)
			}
		}
		if err := b.Set(k.byID, d.seal(k.byID, t[:]), nil); err != nil {
			return false, fmt.Errorf("pebblestore: put message: %w", err)
		}
	}
	if err := b.Set(ik, d.seal(ik, value), nil); err != nil {
		return false, fmt.Errorf("pebblestore: put message: %w", err)
	}
	if err := b.Commit(durable(ctx)); err != nil {
		d.times.Delete(string(k.byID))
		return false, fmt.Errorf("pebblestore: put message: %w", err)
	}
	// Cached once committed, under the stripe lock, so a cached time is
	// the stored one; a client writes each of its messages several times
	// (sent, delivered, read), and each write would start with a lookup.
	d.times.Put(string(k.byID), t)
	return true, nil
}

// GetMessage implements [store.MessageStore].
func (d *DB) GetMessage(ctx context.Context, conv store.ConversationID, id [16]byte) (store.MessageRecord, error) {
	if err := d.enter(ctx); err != nil {
		return store.MessageRecord{}, err
	}
	defer d.exit()
	k := d.messageKeys(conv, id)
	// Two reads outside any lock can straddle a concurrent replace that
	// moves the message; retry then, as the second read finds nothing.
	for range 3 {
		t, err := d.get(k.byID)
		if err == errMissing {
			return store.MessageRecord{}, fmt.Errorf("pebblestore: get message: %w", store.ErrNotFound)
		}
		if err != nil {
			return store.MessageRecord{}, fmt.Errorf("pebblestore: get message: %w", err)
		}
		if len(t) != timeSize {
			return store.MessageRecord{}, fmt.Errorf("pebblestore: get message: time entry: %w", ErrCorrupt)
		}
		ik := k.index(t)
		v, err := d.get(ik)
		if err == errMissing {
			continue
		}
		if err != nil {
			return store.MessageRecord{}, fmt.Errorf("pebblestore: get message: %w", err)
		}
		m, err := decodeMessage(ik, v)
		if err != nil {
			return store.MessageRecord{}, err
		}
		if m.Conversation != conv || m.ID != id {
			return store.MessageRecord{}, fmt.Errorf("pebblestore: get message: entry of another message: %w", ErrCorrupt)
		}
		return m, nil
	}
	return store.MessageRecord{}, fmt.Errorf("pebblestore: get message: index entry missing: %w", ErrCorrupt)
}

// DeleteMessage implements [store.MessageStore]. The write is synced, so
// that a message deleted for everyone or expired does not come back after
// a crash.
func (d *DB) DeleteMessage(ctx context.Context, conv store.ConversationID, id [16]byte) error {
	if err := d.enter(ctx); err != nil {
		return err
	}
	defer d.exit()
	k := d.messageKeys(conv, id)
	mu := d.stripe(k.id[0])
	mu.Lock()
	defer mu.Unlock()
	d.times.Delete(string(k.byID))
	t, err := d.get(k.byID)
	if err == errMissing {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pebblestore: delete message: %w", err)
	}
	if len(t) != timeSize {
		return fmt.Errorf("pebblestore: delete message: time entry: %w", ErrCorrupt)
	}
	b := d.db.NewBatch()
	defer b.Close()
	if err := errors.Join(b.Delete(k.index(t), nil), b.Delete(k.byID, nil), b.Commit(durable(ctx))); err != nil {
		return fmt.Errorf("pebblestore: delete message: %w", err)
	}
	return nil
}

// ListMessages implements [store.MessageStore]. It reads the index entries
// of conv between the bounds in key order, which is newest first; messages
// with equal times come in the order of their hashed IDs.
func (d *DB) ListMessages(ctx context.Context, conv store.ConversationID, after, before time.Time, limit int) ([]store.MessageRecord, error) {
	prefix := keyOf(tMsgIndex, d.hasher.sum(nil, hConv, conv[:]))
	lower, upper := prefix, prefixEnd(prefix)
	// before is exclusive: start after every entry at T(before).
	if !before.IsZero() {
		switch {
		case !before.After(minMessageTime):
			return nil, d.checkOpen(ctx)
		case !before.After(maxMessageTime):
			t := encodeTime(before)
			lower = prefixEnd(keyOf(tMsgIndex, prefix[1:], t[:]))
		}
	}
	// after is inclusive: stop after every entry at T(after).
	if !after.IsZero() {
		switch {
		case after.After(maxMessageTime):
			return nil, d.checkOpen(ctx)
		case !after.Before(minMessageTime):
			t := encodeTime(after)
			upper = prefixEnd(keyOf(tMsgIndex, prefix[1:], t[:]))
		}
	}
	if bytes.Compare(lower, upper) >= 0 {
		return nil, d.checkOpen(ctx)
	}
	var out []store.MessageRecord
	errLimit := errors.New("limit")
	err := d.iterate(ctx, "list messages", lower, upper, func(key, v []byte) error {
		m, err := decodeMessage(key, v)
		if err != nil {
			return err
		}
		out = append(out, m)
		if limit > 0 && len(out) >= limit {
			return errLimit
		}
		return nil
	})
	if err != nil && err != errLimit {
		return nil, err
	}
	return out, nil
}

// checkOpen reports what a call would have failed with before doing any
// work: a done context or a closed store.
func (d *DB) checkOpen(ctx context.Context) error {
	if err := d.enter(ctx); err != nil {
		return err
	}
	d.exit()
	return nil
}

// ScanMessages implements [store.MessageStore]: one pass over the message
// index, opening each entry. Messages come grouped by conversation (in the
// order of the conversations' hashes), newest first within each.
func (d *DB) ScanMessages(ctx context.Context, fn func(store.MessageRecord) error) error {
	lower := []byte{tMsgIndex}
	return d.iterate(ctx, "scan messages", lower, prefixEnd(lower), func(key, v []byte) error {
		m, err := decodeMessage(key, v)
		if err != nil {
			return err
		}
		return fn(m)
	})
}
