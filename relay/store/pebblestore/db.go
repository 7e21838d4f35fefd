// Package pebblestore implements the relay's queue and device stores
// ([store.Queues], [store.Devices]) over one Pebble database.
//
// # Writes: one committer, group commit
//
// Every mutation (Put, Ack, Sweep, purges, device records) is a request
// handed to a single committer goroutine, which applies each request, as it
// arrives, to the batch it is building (an indexed batch, so each request
// sees the writes of those before it: counters, sequence numbers, reference
// counts and idempotency records are read-modify-written without locks and
// without races between concurrent Puts of the same message ID). A request
// that fails validation (a full queue) writes nothing and is answered at
// once. As soon as no earlier batch is waiting for its fsync, the committer
// applies its batch with a WAL sync and hands the wait to a second
// goroutine, which answers the batch's requests once the sync is done; the
// next batch fills while that sync runs. So under load one fsync serves
// every Put that arrived during the previous one, and building a batch
// overlaps the previous sync. Put and purges are answered only after their
// sync. Acknowledgements and sweeps alone are applied without forcing one:
// losing one in a crash only means a redelivery, which clients de-duplicate
// by message ID.
//
// Pebble's own WAL group commit (one synced batch per Put, see
// BenchmarkPebbleSync) would share fsyncs too, but every Put
// read-modify-writes shared records (queue counters, body reference counts,
// the idempotency index), which would then need a lock held across the
// sync, or in-memory state with a protocol for concurrent Puts of the same
// message ID and for failed commits. The single committer needs neither.
// Its cost: all of a batch's reads and memtable inserts run on one
// goroutine. BenchmarkPebbleSyncRecords writes the same records as a
// one-recipient Put, one synced batch per Put with no reads at all (an upper
// bound for that design); on a shared 2-core machine it measured 1.3-1.8
// times BenchmarkPut's rate with 64 writers, in the same sitting. Two
// variants of the committer were also measured and found no faster: one
// that waits for each sync itself before building the next batch, and one
// that applies every batch at once (ApplyNoSyncWait) with any number of
// syncs in flight.
//
// Reads (Fetch, Depth, device records) go straight to Pebble.
//
// # Layout
//
// See keys.go. Each queue keeps its message and byte counts and its last
// sequence number in one record updated in the same batch as its entries, so
// Depth is one point read and the counts are right after a crash or reopen.
// A Put stores its body once: inline in the entry when one entry references
// it, else as a shared record with a reference count decremented by each
// acknowledgement, expiry or purge of an entry; a shared body goes with its
// last reference.
package pebblestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sotto-im/sotto/relay/store"
)

// Defaults for Options.
const (
	DefaultMaxQueueMessages = 10_000
	DefaultMaxQueueBytes    = 64 << 20
	DefaultRetention        = 30 * 24 * time.Hour
	DefaultDedupWindow      = 24 * time.Hour
	DefaultCacheSize        = 64 << 20
	DefaultMemTableSize     = 32 << 20
)

// ErrClosed is returned by operations on a closed DB.
var ErrClosed = errors.New("pebblestore: closed")

// ErrFailed is wrapped by every write after a write to the database failed.
// Pebble's write-ahead log does not recover from a failed write or sync
// (what was applied before it may or may not be on disk), so neither does
// the DB: it keeps serving reads, refuses writes, and must be closed and
// reopened (which replays what reached the disk) once the cause is fixed.
var ErrFailed = errors.New("pebblestore: store failed")

