// Package blobstore stores attachment ciphertext for the relay as plain
// files, implementing [store.Blobs].
//
// # Why files, apart from the queues
//
// Blobs are large (up to 100 MiB by default), arrive as streams, are written
// once, read a few times (with Range requests), and deleted whole. An LSM
// such as the queues' Pebble database is the wrong home for them: every byte
// would be written to its WAL and then rewritten by each compaction that
// moves it down the levels, large values would crowd the block cache and
// slow the queues' small hot keys, and a streamed upload would have to be
// buffered into a batch. A file per blob is written exactly once, streamed
// to disk as it arrives, served with sendfile-friendly reads and seeks, and
// deleted with one unlink; the filesystem is the index by ID.
//
// # Layout and durability
//
// Each blob is one file, dir/xx/<32 hex digits of the ID> (xx: the first
// byte, to keep directories small). The file starts with a fixed 64-byte
// header carrying the blob's metadata (format version, owner, size, expiry)
// followed by the ciphertext, so data and metadata appear and disappear
// together. A blob is written to dir/tmp, synced, renamed into place and its
// directory synced before Create returns: after a crash a blob either exists
// whole or not at all, and leftovers in dir/tmp are removed by Open.
//
// Open reads every header into an in-memory index (owner, size, expiry) that
// serves the per-account quota and the expiry sweep; that costs one small
// read per blob at start and about a hundred bytes of memory per blob.
//
// IDs are 128 random bits from crypto/rand: knowing an ID is the capability
// to download the blob, so IDs must be unguessable.
package blobstore

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/relay/store"
)

// Defaults for Options.
const (
	DefaultMaxSize   = 100 << 20
	DefaultQuota     = 1 << 30
	DefaultRetention = 30 * 24 * time.Hour
)

