package pebblestore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/relay/store"
)

var (
	_ store.Queues  = (*DB)(nil)
	_ store.Devices = (*DB)(nil)

	_ store.OrderedPutter = (*DB)(nil)
)

func beUint64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

// queueCounters returns q's counters as this batch has them.
func (w *writer) queueCounters(q store.QueueID) (counters, error) {
	if c, ok := w.counters[q]; ok {
		return c, nil
	}
	if c, ok := w.d.counters[q]; ok {
		return c, nil
	}
	v, ok, err := w.get(queueKey(tCounter, q))
	if err != nil || !ok {
		return counters{}, err
	}
	return decodeCounters(v)
}

// setCounters writes q's counters.
func (w *writer) setCounters(q store.QueueID, c counters) {
	w.set(queueKey(tCounter, q), c.encode())
	w.counters[q] = c
}

// decref drops one reference to a body, deleting it with the last.
func (w *writer) decref(bodyID uint64) error {
	if bodyID == 0 {
		return nil // inline
	}
	rk := bodyKey(tRefs, bodyID)
	v, ok, err := w.get(rk)
	if err != nil {
		return err
	}
	if ok && len(v) != 4 {
		return fmt.Errorf("%w: reference count of %d bytes", errCorrupt, len(v))
	}
	if !ok || binary.BigEndian.Uint32(v) <= 1 {
		w.del(rk)
		w.del(bodyKey(tBody, bodyID))
		return nil
	}
	w.set(rk, binary.BigEndian.AppendUint32(nil, binary.BigEndian.Uint32(v)-1))
	return nil
}

// Put implements store.Queues.
func (d *DB) Put(ctx context.Context, body []byte, entries []store.Entry) ([]store.PutResult, error) {
	return d.StartPut(ctx, body, entries)()
}

// StartPut implements store.OrderedPutter: the Put takes its place in the
// committer's request channel before StartPut returns.
func (d *DB) StartPut(ctx context.Context, body []byte, entries []store.Entry) func() ([]store.PutResult, error) {
	var (
		results []store.PutResult
		err     error
		r       *request
		o       = &putOp{body: body, entries: entries}
	)
	if len(entries) == 0 {
		results = []store.PutResult{}
	} else if r, err = d.enqueue(ctx, o); err != nil {
		err = fmt.Errorf("pebblestore: put: %w", err)
	}
	return func() ([]store.PutResult, error) {
		if r != nil {
			if werr := r.wait(ctx); werr != nil {
				err = fmt.Errorf("pebblestore: put: %w", werr)
			} else {
				results = o.results
			}
			r = nil
		}
		return results, err
	}
}

type putOp struct {
	body    []byte
	entries []store.Entry
	results []store.PutResult
}

func (*putOp) durable() bool { return true }

// queueDelta is what a Put adds to one queue.
type queueDelta struct {
	q        store.QueueID
	c        counters
	messages int64
	bytes    int64
}

