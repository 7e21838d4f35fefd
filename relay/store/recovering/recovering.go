// Package recovering keeps the relay's store serving across storage faults
// that go away: a full disk that gets space again, a volume that returns
// after an I/O error.
//
// The embedded store (pebblestore) fails for good on its first failed WAL
// write or sync, by design: Pebble cannot tell what of the failed batch
// reached the disk, so the open database is no longer trustworthy, and only
// closing it and opening it again (which replays what the disk holds)
// brings it back. [DB] does that by itself. It wraps the store, and when the
// store reports a failure it waits, with backoff, until a probe file can be
// written and synced in the store's directory, then closes the failed store,
// opens the directory again, makes one durable write through the new store,
// and swaps it in.
//
// What callers see:
//
//   - until the disk is writable again, the failed store keeps serving reads
//     (delivery of what is stored goes on) and refuses writes, as it does on
//     its own;
//   - during the swap, and while a reopen fails, every call fails with an
//     error wrapping [ErrUnavailable] (the relay answers 503 and senders
//     retry);
//   - after the swap, calls go to the new store. Nothing acknowledged is
//     lost: a Put that returned nil was synced, so the reopened store has
//     it. A Put that failed may or may not be there (its sender retries with
//     the same message ID, which the store de-duplicates).
//
// Live connections should be closed on the swap ([Options.OnRecover]): a
// message a connection saw in the failed store's memory may not have
// reached the disk, and the new store may then give its sequence number to
// another message, which that connection would take for one it already
// has. A reconnecting device fetches from the new store and misses nothing.
package recovering

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/relay/store"
)

// ErrUnavailable is wrapped by the errors of calls made while no store is
// open: during a swap, or while reopening fails.
var ErrUnavailable = errors.New("recovering: store unavailable")

// ErrClosed is returned by calls after Close.
var ErrClosed = errors.New("recovering: closed")

// ProbeFile is the name of the file the disk probe writes, syncs and
// removes in the store's directory before a failed store is closed.
const ProbeFile = "RECOVERY-PROBE"

// Defaults for Options.
const (
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = 5 * time.Second
	DefaultDrainWait  = 5 * time.Second
)

// Store is the store DB manages: the relay's queue and device stores in
// one, with a way to tell that it has failed for good.
type Store interface {
	store.Queues
	store.Devices
	// Failed returns the write failure that put the store in a state it
	// cannot leave while open, or nil.
	Failed() error
	Close() error
}

// Options configure Open.
type Options struct {
	// Dir is the store's directory (what Open opens); the disk probe
	// writes ProbeFile in it.
	Dir string
	// FS is the filesystem of Dir; nil means the operating system's.
	FS vfs.FS
	// Open opens the store in Dir. It is called once by [Open] and again
	// for each recovery. If it registers metrics, give it a registerer
	// from [Reregisterer] so that the second registration replaces the
	// first.
	Open func() (Store, error)
	// Probe makes one durable write through a freshly opened store before
	// it is swapped in. Nil means a push-endpoint deletion for a queue of
	// the zero account (an account no real ID can be).
	Probe func(ctx context.Context, s Store) error
	// OnRecover is called after each swap, e.g. to close the relay's live
	// connections (see the package comment).
	OnRecover func()
	// MinBackoff and MaxBackoff bound the wait between recovery attempts,
	// which doubles from one to the other (defaults DefaultMinBackoff,
	// DefaultMaxBackoff).
	MinBackoff, MaxBackoff time.Duration
	// DrainWait bounds how long a recovery waits for the calls in
	// progress in the failed store before it closes it (default
	// DefaultDrainWait). If one is stuck, the recovery puts the failed
	// store back (its reads still work) and tries again later.
	DrainWait time.Duration
	// Logger receives a line when the store fails, on each failed attempt
	// and on recovery; nil discards them.
	Logger *slog.Logger
	// Registerer, when set, receives the wrapper's metrics.
	Registerer prometheus.Registerer
}

// DB is a Store that replaces its failed store by a reopened one. It is
// safe for concurrent use. It implements [store.OrderedPutter] whatever the
// store (by delegation when the store implements it, else by a Put made
// before StartPut returns).
type DB struct {
	opts Options
	log  *slog.Logger

	mu     sync.RWMutex
	cur    *generation // nil during a swap or while reopening fails
	closed bool

	wake chan struct{} // a failure was seen: buffered 1
	stop chan struct{}
	done chan struct{}

	recoveries atomic.Int64
	attempts   atomic.Int64
}

