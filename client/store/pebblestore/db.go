// Package pebblestore is the client's default store: an implementation of
// [store.Store] on Pebble in which every value is encrypted and no key
// reveals a contact or any content.
//
// # Security properties
//
// A store directory holds Pebble's files and a key file, STOREKEY. The key
// file holds a random 256-bit store key wrapped with age's scrypt recipient
// under the user's passphrase; [DB.ChangePassphrase] rewraps that key and
// nothing else. Two subkeys are derived from the store key with HKDF-SHA-256:
//
//   - the value key: every value is sealed with XChaCha20-Poly1305 under it,
//     with the Pebble key as associated data, so that a value moved to
//     another key fails to open ([ErrCorrupt]);
//   - the index key: every natural key (account IDs, group and conversation
//     IDs, message IDs, record kinds and keys) is replaced in Pebble keys by
//     an HMAC-SHA-256 under it.
//
// What the layout still reveals to someone holding the directory without
// the passphrase is listed in keys.go: record counts per table, which
// messages share a conversation and their times to the nanosecond, how many
// devices each peer has, and value sizes.
//
// Deletion is logical: Pebble keeps deleted values (still sealed) in its log
// and sstables until compaction rewrites them, so a deleted message or
// session remains recoverable for a while by someone who holds both the
// directory and the passphrase.
//
// # Durability
//
// Writes that would lose a user's message or the means to read one if a
// crash dropped them are synced before the method returns: identity,
// prekeys, sessions, sender keys, records, messages (put and delete) and
// outbox puts. DeleteOutbox, MarkSeen and PruneSeen are not synced: losing
// an outbox deletion means one resend that the recipient de-duplicates, and
// Pebble's log is sequential, so an unsynced MarkSeen becomes durable with
// the next synced write (typically the PutMessage of the same message).
//
// # Key management
//
// The store key and its subkeys stay in memory while the store is open.
// The passphrase is only used by Create, Open and ChangePassphrase and is
// not retained.
package pebblestore

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/sotto-im/sotto/client/store"
)

// Domain-separation labels of the store's key derivations.
const (
	labelValueKey = "sotto/v1/client-store/value-key"
	labelIndexKey = "sotto/v1/client-store/index-key"
	// checkPlaintext is sealed under tCheck when the store is created. Open
	// opens it to tell a key file that belongs to another database from a
	// good one.
	checkPlaintext = "sotto/v1/client-store/check"
)

// Implementation constants.
const (
	// dbDirName is the directory of Pebble's files inside the store
	// directory, apart from the key file.
	dbDirName = "db"
	// stripes is the number of locks serializing read-modify-write
	// operations (message replace, outbox put, MarkSeen) per key: enough
	// that concurrent writers of different keys rarely wait on each other,
	// so their synced commits share fsyncs.
	stripes = 64
	// pruneBatch bounds the deletions PruneSeen commits at once.
	pruneBatch = 1024
)

// Errors of Create, Open and ChangePassphrase, and of values that fail to
// decode. Callers test for them with errors.Is.
var (
	// ErrWrongPassphrase reports a passphrase that does not unwrap the
	// store key.
	ErrWrongPassphrase = errors.New("pebblestore: wrong passphrase")
	// ErrNoStore reports a directory without a store (Open).
	ErrNoStore = errors.New("pebblestore: no store in directory")
	// ErrExists reports a directory that already holds a store (Create).
	ErrExists = errors.New("pebblestore: store already exists")
	// ErrCorrupt reports bytes read from the directory that do not decode
	// or authenticate: a damaged or tampered key file or value, or a key
	// file that belongs to another database.
	ErrCorrupt = errors.New("pebblestore: corrupt store")
)

// Options configure a store. The zero value (or nil) is the default.
type Options struct {
	// FS is the file system holding the store; nil means the operating
	// system's. Tests pass vfs.NewMem().
	FS vfs.FS
	// Logf receives Pebble's log messages; nil discards them. Pebble logs
	// no keys or values.
	Logf func(format string, args ...any)
	// ScryptWorkFactor is the base-2 logarithm of scrypt's cost parameter
	// used to wrap the store key (Create, ChangePassphrase); 0 means the
	// default, 18. Lower values make a stolen store cheaper to attack by
	// guessing passphrases: they exist for tests.
	ScryptWorkFactor int
}

