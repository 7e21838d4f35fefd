package pebblestore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/crypto"
)

// The outbox keeps its entries under a sequence number, so that listing
// them in key order gives the order in which they were first put:
// tOutbox || seq holds id || record, and tOutboxID || H(id) holds seq so
// that a put of a known id keeps its place and a delete finds it.

func (d *DB) outboxIDKey(id [16]byte) []byte {
	return d.hasher.sum([]byte{tOutboxID}, hOutboxID, id[:])
}

func outboxKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{tOutbox}, seq)
}

// outboxSeqOf reads the sequence number of id; errMissing if none.
func (d *DB) outboxSeqOf(idKey []byte) (uint64, error) {
	v, err := d.get(idKey)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("pebblestore: outbox index entry: %w", ErrCorrupt)
	}
	return binary.BigEndian.Uint64(v), nil
}

// PutOutbox implements [store.OutboxStore]. The write is synced: the
// client sends a message only once it is in the outbox.
func (d *DB) PutOutbox(ctx context.Context, id [16]byte, rec []byte) error {
	if err := d.enter(ctx); err != nil {
		return err
	}
	defer d.exit()
	idKey := d.outboxIDKey(id)
	mu := d.stripe(idKey[1])
	mu.Lock()
	defer mu.Unlock()
	seq, err := d.outboxSeqOf(idKey)
	b := d.db.NewBatch()
	defer b.Close()
	switch err {
	case nil:
	case errMissing:
		seq = d.outboxSeq.Add(1)
		if err := b.Set(idKey, d.seal(idKey, binary.BigEndian.AppendUint64(nil, seq)), nil); err != nil {
			return fmt.Errorf("pebblestore: put outbox: %w", err)
		}
	default:
		return fmt.Errorf("pebblestore: put outbox: %w", err)
	}
	k := outboxKey(seq)
	v := append(append(make([]byte, 0, idSize+len(rec)), id[:]...), rec...)
	if err := errors.Join(b.Set(k, d.seal(k, v), nil), b.Commit(durable(ctx))); err != nil {
		return fmt.Errorf("pebblestore: put outbox: %w", err)
	}
	return nil
}

// DeleteOutbox implements [store.OutboxStore]. The write is not synced
// (see the package documentation).
func (d *DB) DeleteOutbox(ctx context.Context, id [16]byte) error {
	if err := d.enter(ctx); err != nil {
		return err
	}
	defer d.exit()
	idKey := d.outboxIDKey(id)
	mu := d.stripe(idKey[1])
	mu.Lock()
	defer mu.Unlock()
	seq, err := d.outboxSeqOf(idKey)
	if err == errMissing {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pebblestore: delete outbox: %w", err)
	}
	b := d.db.NewBatch()
	defer b.Close()
	if err := errors.Join(b.Delete(outboxKey(seq), nil), b.Delete(idKey, nil), b.Commit(pebble.NoSync)); err != nil {
		return fmt.Errorf("pebblestore: delete outbox: %w", err)
	}
	return nil
}

// ListOutbox implements [store.OutboxStore].
func (d *DB) ListOutbox(ctx context.Context, fn func(id [16]byte, rec []byte) error) error {
	lower := []byte{tOutbox}
	return d.iterate(ctx, "list outbox", lower, prefixEnd(lower), func(_, v []byte) error {
		if len(v) < idSize {
			return fmt.Errorf("pebblestore: outbox entry: %w", ErrCorrupt)
		}
		return fn([16]byte(v[:idSize]), v[idSize:])
	})
}

func (d *DB) seenKey(sender crypto.AccountID, id [16]byte) []byte {
	return d.hasher.sum([]byte{tSeen}, hSeen, sender[:], id[:])
}

// Seen implements [store.SeenStore].
func (d *DB) Seen(ctx context.Context, sender crypto.AccountID, id [16]byte) (bool, error) {
	if err := d.enter(ctx); err != nil {
		return false, err
	}
	defer d.exit()
	switch _, err := d.get(d.seenKey(sender, id)); err {
	case nil:
		return true, nil
	case errMissing:
		return false, nil
	default:
		return false, fmt.Errorf("pebblestore: seen: %w", err)
	}
}

// MarkSeen implements [store.SeenStore]. The write is not synced (see the
// package documentation).
func (d *DB) MarkSeen(ctx context.Context, sender crypto.AccountID, id [16]byte, at time.Time) (bool, error) {
	if err := store.CheckTime(at); err != nil {
		return false, err
	}
	if err := d.enter(ctx); err != nil {
		return false, err
	}
	defer d.exit()
	k := d.seenKey(sender, id)
	mu := d.stripe(k[1])
	mu.Lock()
	defer mu.Unlock()
	_, err := d.get(k)
	switch err {
	case nil:
		return true, nil
	case errMissing:
	default:
		return false, fmt.Errorf("pebblestore: mark seen: %w", err)
	}
	if err := d.set(k, binary.BigEndian.AppendUint64(nil, uint64(at.UnixNano())), pebble.NoSync); err != nil {
		return false, fmt.Errorf("pebblestore: mark seen: %w", err)
	}
	return false, nil
}

// PruneSeen implements [store.SeenStore]. Seen keys hold no time (it would
// reveal when each message arrived), so it opens every entry.
func (d *DB) PruneSeen(ctx context.Context, cutoff time.Time) error {
	if err := d.enter(ctx); err != nil {
		return err
	}
	defer d.exit()
	lower := []byte{tSeen}
	b := d.db.NewBatch()
	defer func() { b.Close() }()
	err := d.iterateEntered(ctx, "prune seen", lower, prefixEnd(lower), func(key, v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("pebblestore: seen entry: %w", ErrCorrupt)
		}
		if !time.Unix(0, int64(binary.BigEndian.Uint64(v))).Before(cutoff) {
			return nil
		}
		if err := b.Delete(key, nil); err != nil {
			return err
		}
		if b.Count() >= pruneBatch {
			if err := b.Commit(pebble.NoSync); err != nil {
				return err
			}
			b.Close()
			b = d.db.NewBatch()
		}
		return nil
	})
	if err == nil {
		err = b.Commit(pebble.NoSync)
	}
	if err != nil {
		return fmt.Errorf("pebblestore: prune seen: %w", err)
	}
	return nil
}