// generation is one opened store and the number of calls using it, which
// its closing waits for.
type generation struct {
	st    Store
	calls atomic.Int64
}

// closeWait bounds Close's wait for the calls in progress.
const closeWait = 10 * time.Second

// idle waits up to max for g's calls to end and reports whether they did.
// g must no longer be current, so that no call starts on it meanwhile.
func (g *generation) idle(max time.Duration) bool {
	deadline := time.Now().Add(max)
	for g.calls.Load() > 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

var (
	_ Store               = (*DB)(nil)
	_ store.OrderedPutter = (*DB)(nil)
)

// Open opens the store with opts.Open and starts watching it.
func Open(opts Options) (*DB, error) {
	if opts.Open == nil {
		return nil, errors.New("recovering: Options.Open is nil")
	}
	if opts.FS == nil {
		opts.FS = vfs.Default
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(DefaultMaxBackoff, opts.MinBackoff)
	}
	if opts.Probe == nil {
		opts.Probe = defaultProbe
	}
	if opts.DrainWait <= 0 {
		opts.DrainWait = DefaultDrainWait
	}
	d := &DB{opts: opts, log: opts.Logger, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if err := d.register(opts.Registerer); err != nil {
		return nil, err
	}
	st, err := opts.Open()
	if err != nil {
		return nil, err
	}
	d.cur = &generation{st: st}
	go d.run()
	return d, nil
}

func defaultProbe(ctx context.Context, s Store) error {
	return s.SetPushEndpoint(ctx, store.QueueID{}, "")
}

func (d *DB) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "sotto", Subsystem: "relay_store", Name: "recoveries_total",
			Help: "Times the relay store was reopened after a storage failure.",
		}, func() float64 { return float64(d.recoveries.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "sotto", Subsystem: "relay_store", Name: "recovery_attempts_total",
			Help: "Recovery attempts that found the disk or the reopened store still failing.",
		}, func() float64 { return float64(d.attempts.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "sotto", Subsystem: "relay_store", Name: "failed",
			Help: "1 while the relay store refuses writes (failed, or being reopened).",
		}, func() float64 {
			if d.Failed() != nil {
				return 1
			}
			return 0
		}),
	} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("recovering: register metrics: %w", err)
		}
	}
	return nil
}

// acquire returns the current generation with a call counted on it; the
// caller must call release(g).
func (d *DB) acquire() (*generation, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return nil, ErrClosed
	}
	g := d.cur
	if g == nil {
		return nil, fmt.Errorf("%w: reopening after a storage failure", ErrUnavailable)
	}
	g.calls.Add(1)
	return g, nil
}

// release ends a call on g; a failed call wakes the recovery loop if the
// store has failed.
func (d *DB) release(g *generation, err error) {
	failed := err != nil && g.st.Failed() != nil
	g.calls.Add(-1)
	if failed {
		d.notify()
	}
}

func (d *DB) notify() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Failed returns nil when the current store is open and healthy, else why
// not (the store's failure, or ErrUnavailable while it is reopened): for
// readiness checks. A failure seen here also starts a recovery.
func (d *DB) Failed() error {
	g, err := d.acquire()
	if err != nil {
		return err
	}
	ferr := g.st.Failed()
	d.release(g, ferr)
	return ferr
}

// Current returns the store now in use, or nil during a swap. It is for
// operations the wrapper does not pass through (backup checkpoints,
// statistics); the store may be closed by a recovery at any time after it
// is returned.
func (d *DB) Current() Store {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.cur == nil {
		return nil
	}
	return d.cur.st
}

// Checkpoint writes a copy of the current store into destDir if the store
// can (it has a Checkpoint(string) error method).
func (d *DB) Checkpoint(destDir string) error {
	g, err := d.acquire()
	if err != nil {
		return fmt.Errorf("recovering: checkpoint: %w", err)
	}
	c, ok := g.st.(interface{ Checkpoint(string) error })
	if !ok {
		d.release(g, nil)
		return errors.New("recovering: checkpoint: the store cannot checkpoint")
	}
	err = c.Checkpoint(destDir)
	d.release(g, err)
	return err
}