func (o *putOp) apply(w *writer) error {
	d := w.d
	results := make([]store.PutResult, len(o.entries))
	var (
		deltas []*queueDelta
		byQ    = make(map[store.QueueID]*queueDelta)
		seen   = make(map[queueMsg]bool) // new in this Put
		fresh  int64
	)
	for i, e := range o.entries {
		if seen[queueMsg{e.Queue, e.ID}] {
			results[i].Duplicate = true
			continue
		}
		exists, err := w.hasIdem(idemKey(e.Queue, e.ID))
		if err != nil {
			return err
		}
		if exists {
			results[i].Duplicate = true
			continue
		}
		seen[queueMsg{e.Queue, e.ID}] = true
		qd := byQ[e.Queue]
		if qd == nil {
			c, err := w.queueCounters(e.Queue)
			if err != nil {
				return err
			}
			qd = &queueDelta{q: e.Queue, c: c}
			byQ[e.Queue] = qd
			deltas = append(deltas, qd)
		}
		qd.messages++
		qd.bytes += int64(len(e.Header)) + int64(len(o.body))
		fresh++
	}
	for _, qd := range deltas {
		if qd.c.messages+qd.messages > int64(d.opts.MaxQueueMessages) || qd.c.bytes+qd.bytes > d.opts.MaxQueueBytes {
			d.m.queueFull.Add(1)
			return &store.QueueFullError{Queue: qd.q, Messages: int(qd.c.messages), Bytes: qd.c.bytes}
		}
	}
	o.results = results
	if fresh == 0 {
		d.m.duplicate.Add(int64(len(o.entries)))
		return nil
	}
	// Validated: from here on, write.
	now := d.opts.Now()
	var bodyID uint64 // 0: inline in the one entry
	if fresh > 1 {
		d.lastBodyID++
		bodyID = d.lastBodyID
		w.set(bodyKey(tBody, bodyID), o.body)
		w.set(bodyKey(tRefs, bodyID), binary.BigEndian.AppendUint32(nil, uint32(fresh)))
	}
	for i, e := range o.entries {
		if results[i].Duplicate {
			continue
		}
		qd := byQ[e.Queue]
		qd.c.lastSeq++
		cur := makeCursor(e.Priority, qd.c.lastSeq)
		expires := e.Expires
		if expires.IsZero() {
			expires = now.Add(d.opts.DefaultRetention)
		}
		en := entry{
			id:      e.ID,
			stored:  timeKey(now),
			expires: timeKey(expires),
			bodyID:  bodyID,
			bodyLen: uint32(len(o.body)),
			header:  e.Header,
		}
		if bodyID == 0 {
			en.inline = o.body
		}
		results[i].Cursor, results[i].Stored = cur, timeOf(en.stored)
		w.set(entryKey(e.Queue, cur), en.encode())
		w.set(idemKey(e.Queue, e.ID), idem{cursor: cur, etime: en.expires}.encode())
		w.set(expiryKey(en.expires, e.Queue, cur), e.ID[:])
	}
	for _, qd := range deltas {
		qd.c.messages += qd.messages
		qd.c.bytes += qd.bytes
		w.setCounters(qd.q, qd.c)
	}
	d.m.stored.Add(fresh)
	d.m.duplicate.Add(int64(len(o.entries)) - fresh)
	return nil
}

type queueMsg struct {
	q  store.QueueID
	id [16]byte
}

// Fetch implements store.Queues. It reads from one snapshot, so entries and
// their bodies are consistent even while acknowledgements run.
func (d *DB) Fetch(ctx context.Context, q store.QueueID, after store.Cursor, limit int) ([]store.Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, nil
	}
	snap := d.pdb.NewSnapshot()
	defer snap.Close()
	now := timeKey(d.opts.Now())
	start := entryKey(q, after)
	var (
		msgs    []store.Message
		bodyIDs []uint64
	)
	err := scanIter(snap.NewIter, start, prefixEnd(queueKey(tQueue, q)), func(k, v []byte) (bool, error) {
		if bytes.Equal(k, start) {
			return true, nil // strictly after
		}
		e, err := decodeEntry(v)
		if err != nil {
			return false, err
		}
		if e.expires < now {
			return true, nil
		}
		var m store.Message
		m.Queue = q
		copy(m.Key[:], k[1+queueIDLen:])
		m.ID = e.id
		m.Priority = cursorPriority(m.Key)
		m.Stored = timeOf(e.stored)
		m.Expires = timeOf(e.expires)
		m.Header = e.header
		m.Body = e.inline
		if e.bodyID == 0 && m.Body == nil {
			m.Body = []byte{}
		}
		msgs = append(msgs, m)
		bodyIDs = append(bodyIDs, e.bodyID)
		return len(msgs) < limit, nil
	})
	if err != nil {
		return nil, fmt.Errorf("pebblestore: fetch %s: %w", q, err)
	}
	bodies := make(map[uint64][]byte)
	for i, id := range bodyIDs {
		if id == 0 {
			continue // inline
		}
		b, ok := bodies[id]
		if !ok {
			v, c, err := snap.Get(bodyKey(tBody, id))
			if errors.Is(err, pebble.ErrNotFound) {
				return nil, fmt.Errorf("pebblestore: fetch %s: body %d: %w", q, id, errCorrupt)
			}
			if err != nil {
				return nil, fmt.Errorf("pebblestore: fetch %s: %w", q, err)
			}
			b = bytes.Clone(v)
			if b == nil {
				b = []byte{}
			}
			c.Close()
			bodies[id] = b
		}
		msgs[i].Body = b
	}
	return msgs, nil
}