// Options configure Open. The zero value is usable.
type Options struct {
	// FS is the filesystem Pebble runs on; nil means the operating system's.
	// Tests pass vfs.NewMem() or a fault-injecting FS.
	FS vfs.FS
	// MaxQueueMessages and MaxQueueBytes are each queue's quota (defaults
	// DefaultMaxQueueMessages, DefaultMaxQueueBytes). Bytes count each
	// entry's header plus the full body it references.
	MaxQueueMessages int
	MaxQueueBytes    int64
	// DefaultRetention is applied to entries with a zero Expires.
	DefaultRetention time.Duration
	// DedupWindow is how long after an acknowledgement the message ID is
	// still remembered, so a late retry of the same send is not delivered
	// again (default DefaultDedupWindow; never longer than the message's
	// own retention). A negative value forgets IDs at acknowledgement.
	DedupWindow time.Duration
	// CacheSize is Pebble's block cache size (default DefaultCacheSize).
	CacheSize int64
	// MemTableSize is Pebble's memtable size (default DefaultMemTableSize).
	// Most messages are acknowledged soon after they are stored; a larger
	// memtable lets a message and its deletion meet there and never reach
	// an sstable.
	MemTableSize int64
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Registerer, when set, receives the store's Prometheus metrics.
	Registerer prometheus.Registerer
	// Logf, when set, receives Pebble's error messages (informational ones
	// are dropped).
	Logf func(format string, args ...any)

	// idemFilterKeys overrides minIdemFilterKeys (tests: a small filter
	// that must grow).
	idemFilterKeys int
}

// DB is the Pebble-backed queue and device store. It is safe for concurrent
// use.
type DB struct {
	pdb  *pebble.DB
	opts Options
	m    *metrics

	reqs   chan *request
	syncq  chan *group   // at most one group in flight
	synced chan struct{} // the syncer finished a group
	wg     sync.WaitGroup

	closeMu struct {
		sync.RWMutex
		closed bool
	}

	failed atomic.Pointer[error] // first write failure, sticky

	// Owned by the committer goroutine.
	lastBodyID uint64
	// counters caches queue counters as committed (applied), so that a Put
	// does not read them back from the LSM; it is dropped if a batch fails.
	counters map[store.QueueID]counters
	// idem holds every idempotency key, and more (see idemFilter).
	idem *idemFilter
}

// maxCachedCounters bounds the counter cache; it is emptied when full.
const maxCachedCounters = 1 << 16

// request is one mutation waiting for the committer.
type request struct {
	op   op
	done chan error // buffered 1
}

// op is a mutation applied by the committer. apply reads through w and
// writes into w's batch; when it returns an error it must have written
// nothing.
type op interface {
	apply(w *writer) error
	durable() bool // must be synced before it is answered
}

// group is a batch applied to Pebble whose WAL sync is still to be awaited.
type group struct {
	b    *pebble.Batch // nil: nothing written; answer after earlier groups
	reqs []*request
}

// maxGroup bounds the requests merged into one batch.
const maxGroup = 512

type pebbleLogger struct{ logf func(string, ...any) }

func (l pebbleLogger) Infof(string, ...any) {}
func (l pebbleLogger) Errorf(format string, args ...any) {
	if l.logf != nil {
		l.logf("pebblestore: "+format, args...)
	}
}
func (l pebbleLogger) Fatalf(format string, args ...any) {
	pebble.DefaultLogger.Fatalf(format, args...)
}

