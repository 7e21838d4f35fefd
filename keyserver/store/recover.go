package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Recovery from storage faults.
//
// Pebble does not recover from a failed WAL write or sync: what was
// applied before it may or may not be on disk, and the open database
// refuses further writes. The store therefore treats any failed commit as
// a storage failure: the write fails with ErrUnavailable (the key server
// answers 503 and the client retries), later writes fail the same way at
// once, and reads go on from the open database. A background loop waits
// (DefaultRecoveryBackoff, doubling up to five times it) until a probe
// file can be written and synced in the store's directory, then closes the
// database, opens the directory again (Pebble replays what reached the
// disk), makes one synced write, and serves from the new database. While
// it reopens, and for as long as reopening fails, every call fails with
// ErrUnavailable.
//
// Nothing acknowledged is lost: every mutation is synced before it
// returns nil, so the reopened database holds it. The in-memory caches are
// dropped on the swap, since they may hold what the failed database
// applied in memory and never made durable.

// ErrUnavailable is wrapped by the errors of calls the store cannot serve
// because of a storage failure: writes after a failed write, and every
// call while the database is being reopened. It is temporary.
var ErrUnavailable = errors.New("store: unavailable")

// DefaultRecoveryBackoff is the first wait before reopening after a storage
// failure.
const DefaultRecoveryBackoff = time.Second

// probeFile is written, synced and removed in the store's directory before
// a failed database is closed.
const probeFile = "RECOVERY-PROBE"

// recovery is the state of the reopen loop.
type recovery struct {
	dir    string
	opts   Options
	failed atomic.Pointer[error] // the first failed commit since (re)open
	wake   chan struct{}         // buffered 1
	stop   chan struct{}
	done   chan struct{}
	// Recoveries counts reopens, for tests and logs.
	recoveries atomic.Int64
}

func (s *DB) startRecovery(dir string, opts Options) {
	s.rec = recovery{dir: dir, opts: opts, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go s.runRecovery()
}

func (s *DB) stopRecovery() {
	close(s.rec.stop)
	<-s.rec.done
}

// commit applies b with a synced write. A failure puts the store in its
// failed state and wakes the reopen loop.
func (s *DB) commit(b *pebble.Batch) error {
	if p := s.rec.failed.Load(); p != nil {
		return fmt.Errorf("%w: an earlier write failed: %w", ErrUnavailable, *p)
	}
	if err := commitSynced(b); err != nil {
		if s.rec.failed.CompareAndSwap(nil, &err) {
			s.logger().Error("key server store write failed; refusing writes until the disk is writable again, then reopening", "err", err)
		}
		select {
		case s.rec.wake <- struct{}{}:
		default:
		}
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

// commitSynced commits b with a synced write. Pebble treats an error
// before the WAL write (such as a WAL file that cannot be created) as fatal
// (Logger.Fatalf, which panics with pebbleFatal here); it is returned as an
// error, and the database is then reopened like after any other failure.
func commitSynced(b *pebble.Batch) (err error) {
	defer func() {
		if v := recover(); v != nil {
			f, ok := v.(pebbleFatal)
			if !ok {
				panic(v)
			}
			err = f
		}
	}()
	return b.Commit(pebble.Sync)
}

// Failed returns nil when the store takes writes, else an error wrapping
// ErrUnavailable: for readiness checks.
func (s *DB) Failed() error {
	if err := s.enter(context.Background()); err != nil {
		return err
	}
	defer s.leave()
	if p := s.rec.failed.Load(); p != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, *p)
	}
	return nil
}

// Recoveries returns how many times the store reopened its database after
// a storage failure.
func (s *DB) Recoveries() int64 { return s.rec.recoveries.Load() }

func (s *DB) logger() *slog.Logger {
	if s.rec.opts.Logger != nil {
		return s.rec.opts.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (s *DB) runRecovery() {
	defer close(s.rec.done)
	for {
		select {
		case <-s.rec.stop:
			return
		case <-s.rec.wake:
		}
		wait := s.rec.opts.RecoveryBackoff
		for {
			t := time.NewTimer(wait)
			select {
			case <-s.rec.stop:
				t.Stop()
				return
			case <-t.C:
			}
			err := s.reopen()
			if err == nil {
				break
			}
			wait = min(2*wait, 5*s.rec.opts.RecoveryBackoff)
			s.logger().Warn("key server store still failing", "err", err, "retry_in", wait.String())
		}
	}
}

// Bounds on waiting for the calls in progress to end.
const (
	// drainWait bounds a recovery's wait. A call can be stuck for good in
	// a failed database (a Pebble commit that failed before its WAL write
	// leaves the later commits of that moment waiting forever): the
	// recovery then gives up this attempt, lets calls in again (reads
	// still work, writes are refused) and tries later.
	drainWait = 5 * time.Second
	// closeWait bounds Close's wait.
	closeWait = 10 * time.Second
)

// waitIdle waits up to max for the active calls to end and reports
// whether they did. New calls must be kept out meanwhile.
func (s *DB) waitIdle(max time.Duration) bool {
	deadline := time.Now().Add(max)
	for s.active.Load() > 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// reopen makes one recovery attempt.
func (s *DB) reopen() error {
	s.swap.Lock()
	open := s.db != nil
	s.swap.Unlock()
	if open && s.rec.failed.Load() == nil {
		return nil // healthy: a wakeup from a call that failed before the last recovery
	}
	if open {
		// Keep the failed database (and its reads) until the disk takes
		// a synced write again.
		if err := probeDisk(s.rec.opts.FS, s.rec.dir); err != nil {
			return err
		}
	}
	// Keep new calls out (they fail with ErrUnavailable) and wait for
	// those in progress.
	s.swap.Lock()
	s.draining = true
	s.swap.Unlock()
	idle := s.waitIdle(drainWait)
	s.swap.Lock()
	defer s.swap.Unlock()
	s.draining = false
	if !idle {
		return fmt.Errorf("store: %d calls still in progress in the failed database", s.active.Load())
	}
	if s.closed.Load() {
		return nil
	}
	if s.db != nil {
		// Closing reports the failure; the database is discarded anyway.
		_ = s.db.Close()
		s.db = nil
	}
	db, err := openPebble(s.rec.dir, s.rec.opts)
	if err != nil {
		return err
	}
	b := db.NewBatch()
	err = b.LogData([]byte("recovery probe"), nil)
	if err == nil {
		err = b.Commit(pebble.Sync)
	}
	b.Close()
	if err != nil {
		_ = db.Close()
		return fmt.Errorf("store: probe write after reopening: %w", err)
	}
	for i := range s.stripes {
		st := &s.stripes[i]
		st.mu.Lock()
		clear(st.cache)
		clear(st.cursor)
		clear(st.inflight)
		st.mu.Unlock()
	}
	s.db = db
	s.rec.failed.Store(nil)
	s.rec.recoveries.Add(1)
	s.logger().Info("key server store reopened after a storage failure")
	return nil
}

// probeDisk writes, syncs and removes a small file in dir.
func probeDisk(fs vfs.FS, dir string) (err error) {
	name := filepath.Join(dir, probeFile)
	f, err := fs.Create(name, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("store: disk probe: %w", err)
	}
	defer func() {
		if rerr := fs.Remove(name); rerr != nil && err == nil {
			err = fmt.Errorf("store: disk probe: %w", rerr)
		}
	}()
	if _, err := f.Write(make([]byte, 4096)); err != nil {
		f.Close()
		return fmt.Errorf("store: disk probe: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("store: disk probe: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("store: disk probe: %w", err)
	}
	return nil
}