// Ack implements store.Queues.
func (d *DB) Ack(ctx context.Context, q store.QueueID, key store.Cursor) error {
	if err := d.submit(ctx, &ackOp{q: q, key: key}); err != nil {
		return fmt.Errorf("pebblestore: ack: %w", err)
	}
	return nil
}

type ackOp struct {
	q   store.QueueID
	key store.Cursor
}

// Acknowledgements are not synced on their own: one lost in a crash is a
// redelivery, which clients de-duplicate.
func (*ackOp) durable() bool { return false }

func (o *ackOp) apply(w *writer) error {
	ek := entryKey(o.q, o.key)
	v, ok, err := w.get(ek)
	if err != nil || !ok {
		return err
	}
	e, err := decodeEntry(v)
	if err != nil {
		return err
	}
	c, err := w.queueCounters(o.q)
	if err != nil {
		return err
	}
	if err := w.removeEntry(o.q, o.key, e, c); err != nil {
		return err
	}
	// Keep the ID for the dedup window (within the retention), re-filed in
	// the expiry index under the new time.
	ik := idemKey(o.q, e.id)
	w.del(expiryKey(e.expires, o.q, o.key))
	if win := w.d.opts.DedupWindow; win < 0 {
		w.del(ik)
	} else {
		t := min(e.expires, timeKey(w.d.opts.Now().Add(win)))
		w.set(ik, idem{cursor: o.key, etime: t}.encode())
		w.set(expiryKey(t, o.q, o.key), e.id[:])
	}
	w.d.m.acked.Add(1)
	return nil
}

// removeEntry deletes a queued entry, its body reference and its share of
// the counters c (which it writes back). The 'i' and 'e' records are the
// caller's.
func (w *writer) removeEntry(q store.QueueID, key store.Cursor, e entry, c counters) error {
	if err := w.decref(e.bodyID); err != nil {
		return err
	}
	w.del(entryKey(q, key))
	c.messages = max(c.messages-1, 0)
	c.bytes = max(c.bytes-e.size(), 0)
	w.setCounters(q, c)
	return nil
}

// Depth implements store.Queues.
func (d *DB) Depth(ctx context.Context, q store.QueueID) (int, int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	v, c, err := d.pdb.Get(queueKey(tCounter, q))
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("pebblestore: depth %s: %w", q, err)
	}
	defer c.Close()
	cs, err := decodeCounters(v)
	if err != nil {
		return 0, 0, fmt.Errorf("pebblestore: depth %s: %w", q, err)
	}
	return int(cs.messages), cs.bytes, nil
}

// sweepChunk bounds the index records one sweep batch handles, so that a
// large expiry does not hold up Puts behind one huge batch.
const sweepChunk = 1024

// Sweep implements store.Queues.
func (d *DB) Sweep(ctx context.Context, now time.Time) (int, error) {
	total := 0
	for {
		o := &sweepOp{now: timeKey(now)}
		if err := d.submit(ctx, o); err != nil {
			return total, fmt.Errorf("pebblestore: sweep: %w", err)
		}
		total += o.deleted
		if o.scanned < sweepChunk {
			return total, nil
		}
	}
}

type sweepOp struct {
	now              uint64
	scanned, deleted int
}

func (*sweepOp) durable() bool { return false }