// Open opens (creating if needed) the store in dir.
func Open(dir string, opts Options) (*DB, error) {
	if opts.MaxQueueMessages <= 0 {
		opts.MaxQueueMessages = DefaultMaxQueueMessages
	}
	if opts.MaxQueueBytes <= 0 {
		opts.MaxQueueBytes = DefaultMaxQueueBytes
	}
	if opts.DefaultRetention <= 0 {
		opts.DefaultRetention = DefaultRetention
	}
	if opts.DedupWindow == 0 {
		opts.DedupWindow = DefaultDedupWindow
	}
	if opts.CacheSize <= 0 {
		opts.CacheSize = DefaultCacheSize
	}
	if opts.MemTableSize <= 0 {
		opts.MemTableSize = DefaultMemTableSize
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	po := &pebble.Options{
		FS:                 opts.FS,
		Logger:             pebbleLogger{opts.Logf},
		FormatMajorVersion: pebble.FormatNewest,
		CacheSize:          opts.CacheSize,
		MemTableSize:       uint64(opts.MemTableSize),
	}
	// Every Put looks up message IDs that are almost never there; Bloom
	// filters answer those misses without reading blocks.
	for i := range po.Levels {
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	pdb, err := pebble.Open(dir, po)
	if err != nil {
		return nil, fmt.Errorf("pebblestore: open %s: %w", dir, err)
	}
	d := &DB{
		pdb:    pdb,
		opts:   opts,
		reqs:   make(chan *request, 1024),
		syncq:  make(chan *group, 1),
		synced: make(chan struct{}, 1),

		counters: make(map[store.QueueID]counters),
	}
	if d.lastBodyID, err = d.recoverLastBodyID(); err != nil {
		pdb.Close()
		return nil, err
	}
	if opts.idemFilterKeys <= 0 {
		opts.idemFilterKeys = minIdemFilterKeys
	}
	if d.idem, err = d.buildIdemFilter(opts.idemFilterKeys); err != nil {
		pdb.Close()
		return nil, err
	}
	if d.m, err = newMetrics(opts.Registerer); err != nil {
		pdb.Close()
		return nil, err
	}
	d.wg.Add(2)
	go d.runCommitter()
	go d.runSyncer()
	return d, nil
}

// recoverLastBodyID finds the highest body ID in use, so new bodies never
// reuse the ID of one still referenced.
func (d *DB) recoverLastBodyID() (uint64, error) {
	var last uint64
	for _, t := range []byte{tBody, tRefs} {
		it, err := d.pdb.NewIter(&pebble.IterOptions{LowerBound: []byte{t}, UpperBound: []byte{t + 1}})
		if err != nil {
			return 0, fmt.Errorf("pebblestore: open: %w", err)
		}
		if it.Last() && len(it.Key()) == 9 {
			last = max(last, beUint64(it.Key()[1:]))
		}
		if err := it.Close(); err != nil {
			return 0, fmt.Errorf("pebblestore: open: %w", err)
		}
	}
	return last, nil
}

// Close stops accepting requests, finishes those already taken, and closes
// the database.
func (d *DB) Close() error {
	d.closeMu.Lock()
	if d.closeMu.closed {
		d.closeMu.Unlock()
		return ErrClosed
	}
	d.closeMu.closed = true
	close(d.reqs)
	d.closeMu.Unlock()
	d.wg.Wait()
	if err := d.pdb.Close(); err != nil {
		return fmt.Errorf("pebblestore: close: %w", err)
	}
	return nil
}

// submit hands o to the committer and waits for its outcome. If ctx ends
// first the outcome is unknown to the caller (the op may still be applied).
func (d *DB) submit(ctx context.Context, o op) error {
	r, err := d.enqueue(ctx, o)
	if err != nil {
		return err
	}
	return r.wait(ctx)
}

// enqueue hands o to the committer and returns once it is in the request
// channel: the committer applies requests in channel order, so ops enqueued
// one after another by one goroutine are applied (and get their sequence
// numbers) in that order.
func (d *DB) enqueue(ctx context.Context, o op) (*request, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r := &request{op: o, done: make(chan error, 1)}
	d.closeMu.RLock()
	defer d.closeMu.RUnlock()
	if d.closeMu.closed {
		return nil, ErrClosed
	}
	select {
	case d.reqs <- r:
		return r, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// wait waits for the outcome of an enqueued request.
func (r *request) wait(ctx context.Context) error {
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// runCommitter applies requests as they arrive to the batch being built and
// commits that batch as soon as no earlier sync is in flight: while one batch
// waits for its fsync, the next one fills up, so the number of Puts sharing
// an fsync grows with the load, and building a batch overlaps the previous
// sync.
func (d *DB) runCommitter() {
	defer d.wg.Done()
	defer close(d.syncq)
	var (
		cur      *pending
		inflight bool // a synced batch is waiting for its fsync
		reqs     = d.reqs
	)
	for {
		if cur != nil && !inflight {
			if d.flush(cur) {
				inflight = true
			}
			cur = nil
		}
		if reqs == nil && cur == nil && !inflight {
			return
		}
		var full <-chan *request = reqs
		if cur != nil && len(cur.reqs) >= maxGroup {
			full = nil // stop taking requests until the batch can go
		}
		select {
		case r, ok := <-full:
			if !ok {
				reqs = nil
				continue
			}
			if cur == nil {
				cur = d.newPending()
			}
			cur.add(r)
		case <-d.synced:
			inflight = false
		}
	}
}

// pending is the batch being built.
type pending struct {
	w       *writer
	reqs    []*request
	durable bool
}

func (d *DB) newPending() *pending {
	if d.idem.outgrown() {
		// Every earlier batch is applied: the database holds every key.
		// If the scan fails, the old filter is still right, only fuller.
		if f, err := d.buildIdemFilter(2 * d.idem.capacity); err == nil {
			d.idem = f
		} else if d.opts.Logf != nil {
			d.opts.Logf("pebblestore: %v", err)
		}
	}
	return &pending{w: &writer{
		d:        d,
		b:        d.pdb.NewIndexedBatch(),
		counters: make(map[store.QueueID]counters),
		idem:     make(map[string]bool),
	}}
}

// add applies r to the batch, or answers it at once if it fails.
func (p *pending) add(r *request) {
	if err := p.w.d.failure(); err != nil {
		r.done <- err
		return
	}
	if err := r.op.apply(p.w); err != nil {
		r.done <- err
		return
	}
	p.reqs = append(p.reqs, r)
	p.durable = p.durable || r.op.durable()
}

// flush commits p and reports whether a sync is now in flight (the syncer
// will signal d.synced when it is done).
func (d *DB) flush(p *pending) bool {
	b, w := p.w.b, p.w
	if len(p.reqs) == 0 {
		b.Close()
		return false
	}
	d.m.groupSize.Observe(float64(len(p.reqs)))
	d.m.batches.Add(1)
	switch {
	case b.Empty() && !p.durable:
		b.Close()
		answer(p.reqs, nil)
		return false
	case b.Empty():
		// Nothing to write, but what the answer relies on (an earlier
		// Put of the same message) may still be waiting for its sync:
		// answer after it, in order.
		b.Close()
		d.syncq <- &group{reqs: p.reqs}
		return true
	case d.failure() != nil:
		// A write failed after these requests were applied to the batch
		// (the previous batch's sync): Pebble's log is broken, and
		// writing to it again can panic (a memtable rotation closes the
		// failed log). Refuse the batch as if its write had failed.
		err := d.failure()
		d.applied(w, err)
		b.Close()
		answer(p.reqs, err)
		return false
	case !p.durable:
		err := wrapErr("apply", d.pdb.Apply(b, pebble.NoSync))
		d.applied(w, err)
		d.fail(err)
		b.Close()
		answer(p.reqs, err)
		return false
	}
	err := wrapErr("commit", d.pdb.ApplyNoSyncWait(b, pebble.Sync))
	d.applied(w, err)
	if err != nil {
		d.fail(err)
		b.Close()
		answer(p.reqs, err)
		return false
	}
	d.syncq <- &group{b: b, reqs: p.reqs}
	return true
}

// fail records the first write failure; nil is ignored.
func (d *DB) fail(err error) {
	if err != nil {
		d.failed.CompareAndSwap(nil, &err)
	}
}

// failure returns the error refusing writes, or nil.
func (d *DB) failure() error {
	if p := d.failed.Load(); p != nil {
		return fmt.Errorf("%w: %w", ErrFailed, *p)
	}
	return nil
}

// Failed reports the write failure that put the DB in its failed state
// (wrapping ErrFailed), or nil: for readiness checks.
func (d *DB) Failed() error { return d.failure() }

// applied updates the counter cache after a batch was applied (err == nil)
// or refused.
func (d *DB) applied(w *writer, err error) {
	if err != nil || len(d.counters)+len(w.counters) > maxCachedCounters {
		clear(d.counters)
		if err != nil {
			return
		}
	}
	for q, c := range w.counters {
		d.counters[q] = c
	}
}

// runSyncer waits for the WAL sync of each applied group, in order, answers
// its requests, and tells the committer.
func (d *DB) runSyncer() {
	defer d.wg.Done()
	for g := range d.syncq {
		var err error
		if g.b != nil {
			start := time.Now()
			err = wrapErr("sync", g.b.SyncWait())
			d.m.syncSeconds.Observe(time.Since(start).Seconds())
			g.b.Close()
			d.fail(err)
		}
		if err == nil {
			// A group without a batch (duplicates only) relies on earlier
			// syncs, which must all have succeeded.
			err = d.failure()
		}
		answer(g.reqs, err)
		d.synced <- struct{}{}
	}
}

func answer(reqs []*request, err error) {
	for _, r := range reqs {
		r.done <- err
	}
}

func wrapErr(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("pebblestore: %s: %w", what, err)
}

// writer gives ops read-your-writes access to the batch being built.
type writer struct {
	d        *DB
	b        *pebble.Batch
	counters map[store.QueueID]counters // written in this batch
	idem     map[string]bool            // idempotency keys set (true) or deleted in this batch
}

// get returns a copy of the value at k, or nil, false.
func (w *writer) get(k []byte) ([]byte, bool, error) {
	v, c, err := w.b.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("pebblestore: get: %w", err)
	}
	v = bytes.Clone(v)
	if v == nil {
		v = []byte{}
	}
	return v, true, c.Close()
}

func (w *writer) set(k, v []byte) {
	if k[0] == tIdem {
		w.idem[string(k)] = true
		w.d.idem.add(k)
	}
	_ = w.b.Set(k, v, nil)
}

func (w *writer) del(k []byte) {
	if k[0] == tIdem {
		w.idem[string(k)] = false
	}
	_ = w.b.Delete(k, nil)
}

// hasIdem reports whether idempotency key k exists. Every earlier batch is
// already applied to the database (visible, if perhaps not yet synced), so
// the database plus this batch's own writes is the whole truth; a plain
// database read is much cheaper than one through the indexed batch, and
// this lookup is made for every entry of every Put. The filter (d.idem)
// answers most of them, the new message IDs, without a read at all.
func (w *writer) hasIdem(k []byte) (bool, error) {
	if set, ok := w.idem[string(k)]; ok {
		return set, nil
	}
	if !w.d.idem.mayContain(k) {
		return false, nil
	}
	_, c, err := w.d.pdb.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("pebblestore: get: %w", err)
	}
	return true, c.Close()
}

// scan calls fn with a copy of each key and value in [lower, upper) as seen
// by the batch (batch writes over the database), stopping early when fn
// returns false.
func (w *writer) scan(lower, upper []byte, fn func(k, v []byte) (bool, error)) error {
	return scanIter(func(o *pebble.IterOptions) (*pebble.Iterator, error) { return w.b.NewIter(o) }, lower, upper, fn)
}

// scan is writer.scan over the committed database.
func (d *DB) scan(lower, upper []byte, fn func(k, v []byte) (bool, error)) error {
	return scanIter(d.pdb.NewIter, lower, upper, fn)
}

func scanIter(newIter func(*pebble.IterOptions) (*pebble.Iterator, error), lower, upper []byte, fn func(k, v []byte) (bool, error)) (err error) {
	it, err := newIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return fmt.Errorf("pebblestore: iterate: %w", err)
	}
	defer func() {
		if cerr := it.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("pebblestore: iterate: %w", cerr)
		}
	}()
	for valid := it.First(); valid; valid = it.Next() {
		v, verr := it.ValueAndErr()
		if verr != nil {
			return fmt.Errorf("pebblestore: iterate: %w", verr)
		}
		more, ferr := fn(bytes.Clone(it.Key()), bytes.Clone(v))
		if ferr != nil || !more {
			return ferr
		}
	}
	return nil
}

// Stats are counts for tests and operators.
type Stats struct {
	Bodies    int   // bodies stored, shared or inline (scanned)
	BodyBytes int64 // their total size (scanned)
	Batches   int64 // batches committed since Open
	Stored    int64 // entries stored since Open
	Duplicate int64 // entries refused as duplicates since Open
	QueueFull int64 // Puts refused for a full queue since Open
	Acked     int64 // entries deleted by Ack since Open
	Expired   int64 // entries deleted by Sweep since Open
}

// Stats scans the bodies (cost proportional to their number) and returns
// them with the counters.
func (d *DB) Stats() (Stats, error) {
	s := Stats{
		Batches:   d.m.batches.Load(),
		Stored:    d.m.stored.Load(),
		Duplicate: d.m.duplicate.Load(),
		QueueFull: d.m.queueFull.Load(),
		Acked:     d.m.acked.Load(),
		Expired:   d.m.expired.Load(),
	}
	err := d.scan([]byte{tBody}, []byte{tBody + 1}, func(_, v []byte) (bool, error) {
		s.Bodies++
		s.BodyBytes += int64(len(v))
		return true, nil
	})
	if err != nil {
		return s, err
	}
	err = d.scan([]byte{tQueue}, []byte{tQueue + 1}, func(_, v []byte) (bool, error) {
		e, err := decodeEntry(v)
		if err != nil {
			return false, err
		}
		if e.bodyID == 0 {
			s.Bodies++
			s.BodyBytes += int64(len(e.inline))
		}
		return true, nil
	})
	return s, err
}

// Keys calls fn with every key in the database, in order. It exists for
// tests that check what a purge left behind.
func (d *DB) Keys(fn func(key []byte)) error {
	return d.scan(nil, nil, func(k, _ []byte) (bool, error) {
		fn(k)
		return true, nil
	})
}

// Pebble returns the underlying database, for checkpoints (online backup)
// and metrics. Writing to it directly breaks the store's invariants.
func (d *DB) Pebble() *pebble.DB { return d.pdb }

// metrics holds the Prometheus collectors and the counters behind Stats.
type metrics struct {
	batches, stored, duplicate, queueFull, acked, expired atomic.Int64

	groupSize   prometheus.Histogram
	syncSeconds prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		groupSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "sotto", Subsystem: "relay_store", Name: "commit_group_requests",
			Help:    "Requests merged into one committed batch.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
		syncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "sotto", Subsystem: "relay_store", Name: "sync_seconds",
			Help:    "Time waited for a batch's WAL sync.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 14),
		}),
	}
	if reg == nil {
		return m, nil
	}
	counter := func(name, help string, v *atomic.Int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "sotto", Subsystem: "relay_store", Name: name, Help: help,
		}, func() float64 { return float64(v.Load()) })
	}
	for _, c := range []prometheus.Collector{
		m.groupSize, m.syncSeconds,
		counter("batches_total", "Batches committed.", &m.batches),
		counter("entries_stored_total", "Queue entries stored.", &m.stored),
		counter("entries_duplicate_total", "Queue entries refused as duplicates of an earlier send.", &m.duplicate),
		counter("queue_full_total", "Puts refused because a queue was full.", &m.queueFull),
		counter("entries_acked_total", "Queue entries deleted by acknowledgement.", &m.acked),
		counter("entries_expired_total", "Queue entries deleted by the expiry sweep.", &m.expired),
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("pebblestore: register metrics: %w", err)
		}
	}
	return m, nil
}