// Close stops recovering and closes the current store.
func (d *DB) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return ErrClosed
	}
	d.closed = true
	d.mu.Unlock()
	close(d.stop)
	<-d.done
	d.mu.Lock()
	g := d.cur
	d.cur = nil
	d.mu.Unlock()
	if g == nil {
		return nil
	}
	g.idle(closeWait)
	return g.st.Close()
}

// run waits for failures and recovers from each.
func (d *DB) run() {
	defer close(d.done)
	for {
		select {
		case <-d.stop:
			return
		case <-d.wake:
		}
		d.recover()
	}
}

// recover retries with backoff until the store is healthy again (or DB is
// closed).
func (d *DB) recover() {
	wait := d.opts.MinBackoff
	first := true
	for {
		if g := d.peek(); g != nil && g.st.Failed() == nil {
			return // healthy (a spurious wakeup)
		} else if first && g != nil {
			d.log.Error("relay store failed; refusing writes until the disk is writable again, then reopening",
				"err", g.st.Failed(), "dir", d.opts.Dir)
		}
		first = false
		t := time.NewTimer(wait)
		select {
		case <-d.stop:
			t.Stop()
			return
		case <-t.C:
		}
		if err := d.attempt(); err == nil {
			return
		} else {
			d.attempts.Add(1)
			d.log.Warn("relay store still failing", "err", err, "retry_in", min(2*wait, d.opts.MaxBackoff).String())
		}
		wait = min(2*wait, d.opts.MaxBackoff)
	}
}

func (d *DB) peek() *generation {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.cur
}

