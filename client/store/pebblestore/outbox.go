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
// that a put of a known id keeps its place and a delete finds it. The
// same index is kept in memory (d.outbox, read from the entries at open
// and updated after each commit), which spares every put and delete a
// lookup.

func (d *DB) outboxIDKey(id [16]byte) []byte {
	return d.hasher.sum([]byte{tOutboxID}, hOutboxID, id[:])
}

func outboxKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{tOutbox}, seq)
}

// outboxSeqOf returns the sequence number of id, if it is in the outbox.
func (d *DB) outboxSeqOf(id [16]byte) (uint64, bool) {
	d.outbox.Lock()
	defer d.outbox.Unlock()
	seq, ok := d.outbox.seq[id]
	return seq, ok
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
	b := d.db.NewBatch()
	defer b.Close()
	seq, ok := d.outboxSeqOf(id)
	if !ok {
		seq = d.outboxSeq.Add(1)
		if err := b.Set(idKey, d.seal(idKey, binary.BigEndian.AppendUint64(nil, seq)), nil); err != nil {
			return fmt.Errorf("pebblestore: put outbox: %w", err)
		}
	}
	k := outboxKey(seq)
	v := append(append(make([]byte, 0, idSize+len(rec)), id[:]...), rec...)
	if err := errors.Join(b.Set(k, d.seal(k, v), nil), b.Commit(durable(ctx))); err != nil {
		return fmt.Errorf("pebblestore: put outbox: %w", err)
	}
	d.outbox.Lock()
	d.outbox.seq[id] = seq
	d.outbox.Unlock()
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
	seq, ok := d.outboxSeqOf(id)
	if !ok {
		return nil
	}
	b := d.db.NewBatch()
	defer b.Close()
	if err := errors.Join(b.Delete(outboxKey(seq), nil), b.Delete(idKey, nil), b.Commit(pebble.NoSync)); err != nil {
		return fmt.Errorf("pebblestore: delete outbox: %w", err)
	}
	d.outbox.Lock()
	delete(d.outbox.seq, id)
	d.outbox.Unlock()
	return nil
}

// outboxHead returns the smallest sequence number in the outbox, or one
// past the last one given out if it is empty. Listing starts there rather
// than at the first outbox key: the outbox is a queue, and the entries
// sent and deleted before its head leave tombstones that every listing
// would step over until a compaction drops them (5 % of the CPU of a
// message in BenchmarkClientToClientPipelined went to that). An
// entry whose put has not returned yet may be missed, as it could be
// before: its commit may not be visible either.
func (d *DB) outboxHead() uint64 {
	d.outbox.Lock()
	defer d.outbox.Unlock()
	head := d.outboxSeq.Load() + 1
	for _, seq := range d.outbox.seq {
		head = min(head, seq)
	}
	return head
}

// ListOutbox implements [store.OutboxStore].
func (d *DB) ListOutbox(ctx context.Context, fn func(id [16]byte, rec []byte) error) error {
	lower := outboxKey(d.outboxHead())
	return d.iterate(ctx, "list outbox", lower, prefixEnd([]byte{tOutbox}), func(_, v []byte) error {
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
	k := d.seenKey(sender, id)
	switch _, err := d.get(k); err {
	case nil:
		return true, nil
	case errMissing:
		// Only MarkSeen writes this key: until it does, it stays absent,
		// and MarkSeen need not look it up again.
		d.unseen.Put(string(k), struct{}{})
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
	if _, absent := d.unseen.Take(string(k)); !absent {
		switch _, err := d.get(k); err {
		case nil:
			return true, nil
		case errMissing:
		default:
			return false, fmt.Errorf("pebblestore: mark seen: %w", err)
		}
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