func (o *Options) fs() vfs.FS {
	if o == nil || o.FS == nil {
		return vfs.Default
	}
	return o.FS
}

func (o *Options) workFactor() int {
	if o == nil {
		return 0
	}
	return o.ScryptWorkFactor
}

func (o *Options) pebbleOptions(fs vfs.FS) *pebble.Options {
	po := &pebble.Options{FS: fs}
	var logf func(string, ...any)
	if o != nil {
		logf = o.Logf
	}
	po.Logger = pebbleLogger{logf}
	return po
}

// pebbleLogger adapts Logf to Pebble's logger.
type pebbleLogger struct {
	logf func(format string, args ...any)
}

func (l pebbleLogger) Infof(format string, args ...any) {
	if l.logf != nil {
		l.logf("pebblestore: pebble: "+format, args...)
	}
}

func (l pebbleLogger) Errorf(format string, args ...any) { l.Infof(format, args...) }

// Fatalf reports a broken Pebble invariant; Pebble expects it not to
// return.
func (l pebbleLogger) Fatalf(format string, args ...any) {
	l.Infof(format, args...)
	panic(fmt.Sprintf("pebblestore: pebble: "+format, args...))
}

// DB is an open encrypted store. It implements [store.Store] and is safe
// for concurrent use.
type DB struct {
	dir string
	fs  vfs.FS
	wf  int
	db  *pebble.DB

	sealer *sealer
	hasher *hasher

	// keyMu guards key and serializes ChangePassphrase.
	keyMu sync.Mutex
	key   storeKey

	// life tracks calls in progress, so that Close waits for them and
	// later calls fail with store.ErrClosed instead of reaching a closed
	// Pebble.
	life struct {
		sync.Mutex
		cond   sync.Cond
		closed bool
		active int
	}

	stripes   [stripes]sync.Mutex
	outboxSeq atomic.Uint64
}

var _ store.Store = (*DB)(nil)

// Create creates a new store in dir (created with mode 0700 if missing),
// protected by passphrase. It fails with ErrExists if dir already holds a
// store. The passphrase must not be empty.
func Create(dir string, passphrase []byte, opts *Options) (*DB, error) {
	if len(passphrase) == 0 {
		return nil, fmt.Errorf("pebblestore: empty passphrase: %w", store.ErrInvalid)
	}
	fs := opts.fs()
	if err := fs.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pebblestore: create store directory: %w", err)
	}
	if _, err := fs.Stat(fs.PathJoin(dir, keyFileName)); err == nil {
		return nil, fmt.Errorf("pebblestore: %s: %w", dir, ErrExists)
	}
	key, err := newStoreKey()
	if err != nil {
		return nil, fmt.Errorf("pebblestore: new store key: %w", err)
	}
	wrapped, err := wrapStoreKey(key, passphrase, opts.workFactor())
	if err != nil {
		return nil, fmt.Errorf("pebblestore: wrap store key: %w", err)
	}
	po := opts.pebbleOptions(fs)
	po.ErrorIfExists = true
	po.FormatMajorVersion = pebble.FormatNewest
	d, err := open(dir, fs, opts.workFactor(), key, po)
	if err != nil {
		if errors.Is(err, pebble.ErrDBAlreadyExists) {
			err = fmt.Errorf("pebblestore: %s: %w", dir, ErrExists)
		}
		return nil, err
	}
	checkKey := []byte{tCheck}
	if err := d.db.Set(checkKey, d.sealer.seal(checkKey, []byte(checkPlaintext)), pebble.Sync); err != nil {
		d.Close()
		return nil, fmt.Errorf("pebblestore: write check record: %w", err)
	}
	if err := writeKeyFile(fs, dir, wrapped); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// Open opens the store in dir with passphrase. It fails with ErrNoStore