// attempt makes one recovery attempt: probe the disk, retire the failed
// store, open and probe a new one, swap it in.
func (d *DB) attempt() error {
	if g := d.peek(); g != nil {
		// Keep the failed store (and its reads) until the disk takes a
		// synced write again.
		if err := d.probeDisk(); err != nil {
			return err
		}
		d.mu.Lock()
		d.cur = nil
		d.mu.Unlock()
		if !g.idle(d.opts.DrainWait) {
			d.mu.Lock()
			closed := d.closed
			if !closed {
				d.cur = g
			}
			d.mu.Unlock()
			if closed {
				g.st.Close()
			}
			return fmt.Errorf("recovering: %d calls still in progress in the failed store", g.calls.Load())
		}
		if err := g.st.Close(); err != nil {
			// Expected: closing reports the failure that failed the store.
			d.log.Debug("closing the failed relay store", "err", err)
		}
	}
	st, err := d.opts.Open()
	if err != nil {
		return fmt.Errorf("recovering: reopen: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	err = d.opts.Probe(ctx, st)
	cancel()
	if err == nil {
		err = st.Failed()
	}
	if err != nil {
		st.Close()
		return fmt.Errorf("recovering: probe write after reopening: %w", err)
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		st.Close()
		return nil
	}
	d.cur = &generation{st: st}
	d.mu.Unlock()
	d.recoveries.Add(1)
	d.log.Info("relay store reopened after a storage failure", "dir", d.opts.Dir)
	if d.opts.OnRecover != nil {
		d.opts.OnRecover()
	}
	return nil
}

// probeDisk writes, syncs and removes a small file in the store's
// directory.
func (d *DB) probeDisk() (err error) {
	fs := d.opts.FS
	name := filepath.Join(d.opts.Dir, ProbeFile)
	f, err := fs.Create(name, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("recovering: disk probe: %w", err)
	}
	defer func() {
		if rerr := fs.Remove(name); rerr != nil && err == nil {
			err = fmt.Errorf("recovering: disk probe: %w", rerr)
		}
	}()
	buf := make([]byte, 4096)
	if _, err := f.Write(buf); err != nil {
		f.Close()
		return fmt.Errorf("recovering: disk probe: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("recovering: disk probe: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("recovering: disk probe: %w", err)
	}
	return nil
}

// Put implements store.Queues.
func (d *DB) Put(ctx context.Context, body []byte, entries []store.Entry) ([]store.PutResult, error) {
	g, err := d.acquire()
	if err != nil {
		return nil, err
	}
	res, err := g.st.Put(ctx, body, entries)
	d.release(g, err)
	return res, err
}

// StartPut implements store.OrderedPutter: by delegation when the current
// store implements it, else by a Put made before it returns (which keeps
// the order of Puts started one after another).
func (d *DB) StartPut(ctx context.Context, body []byte, entries []store.Entry) func() ([]store.PutResult, error) {
	g, err := d.acquire()
	if err != nil {
		return func() ([]store.PutResult, error) { return nil, err }
	}
	op, ok := g.st.(store.OrderedPutter)
	if !ok {
		res, err := g.st.Put(ctx, body, entries)
		d.release(g, err)
		return func() ([]store.PutResult, error) { return res, err }
	}
	wait := op.StartPut(ctx, body, entries)
	// The submission has its place; the store answers it even if it is
	// closed before wait is called.
	g.calls.Add(-1)
	return func() ([]store.PutResult, error) {
		res, err := wait()
		if err != nil && g.st.Failed() != nil {
			d.notify()
		}
		return res, err
	}
}

// Fetch implements store.Queues.
func (d *DB) Fetch(ctx context.Context, q store.QueueID, after store.Cursor, limit int) ([]store.Message, error) {
	g, err := d.acquire()
	if err != nil {
		return nil, err
	}
	msgs, err := g.st.Fetch(ctx, q, after, limit)
	d.release(g, err)
	return msgs, err
}

// Ack implements store.Queues.
func (d *DB) Ack(ctx context.Context, q store.QueueID, key store.Cursor) error {
	g, err := d.acquire()
	if err != nil {
		return err
	}
	err = g.st.Ack(ctx, q, key)
	d.release(g, err)
	return err
}

// Depth implements store.Queues.
func (d *DB) Depth(ctx context.Context, q store.QueueID) (int, int64, error) {
	g, err := d.acquire()
	if err != nil {
		return 0, 0, err
	}
	n, b, err := g.st.Depth(ctx, q)
	d.release(g, err)
	return n, b, err
}

// PurgeDevice implements store.Queues and store.Devices.
func (d *DB) PurgeDevice(ctx context.Context, q store.QueueID) error {
	g, err := d.acquire()
	if err != nil {
		return err
	}
	err = g.st.PurgeDevice(ctx, q)
	d.release(g, err)
	return err
}

// PurgeAccount implements store.Queues and store.Devices.
func (d *DB) PurgeAccount(ctx context.Context, account crypto.AccountID) error {
	g, err := d.acquire()
	if err != nil {
		return err
	}
	err = g.st.PurgeAccount(ctx, account)
	d.release(g, err)
	return err
}

// Sweep implements store.Queues.
func (d *DB) Sweep(ctx context.Context, now time.Time) (int, error) {
	g, err := d.acquire()
	if err != nil {
		return 0, err
	}
	n, err := g.st.Sweep(ctx, now)
	d.release(g, err)
	return n, err
}

// SetAccessKeyHash implements store.Devices.
func (d *DB) SetAccessKeyHash(ctx context.Context, account crypto.AccountID, hash [32]byte) error {
	g, err := d.acquire()
	if err != nil {
		return err
	}
	err = g.st.SetAccessKeyHash(ctx, account, hash)
	d.release(g, err)
	return err
}

// AccessKeyHash implements store.Devices.
func (d *DB) AccessKeyHash(ctx context.Context, account crypto.AccountID) ([32]byte, bool, error) {
	g, err := d.acquire()
	if err != nil {
		return [32]byte{}, false, err
	}
	h, ok, err := g.st.AccessKeyHash(ctx, account)
	d.release(g, err)
	return h, ok, err
}

// SetPushEndpoint implements store.Devices.
func (d *DB) SetPushEndpoint(ctx context.Context, q store.QueueID, url string) error {
	g, err := d.acquire()
	if err != nil {
		return err
	}
	err = g.st.SetPushEndpoint(ctx, q, url)
	d.release(g, err)
	return err
}

// PushEndpoint implements store.Devices.
func (d *DB) PushEndpoint(ctx context.Context, q store.QueueID) (string, error) {
	g, err := d.acquire()
	if err != nil {
		return "", err
	}
	u, err := g.st.PushEndpoint(ctx, q)
	d.release(g, err)
	return u, err
}