func (o *sweepOp) apply(w *writer) error {
	type rec struct{ k, id []byte }
	var recs []rec
	upper := binary.BigEndian.AppendUint64([]byte{tExpiry}, o.now)
	err := w.scan([]byte{tExpiry}, upper, func(k, v []byte) (bool, error) {
		if len(k) != 1+8+queueIDLen+cursorLen || len(v) != 16 {
			return false, fmt.Errorf("%w: expiry record", errCorrupt)
		}
		recs = append(recs, rec{k, v})
		return len(recs) < sweepChunk, nil
	})
	if err != nil {
		return err
	}
	o.scanned = len(recs)
	for _, r := range recs {
		q := parseQueueID(r.k[9:])
		var key store.Cursor
		copy(key[:], r.k[9+queueIDLen:])
		var id [16]byte
		copy(id[:], r.id)
		v, ok, err := w.get(entryKey(q, key))
		if err != nil {
			return err
		}
		if ok {
			e, err := decodeEntry(v)
			if err != nil {
				return err
			}
			c, err := w.queueCounters(q)
			if err != nil {
				return err
			}
			if err := w.removeEntry(q, key, e, c); err != nil {
				return err
			}
			o.deleted++
		}
		w.del(idemKey(q, id))
		w.del(r.k)
	}
	w.d.m.expired.Add(int64(o.deleted))
	return nil
}

// PurgeDevice implements store.Queues and store.Devices: it removes the
// device's queue, idempotency and expiry records, counters and push
// endpoint, so afterwards no key or value of the database names the
// device.
func (d *DB) PurgeDevice(ctx context.Context, q store.QueueID) error {
	if err := d.submit(ctx, &purgeOp{prefix: putQueueID(nil, q)}); err != nil {
		return fmt.Errorf("pebblestore: purge %s: %w", q, err)
	}
	return nil
}

// PurgeAccount implements store.Queues and store.Devices: it removes the
// account's access key hash and, for every device of it, what PurgeDevice
// removes, so afterwards no key or value of the database names the account.
func (d *DB) PurgeAccount(ctx context.Context, account crypto.AccountID) error {
	if err := d.submit(ctx, &purgeOp{prefix: account[:], account: true}); err != nil {
		return fmt.Errorf("pebblestore: purge %s: %w", account, err)
	}
	return nil
}

// purgeOp deletes everything under an account or queue prefix.
type purgeOp struct {
	prefix  []byte // account(20) or account(20) device(4)
	account bool
}

// Purges are synced: they are how an account deletion is honoured.
func (*purgeOp) durable() bool { return true }

func (o *purgeOp) apply(w *writer) error {
	under := func(t byte) (lo, hi []byte) {
		lo = append([]byte{t}, o.prefix...)
		return lo, prefixEnd(lo)
	}
	// Idempotency records lead to the expiry index keys.
	lo, hi := under(tIdem)
	err := w.scan(lo, hi, func(k, v []byte) (bool, error) {
		iv, err := decodeIdem(v)
		if err != nil {
			return false, err
		}
		w.del(expiryKey(iv.etime, parseQueueID(k[1:]), iv.cursor))
		w.del(k)
		return true, nil
	})
	if err != nil {
		return err
	}
	lo, hi = under(tQueue)
	err = w.scan(lo, hi, func(k, v []byte) (bool, error) {
		e, err := decodeEntry(v)
		if err != nil {
			return false, err
		}
		if err := w.decref(e.bodyID); err != nil {
			return false, err
		}
		w.del(k)
		return true, nil
	})
	if err != nil {
		return err
	}
	lo, hi = under(tCounter)
	err = w.scan(lo, hi, func(k, _ []byte) (bool, error) {
		w.del(k)
		// The queue starts again from nothing, sequence numbers included.
		w.counters[parseQueueID(k[1:])] = counters{}
		return true, nil
	})
	if err != nil {
		return err
	}
	lo, hi = under(tPush)
	err = w.scan(lo, hi, func(k, _ []byte) (bool, error) {
		w.del(k)
		return true, nil
	})
	if err != nil {
		return err
	}
	if o.account {
		w.del(append([]byte{tAccess}, o.prefix...))
	}
	return nil
}