// if dir holds no store and with ErrWrongPassphrase if the passphrase does
// not unwrap the store key.
func Open(dir string, passphrase []byte, opts *Options) (*DB, error) {
	fs := opts.fs()
	wrapped, err := readKeyFile(fs, dir)
	if err != nil {
		return nil, err
	}
	if len(passphrase) == 0 {
		// No store is created with an empty passphrase.
		return nil, ErrWrongPassphrase
	}
	key, err := unwrapStoreKey(wrapped, passphrase)
	if err != nil {
		return nil, err
	}
	po := opts.pebbleOptions(fs)
	po.ErrorIfNotExists = true
	d, err := open(dir, fs, opts.workFactor(), key, po)
	if err != nil {
		if errors.Is(err, pebble.ErrDBDoesNotExist) {
			err = fmt.Errorf("pebblestore: %s: database missing beside the key file: %w", dir, ErrCorrupt)
		}
		return nil, err
	}
	checkKey := []byte{tCheck}
	if _, err := d.get(checkKey); err != nil {
		d.Close()
		return nil, fmt.Errorf("pebblestore: check record: %w", err)
	}
	if err := d.initOutboxSeq(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func open(dir string, fs vfs.FS, wf int, key storeKey, po *pebble.Options) (*DB, error) {
	valueKey, err := hkdf.Key(sha256.New, key[:], nil, labelValueKey, 32)
	if err != nil {
		return nil, fmt.Errorf("pebblestore: derive value key: %w", err)
	}
	indexKey, err := hkdf.Key(sha256.New, key[:], nil, labelIndexKey, 32)
	if err != nil {
		return nil, fmt.Errorf("pebblestore: derive index key: %w", err)
	}
	s, err := newSealer(valueKey)
	if err != nil {
		return nil, err
	}
	db, err := pebble.Open(fs.PathJoin(dir, dbDirName), po)
	if err != nil {
		return nil, fmt.Errorf("pebblestore: open database: %w", err)
	}
	d := &DB{dir: dir, fs: fs, wf: wf, db: db, sealer: s, hasher: newHasher(indexKey), key: key}
	d.life.cond.L = &d.life.Mutex
	clear(valueKey)
	clear(indexKey)
	return d, nil
}

// ChangePassphrase rewraps the store key under newPassphrase after checking
// that oldPassphrase unwraps the key file (else ErrWrongPassphrase). The
// data is not re-encrypted. The key file is replaced atomically: after a
// crash, either passphrase opens the store.
func (d *DB) ChangePassphrase(oldPassphrase, newPassphrase []byte) error {
	if len(newPassphrase) == 0 {
		return fmt.Errorf("pebblestore: empty passphrase: %w", store.ErrInvalid)
	}
	if err := d.enter(context.Background()); err != nil {
		return err
	}
	defer d.exit()
	d.keyMu.Lock()
	defer d.keyMu.Unlock()
	if len(oldPassphrase) == 0 {
		return ErrWrongPassphrase
	}
	wrapped, err := readKeyFile(d.fs, d.dir)
	if err != nil {
		return err
	}
	key, err := unwrapStoreKey(wrapped, oldPassphrase)
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare(key[:], d.key[:]) != 1 {
		return fmt.Errorf("pebblestore: key file does not match the open store: %w", ErrCorrupt)
	}
	rewrapped, err := wrapStoreKey(key, newPassphrase, d.wf)
	if err != nil {
		return fmt.Errorf("pebblestore: wrap store key: %w", err)
	}
	return writeKeyFile(d.fs, d.dir, rewrapped)
}

// Close waits for calls in progress and closes the store. Later calls
// fail with store.ErrClosed.
func (d *DB) Close() error {
	d.life.Lock()
	if d.life.closed {
		d.life.Unlock()
		return fmt.Errorf("pebblestore: %w", store.ErrClosed)
	}
	d.life.closed = true
	for d.life.active > 0 {
		d.life.cond.Wait()
	}
	d.life.Unlock()
	d.keyMu.Lock()
	clear(d.key[:])
	d.keyMu.Unlock()
	if err := d.db.Close(); err != nil {
		return fmt.Errorf("pebblestore: close: %w", err)
	}
	return nil
}

// enter registers a call in progress; the caller must call exit.
func (d *DB) enter(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pebblestore: %w", err)
	}
	d.life.Lock()
	defer d.life.Unlock()
	if d.life.closed {
		return fmt.Errorf("pebblestore: %w", store.ErrClosed)
	}
	d.life.active++
	return nil
}

func (d *DB) exit() {
	d.life.Lock()
	d.life.active--
	if d.life.active == 0 && d.life.closed {
		d.life.cond.Broadcast()
	}
	d.life.Unlock()
}

// stripe returns the lock of the read-modify-write operations on keys
// whose hash starts with b.
func (d *DB) stripe(b byte) *sync.Mutex { return &d.stripes[int(b)%stripes] }

var errMissing = errors.New("pebblestore: missing")

// get reads and opens the value under key; a missing key is errMissing.
func (d *DB) get(key []byte) ([]byte, error) {
	v, closer, err := d.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, errMissing
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	return d.sealer.open(key, v)
}

func writeOpts(sync bool) *pebble.WriteOptions {
	if sync {
		return pebble.Sync
	}
	return pebble.NoSync
}

// set seals value under key and writes it.
func (d *DB) set(key, value []byte, sync bool) error {
	return d.db.Set(key, d.sealer.seal(key, value), writeOpts(sync))
}

// load is get with the store's error conventions: a missing key wraps
// store.ErrNotFound, other errors are wrapped with what.
func (d *DB) load(ctx context.Context, what string, key []byte) ([]byte, error) {
	if err := d.enter(ctx); err != nil {
		return nil, err
	}
	defer d.exit()
	v, err := d.get(key)
	if err == errMissing {
		return nil, fmt.Errorf("pebblestore: %s: %w", what, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("pebblestore: %s: %w", what, err)
	}
	return v, nil
}

// save is set with the store's error conventions.
func (d *DB) save(ctx context.Context, what string, key, value []byte, sync bool) error {
	if err := d.enter(ctx); err != nil {
		return err
	}
	defer d.exit()
	if err := d.set(key, value, sync); err != nil {
		return fmt.Errorf("pebblestore: %s: %w", what, err)
	}
	return nil
}

// remove deletes key.
func (d *DB) remove(ctx context.Context, what string, key []byte, sync bool) error {
	if err := d.enter(ctx); err != nil {
		return err
	}
	defer d.exit()
	if err := d.db.Delete(key, writeOpts(sync)); err != nil {
		return fmt.Errorf("pebblestore: %s: %w", what, err)
	}
	return nil
}

// iterate calls fn with the key and opened value of every key with prefix,
// in key order. The key passed to fn is only valid during the call. It
// checks ctx between entries.
func (d *DB) iterate(ctx context.Context, what string, lower, upper []byte, fn func(key, value []byte) error) error {
	if err := d.enter(ctx); err != nil {
		return err
	}
	defer d.exit()
	return d.iterateEntered(ctx, what, lower, upper, fn)
}

// iterateEntered is iterate for a caller that has entered.
func (d *DB) iterateEntered(ctx context.Context, what string, lower, upper []byte, fn func(key, value []byte) error) error {
	it, err := d.db.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return fmt.Errorf("pebblestore: %s: %w", what, err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		if err := ctx.Err(); err != nil {
			it.Close()
			return fmt.Errorf("pebblestore: %s: %w", what, err)
		}
		raw, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return fmt.Errorf("pebblestore: %s: %w", what, err)
		}
		v, err := d.sealer.open(it.Key(), raw)
		if err != nil {
			it.Close()
			return fmt.Errorf("pebblestore: %s: %w", what, err)
		}
		if err := fn(it.Key(), v); err != nil {
			it.Close()
			return err
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("pebblestore: %s: %w", what, err)
	}
	return nil
}

// initOutboxSeq sets the outbox sequence after the last entry.
func (d *DB) initOutboxSeq() error {
	lower := []byte{tOutbox}
	it, err := d.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd(lower)})
	if err != nil {
		return fmt.Errorf("pebblestore: outbox sequence: %w", err)
	}
	defer it.Close()
	if it.Last() {
		k := it.Key()
		if len(k) != 9 {
			return fmt.Errorf("pebblestore: outbox key of %d bytes: %w", len(k), ErrCorrupt)
		}
		d.outboxSeq.Store(binary.BigEndian.Uint64(k[1:]))
	}
	return it.Error()
}

// keyOf builds a key from a table byte and parts.
func keyOf(table byte, parts ...[]byte) []byte {
	n := 1
	for _, p := range parts {
		n += len(p)
	}
	k := make([]byte, 0, n)
	k = append(k, table)
	for _, p := range parts {
		k = append(k, p...)
	}
	return k
}

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