// Options configure Open. The zero value is usable.
type Options struct {
	// MaxSize is the largest blob accepted (default DefaultMaxSize).
	MaxSize int64
	// Quota is the most bytes one account may hold (default DefaultQuota).
	Quota int64
	// DefaultRetention applies to blobs created with a zero expiry.
	DefaultRetention time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Store is the filesystem blob store. It is safe for concurrent use.
type Store struct {
	dir  string
	opts Options

	mu struct {
		sync.Mutex
		blobs map[store.BlobID]meta
		used  map[crypto.AccountID]int64 // stored plus reserved by uploads in progress
	}
}

var _ store.Blobs = (*Store)(nil)

type meta struct {
	owner   crypto.AccountID
	size    int64
	expires time.Time
}

// The file header: magic(4) version(1) reserved(3) owner(20) size(8)
// expires(8, Unix nanoseconds) padding to 64.
const (
	headerLen     = 64
	headerVersion = 1
	magic         = "SBLB"
)

func (m meta) header() []byte {
	h := make([]byte, headerLen)
	copy(h, magic)
	h[4] = headerVersion
	copy(h[8:28], m.owner[:])
	binary.BigEndian.PutUint64(h[28:], uint64(m.size))
	binary.BigEndian.PutUint64(h[36:], uint64(m.expires.UnixNano()))
	return h
}

func parseHeader(h []byte) (meta, error) {
	if len(h) != headerLen || string(h[:4]) != magic || h[4] != headerVersion ||
		!allZero(h[5:8]) || !allZero(h[44:]) {
		return meta{}, errors.New("blobstore: bad blob header")
	}
	var m meta
	copy(m.owner[:], h[8:28])
	m.size = int64(binary.BigEndian.Uint64(h[28:]))
	m.expires = time.Unix(0, int64(binary.BigEndian.Uint64(h[36:]))).UTC()
	if m.size < 0 {
		return meta{}, errors.New("blobstore: bad blob size")
	}
	return m, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Open opens (creating if needed) the blob store in dir, indexing the blobs
// there and removing unfinished uploads.
func Open(dir string, opts Options) (*Store, error) {
	if opts.MaxSize <= 0 {
		opts.MaxSize = DefaultMaxSize
	}
	if opts.Quota <= 0 {
		opts.Quota = DefaultQuota
	}
	if opts.DefaultRetention <= 0 {
		opts.DefaultRetention = DefaultRetention
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Store{dir: dir, opts: opts}
	s.mu.blobs = make(map[store.BlobID]meta)
	s.mu.used = make(map[crypto.AccountID]int64)
	if err := os.RemoveAll(s.tmpDir()); err != nil {
		return nil, fmt.Errorf("blobstore: open: %w", err)
	}
	if err := os.MkdirAll(s.tmpDir(), 0o700); err != nil {
		return nil, fmt.Errorf("blobstore: open: %w", err)
	}
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() {
			if path == s.tmpDir() {
				return filepath.SkipDir
			}
			return nil
		}
		id, ok := parseName(e.Name())
		if !ok || filepath.Dir(path) != s.shardDir(id) {
			return nil // not ours
		}
		m, err := readHeader(path)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		s.mu.blobs[id] = m
		s.mu.used[m.owner] += m.size
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("blobstore: open: %w", err)
	}
	return s, nil
}

func readHeader(path string) (meta, error) {
	f, err := os.Open(path)
	if err != nil {
		return meta{}, err
	}
	defer f.Close()
	h := make([]byte, headerLen)
	if _, err := io.ReadFull(f, h); err != nil {
		return meta{}, err
	}
	return parseHeader(h)
}

// Close releases the store. Blobs being read stay readable until their
// readers are closed.
func (s *Store) Close() error { return nil }

func (s *Store) tmpDir() string { return filepath.Join(s.dir, "tmp") }

func (s *Store) shardDir(id store.BlobID) string {
	return filepath.Join(s.dir, hex.EncodeToString(id[:1]))
}

func (s *Store) path(id store.BlobID) string {
	return filepath.Join(s.shardDir(id), hex.EncodeToString(id[:]))
}

func parseName(name string) (store.BlobID, bool) {
	var id store.BlobID
	if len(name) != 2*len(id) {
		return id, false
	}
	n, err := hex.Decode(id[:], []byte(name))
	return id, err == nil && n == len(id) && hex.EncodeToString(id[:]) == name
}

// Create implements store.Blobs.
func (s *Store) Create(ctx context.Context, owner crypto.AccountID, declared int64, expires time.Time, r io.Reader) (id store.BlobID, err error) {
	if declared < 0 {
		return id, fmt.Errorf("blobstore: create: negative length %d", declared)
	}
	if declared > s.opts.MaxSize {
		return id, fmt.Errorf("blobstore: create: %d bytes, limit %d: %w", declared, s.opts.MaxSize, store.ErrTooLarge)
	}
	if expires.IsZero() {
		expires = s.opts.Now().Add(s.opts.DefaultRetention)
	}
	if _, err := rand.Read(id[:]); err != nil {
		return id, fmt.Errorf("blobstore: create: %w", err)
	}
	// Reserve the declared size against the quota for the upload's duration.
	s.mu.Lock()
	if s.mu.used[owner]+declared > s.opts.Quota {
		used := s.mu.used[owner]
		s.mu.Unlock()
		return store.BlobID{}, fmt.Errorf("blobstore: create: account holds %d bytes, quota %d: %w", used, s.opts.Quota, store.ErrQuotaExceeded)
	}
	s.mu.used[owner] += declared
	s.mu.Unlock()
	defer func() {
		if err != nil {
			s.mu.Lock()
			s.release(owner, declared)
			s.mu.Unlock()
			id = store.BlobID{}
		}
	}()

	m := meta{owner: owner, size: declared, expires: expires.UTC()}
	f, err := os.CreateTemp(s.tmpDir(), "upload-")
	if err != nil {
		return id, fmt.Errorf("blobstore: create: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(m.header()); err != nil {
		return id, fmt.Errorf("blobstore: create: %w", err)
	}
	// Read one byte more than declared to detect an overlong body.
	n, err := io.Copy(f, io.LimitReader(ctxReader{ctx, r}, declared+1))
	if err != nil {
		return id, fmt.Errorf("blobstore: create: %w", err)
	}
	if n > declared {
		return id, fmt.Errorf("blobstore: create: body longer than the declared %d bytes: %w", declared, store.ErrTooLarge)
	}
	if n < declared {
		return id, fmt.Errorf("blobstore: create: body of %d bytes, %d declared: %w", n, declared, io.ErrUnexpectedEOF)
	}
	if err := f.Sync(); err != nil {
		return id, fmt.Errorf("blobstore: create: %w", err)
	}
	if err := f.Close(); err != nil {
		return id, fmt.Errorf("blobstore: create: %w", err)
	}
	if err := os.MkdirAll(s.shardDir(id), 0o700); err != nil {
		return id, fmt.Errorf("blobstore: create: %w", err)
	}
	if err := os.Rename(tmp, s.path(id)); err != nil {
		return id, fmt.Errorf("blobstore: create: %w", err)
	}
	if err := syncDir(s.shardDir(id)); err != nil {
		os.Remove(s.path(id))
		return id, fmt.Errorf("blobstore: create: %w", err)
	}
	s.mu.Lock()
	s.mu.blobs[id] = m // the reservation becomes the blob's usage
	s.mu.Unlock()
	return id, nil
}

// release returns n bytes of owner's quota. s.mu must be held.
func (s *Store) release(owner crypto.AccountID, n int64) {
	if s.mu.used[owner] -= n; s.mu.used[owner] <= 0 {
		delete(s.mu.used, owner)
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ctxReader stops a copy when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// blobReader serves a blob's bytes after the header.
type blobReader struct {
	*io.SectionReader
	f *os.File
}

func (b blobReader) Close() error { return b.f.Close() }

// Open implements store.Blobs.
func (s *Store) Open(ctx context.Context, id store.BlobID) (store.ReadSeekCloser, int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	s.mu.Lock()
	m, ok := s.mu.blobs[id]
	s.mu.Unlock()
	if !ok || m.expires.Before(s.opts.Now()) {
		return nil, 0, fmt.Errorf("blobstore: open: %w", store.ErrNotFound)
	}
	f, err := os.Open(s.path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("blobstore: open: %w", store.ErrNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("blobstore: open: %w", err)
	}
	return blobReader{io.NewSectionReader(f, headerLen, m.size), f}, m.size, nil
}

// Delete implements store.Blobs.
func (s *Store) Delete(ctx context.Context, id store.BlobID) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.deleteLocked(id)
	return err
}

// deleteLocked removes a blob. s.mu must be held; the unlink under the lock
// keeps the index and the directory in step.
func (s *Store) deleteLocked(id store.BlobID) (bool, error) {
	m, ok := s.mu.blobs[id]
	if !ok {
		return false, nil
	}
	if err := os.Remove(s.path(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("blobstore: delete: %w", err)
	}
	delete(s.mu.blobs, id)
	s.release(m.owner, m.size)
	return true, nil
}

// PurgeAccount implements store.Blobs.
func (s *Store) PurgeAccount(ctx context.Context, owner crypto.AccountID) error {
	_, err := s.deleteWhere(ctx, func(m meta) bool { return m.owner == owner })
	if err != nil {
		return fmt.Errorf("blobstore: purge: %w", err)
	}
	return nil
}

// Sweep implements store.Blobs.
func (s *Store) Sweep(ctx context.Context, now time.Time) (int, error) {
	n, err := s.deleteWhere(ctx, func(m meta) bool { return m.expires.Before(now) })
	if err != nil {
		return n, fmt.Errorf("blobstore: sweep: %w", err)
	}
	return n, nil
}

func (s *Store) deleteWhere(ctx context.Context, match func(meta) bool) (int, error) {
	s.mu.Lock()
	var ids []store.BlobID
	for id, m := range s.mu.blobs {
		if match(m) {
			ids = append(ids, id)
		}
	}
	s.mu.Unlock()
	n := 0
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		s.mu.Lock()
		deleted, err := s.deleteLocked(id)
		s.mu.Unlock()
		if err != nil {
			return n, err
		}
		if deleted {
			n++
		}
	}
	return n, nil
}

// Usage returns the bytes owner holds (including uploads in progress).
func (s *Store) Usage(owner crypto.AccountID) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.used[owner]
}

// Len returns the number of blobs stored.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.mu.blobs)
}
