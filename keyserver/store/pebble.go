package store

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/sotto-im/sotto/crypto"
)

// Key layout. Everything of an account lives under one prefix so that
// deleting the account is one range deletion:
//
//	'a' || account [20] || 0x00                                  → account record
//	'a' || account [20] || 0x01                                  → the account's handle: len u8 || skeleton || handle
//	'a' || account [20] || 0x02 || device u32 || 's'             → signed prekey
//	'a' || account [20] || 0x02 || device u32 || 'l'             → last-resort KEM prekey
//	'a' || account [20] || 0x02 || device u32 || 'e' || id u32   → one-time EC prekey
//	'a' || account [20] || 0x02 || device u32 || 'k' || id u32   → one-time KEM prekey
//	'h' || skeleton                                              → account [20] || handle
//
// Integers are big-endian so that keys sort by ID.
const (
	prefixAccount = 'a'
	prefixHandle  = 'h'

	subRecord = 0x00
	subHandle = 0x01
	subDevice = 0x02

	kindSigned     = 's'
	kindLastResort = 'l'
	kindOneTimeEC  = 'e'
	kindOneTimeKEM = 'k'

	recordVersion = 1
	// lockStripes is the number of account lock stripes: enough that
	// unrelated accounts rarely share one, few enough to cost nothing.
	lockStripes = 256
)

// Options configure [Open].
type Options struct {
	// FS is the filesystem Pebble uses; nil means the real one. Tests pass
	// vfs.NewMem().
	FS vfs.FS
	// Logger receives Pebble's error messages; nil discards them.
	Logger *slog.Logger
	// CacheSize is the block cache in bytes; 0 means DefaultCacheSize.
	CacheSize int64
	// RecoveryBackoff is the first wait before reopening the database
	// after a storage failure; the wait doubles up to five times it.
	// 0 means DefaultRecoveryBackoff.
	RecoveryBackoff time.Duration
}

// DefaultCacheSize is the default block cache: a claim reads the next
// one-time ML-KEM prekey of a device (1,255 bytes), and a cache that holds
// the hot end of many devices' key ranges keeps claims off the disk.
const DefaultCacheSize = 128 << 20

// DB is the Pebble implementation of [Store].
//
// Concurrency: every mutation of an account holds the account's lock
// stripe while it reads, decides and commits, except claims. A claim picks
// its one-time prekeys under the stripe lock, records them as in flight (so
// that concurrent claims skip them and uploads refuse their IDs), releases
// the lock and only then commits the deletion with a synced write. Many
// claims therefore wait for the disk together and Pebble commits them in
// one group, while no prekey can be picked twice: it is either in flight
// or already deleted.
type DB struct {
	// db is the open database; nil while a reopen after a storage
	// failure fails. It is replaced only while no call is active (see
	// enter and recover.go).
	db *pebble.DB
	// swap guards db, draining and the start of calls; active counts the
	// calls in progress.
	swap     sync.RWMutex
	draining bool // a recovery waits for the active calls to end
	active   atomic.Int64
	rec      recovery
	closed   atomic.Bool
	stripes  [lockStripes]stripe
	// handleMu serialises handle changes across accounts; taken after an
	// account stripe, never before.
	handleMu sync.Mutex
}

type stripe struct {
	mu       sync.Mutex
	inflight map[string]struct{} // keys of one-time prekeys being claimed
	// cursor maps a device's one-time prekey prefix (EC or KEM) to the
	// last key claimed from it. Claims take keys in order, so every live
	// key of the prefix sorts after the cursor unless an upload put lower
	// IDs (which resets it); seeking past the cursor skips the deletion
	// tombstones of earlier claims, which would otherwise make each claim
	// cost more than the last. It is only a hint: a missing entry means a
	// scan from the start.
	cursor map[string][]byte
	// cache holds account records and the devices' signed and last-resort
	// prekeys, which every claim and every authenticated request read. It
	// is filled and dropped under mu; every mutation of an account drops
	// the account's entry before it writes, and holds mu until committed.
	cache map[crypto.AccountID]*cachedAccount
}

type cachedAccount struct {
	acct *Account
	keys map[crypto.DeviceID]*cachedKeys
}

// cachedKeys are a device's signed and last-resort prekeys (nil if absent).
type cachedKeys struct{ signed, lastResort []byte }

// maxCachedAccountsPerStripe bounds the cache (65,536 accounts in all).
const maxCachedAccountsPerStripe = 256

// accountLocked returns the account's record through the cache. The
// caller holds st.mu and must not modify the result.
func (s *DB) accountLocked(st *stripe, id crypto.AccountID) (*cachedAccount, error) {
	if c, ok := st.cache[id]; ok {
		return c, nil
	}
	a, err := s.account(id)
	if err != nil {
		return nil, err
	}
	if len(st.cache) >= maxCachedAccountsPerStripe {
		for k := range st.cache {
			delete(st.cache, k)
			break
		}
	}
	c := &cachedAccount{acct: a, keys: make(map[crypto.DeviceID]*cachedKeys)}
	st.cache[id] = c
	return c, nil
}

// deviceKeysLocked returns the device's signed and last-resort prekeys
// through the cache. The caller holds st.mu.
func (s *DB) deviceKeysLocked(c *cachedAccount, addr crypto.Address) (*cachedKeys, error) {
	if k, ok := c.keys[addr.Device]; ok {
		return k, nil
	}
	k := new(cachedKeys)
	var err error
	if k.signed, err = s.get(deviceKey(addr, kindSigned)); err != nil && !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	if k.lastResort, err = s.get(deviceKey(addr, kindLastResort)); err != nil && !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	c.keys[addr.Device] = k
	return k, nil
}

// maxCursorsPerStripe bounds the claim cursors held in memory; dropping
// one costs a scan, never correctness.
const maxCursorsPerStripe = 1024

func (st *stripe) setCursor(prefix, key []byte) {
	if _, ok := st.cursor[string(prefix)]; !ok && len(st.cursor) >= maxCursorsPerStripe {
		for k := range st.cursor {
			delete(st.cursor, k)
			break
		}
	}
	st.cursor[string(prefix)] = key
}

// dropCursors forgets the cursors under prefix (a device or an account).
func (st *stripe) dropCursors(prefix []byte) {
	for k := range st.cursor {
		if strings.HasPrefix(k, string(prefix)) {
			delete(st.cursor, k)
		}
	}
}

var _ Store = (*DB)(nil)

// Open opens (creating if needed) the store in dir. The store reopens dir
// by itself after a storage failure (see [ErrUnavailable]).
func Open(dir string, opts Options) (*DB, error) {
	if opts.CacheSize == 0 {
		opts.CacheSize = DefaultCacheSize
	}
	if opts.FS == nil {
		opts.FS = vfs.Default
	}
	if opts.RecoveryBackoff <= 0 {
		opts.RecoveryBackoff = DefaultRecoveryBackoff
	}
	db, err := openPebble(dir, opts)
	if err != nil {
		return nil, err
	}
	s := &DB{db: db}
	for i := range s.stripes {
		s.stripes[i].inflight = make(map[string]struct{})
		s.stripes[i].cursor = make(map[string][]byte)
		s.stripes[i].cache = make(map[crypto.AccountID]*cachedAccount)
	}
	s.startRecovery(dir, opts)
	return s, nil
}

func openPebble(dir string, opts Options) (*pebble.DB, error) {
	cache := pebble.NewCache(opts.CacheSize)
	defer cache.Unref() // the DB holds its own reference
	po := &pebble.Options{FS: opts.FS, Logger: pebbleLogger{opts.Logger}, Cache: cache}
	db, err := pebble.Open(dir, po)
	if err != nil {
		return nil, fmt.Errorf("store: open: %w", err)
	}
	return db, nil
}

// Close stops the recovery, waits for the calls in progress and closes the
// database.
func (s *DB) Close() error {
	if s.closed.Swap(true) {
		return ErrClosed
	}
	s.stopRecovery()
	s.swap.Lock()
	defer s.swap.Unlock()
	if s.db == nil {
		return nil
	}
	// Calls started before Close are let finish (for a while: one stuck
	// in a failed database must not hold Close forever).
	s.waitIdle(closeWait)
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

// Scan calls fn with every live key and value in the database, in key
// order, until fn returns false. The slices are valid only during the
// call. It is meant for diagnostics and for tests that check that nothing
// of a deleted account is left.
func (s *DB) Scan(fn func(key, value []byte) bool) error {
	if err := s.enter(context.Background()); err != nil {
		return err
	}
	defer s.leave()
	it, err := s.db.NewIter(nil)
	if err != nil {
		return fmt.Errorf("store: scan: %w", err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		if !fn(it.Key(), it.Value()) {
			break
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("store: scan: %w", err)
	}
	return nil
}

// Compact rewrites the whole keyspace. Deleted accounts and claimed
// prekeys are hidden from reads at once but stay in files until compaction
// drops them; Compact makes that happen now, so that an operator can make
// an erasure physical (and benchmarks can start from a settled store).
func (s *DB) Compact(ctx context.Context) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.leave()
	if err := s.db.Compact(ctx, []byte{0}, []byte{0xff}, true); err != nil {
		return fmt.Errorf("store: compact: %w", err)
	}
	return nil
}

func (s *DB) stripe(id crypto.AccountID) *stripe {
	// Account IDs are hash outputs: their first byte is uniform.
	return &s.stripes[id[0]]
}

func accountPrefix(id crypto.AccountID) []byte {
	return append([]byte{prefixAccount}, id[:]...)
}

func accountKey(id crypto.AccountID, sub byte) []byte {
	return append(accountPrefix(id), sub)
}

func devicePrefix(addr crypto.Address) []byte {
	return binary.BigEndian.AppendUint32(accountKey(addr.Account, subDevice), uint32(addr.Device))
}

func deviceKey(addr crypto.Address, kind byte) []byte {
	return append(devicePrefix(addr), kind)
}

func oneTimeKey(addr crypto.Address, kind byte, id uint32) []byte {
	return binary.BigEndian.AppendUint32(deviceKey(addr, kind), id)
}

func handleKey(skeleton string) []byte {
	return append([]byte{prefixHandle}, skeleton...)
}

// prefixEnd returns the smallest key greater than every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil // p is all 0xff: no upper bound
}

// encodeAccount encodes the account record:
//
//	version u8 (1) || key [32] || list version u64 || count u16 || (device u32 || identity [32])* || signed list
func encodeAccount(a *Account) []byte {
	b := make([]byte, 0, 1+32+8+2+len(a.Devices)*36+len(a.DeviceList))
	b = append(b, recordVersion)
	b = append(b, a.Key[:]...)
	b = binary.BigEndian.AppendUint64(b, a.Version)
	b = binary.BigEndian.AppendUint16(b, uint16(len(a.Devices)))
	// Callers build records from verified lists, which are sorted; the
	// record must be, whoever the caller.
	devices := slices.Clone(a.Devices)
	slices.SortFunc(devices, func(x, y Device) int { return cmp.Compare(x.ID, y.ID) })
	for _, d := range devices {
		b = binary.BigEndian.AppendUint32(b, uint32(d.ID))
		b = append(b, d.Identity[:]...)
	}
	return append(b, a.DeviceList...)
}

var errCorrupt = errors.New("store: corrupt account record")

func decodeAccount(id crypto.AccountID, v []byte) (*Account, error) {
	if len(v) < 1+32+8+2 || v[0] != recordVersion {
		return nil, errCorrupt
	}
	a := &Account{ID: id}
	copy(a.Key[:], v[1:33])
	a.Version = binary.BigEndian.Uint64(v[33:41])
	n := int(binary.BigEndian.Uint16(v[41:43]))
	v = v[43:]
	if len(v) < n*36 {
		return nil, errCorrupt
	}
	a.Devices = make([]Device, n)
	for i := range a.Devices {
		a.Devices[i].ID = crypto.DeviceID(binary.BigEndian.Uint32(v))
		copy(a.Devices[i].Identity[:], v[4:36])
		v = v[36:]
	}
	a.DeviceList = bytes.Clone(v)
	return a, nil
}

// get returns a copy of the value of key, or nil and ErrNotFound.
func (s *DB) get(key []byte) ([]byte, error) {
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	out := bytes.Clone(v)
	closer.Close()
	return out, nil
}

func (s *DB) account(id crypto.AccountID) (*Account, error) {
	v, err := s.get(accountKey(id, subRecord))
	if err != nil {
		return nil, err
	}
	return decodeAccount(id, v)
}

// enter starts a call: until leave, s.db is not replaced. It fails if the
// store is closed, has no database open, or is about to replace it.
func (s *DB) enter(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	// A read lock suffices: draining and db change under the write lock,
	// so no call can start after a recovery has begun to drain.
	s.swap.RLock()
	defer s.swap.RUnlock()
	switch {
	case s.closed.Load():
		return ErrClosed
	case s.db == nil || s.draining:
		return fmt.Errorf("store: reopening after a storage failure: %w", ErrUnavailable)
	}
	s.active.Add(1)
	return nil
}

// leave ends a call started by enter.
func (s *DB) leave() { s.active.Add(-1) }

// CreateAccount implements [Store].
func (s *DB) CreateAccount(ctx context.Context, a *Account, device crypto.DeviceID, keys DeviceKeys) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.leave()
	if _, ok := a.Device(device); !ok {
		return fmt.Errorf("store: create account: device %d not in list: %w", device, ErrNotFound)
	}
	st := s.stripe(a.ID)
	st.mu.Lock()
	defer st.mu.Unlock()
	delete(st.cache, a.ID)
	if _, err := s.account(a.ID); err == nil {
		return ErrExists
	} else if !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("store: create account: %w", err)
	}
	b := s.db.NewBatch()
	defer b.Close()
	// Nothing of the account can exist without its record: deletion
	// removes the whole prefix in the same batch as the record.
	st.dropCursors(accountPrefix(a.ID))
	if err := b.Set(accountKey(a.ID, subRecord), encodeAccount(a), nil); err != nil {
		return fmt.Errorf("store: create account: %w", err)
	}
	addr := crypto.Address{Account: a.ID, Device: device}
	if err := s.stageKeys(b, st, addr, keys); err != nil {
		return err
	}
	if err := s.commit(b); err != nil {
		return fmt.Errorf("store: create account: %w", err)
	}
	return nil
}

// Account implements [Store].
func (s *DB) Account(ctx context.Context, id crypto.AccountID) (*Account, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	defer s.leave()
	st := s.stripe(id)
	st.mu.Lock()
	c, err := s.accountLocked(st, id)
	st.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("store: account: %w", err)
	}
	a := *c.acct // callers may change the copy's fields, not its slices
	return &a, nil
}

// ReplaceDeviceList implements [Store].
func (s *DB) ReplaceDeviceList(ctx context.Context, a *Account) ([]crypto.DeviceID, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	defer s.leave()
	st := s.stripe(a.ID)
	st.mu.Lock()
	defer st.mu.Unlock()
	delete(st.cache, a.ID)
	cur, err := s.account(a.ID)
	if err != nil {
		return nil, fmt.Errorf("store: replace device list: %w", err)
	}
	if a.Version <= cur.Version {
		return nil, ErrVersion
	}
	b := s.db.NewBatch()
	defer b.Close()
	var removed []crypto.DeviceID
	for _, d := range cur.Devices {
		if _, ok := a.Device(d.ID); ok {
			continue
		}
		removed = append(removed, d.ID)
		p := devicePrefix(crypto.Address{Account: a.ID, Device: d.ID})
		st.dropCursors(p)
		if err := b.DeleteRange(p, prefixEnd(p), nil); err != nil {
			return nil, fmt.Errorf("store: replace device list: %w", err)
		}
	}
	if err := b.Set(accountKey(a.ID, subRecord), encodeAccount(a), nil); err != nil {
		return nil, fmt.Errorf("store: replace device list: %w", err)
	}
	if err := s.commit(b); err != nil {
		return nil, fmt.Errorf("store: replace device list: %w", err)
	}
	return removed, nil
}

// DeleteAccount implements [Store].
func (s *DB) DeleteAccount(ctx context.Context, id crypto.AccountID) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.leave()
	st := s.stripe(id)
	st.mu.Lock()
	defer st.mu.Unlock()
	delete(st.cache, id)
	if _, err := s.account(id); err != nil {
		return fmt.Errorf("store: delete account: %w", err)
	}
	s.handleMu.Lock()
	defer s.handleMu.Unlock()
	b := s.db.NewBatch()
	defer b.Close()
	if skeleton, _, err := s.accountHandle(id); err == nil {
		if err := b.Delete(handleKey(skeleton), nil); err != nil {
			return fmt.Errorf("store: delete account: %w", err)
		}
	} else if !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("store: delete account: %w", err)
	}
	p := accountPrefix(id)
	st.dropCursors(p)
	if err := b.DeleteRange(p, prefixEnd(p), nil); err != nil {
		return fmt.Errorf("store: delete account: %w", err)
	}
	if err := s.commit(b); err != nil {
		return fmt.Errorf("store: delete account: %w", err)
	}
	return nil
}

// stageKeys adds keys to batch b, checking one-time prekey IDs against the
// store, the in-flight claims and each other. The caller holds st.mu.
func (s *DB) stageKeys(b *pebble.Batch, st *stripe, addr crypto.Address, keys DeviceKeys) error {
	if keys.SignedPreKey != nil {
		if err := b.Set(deviceKey(addr, kindSigned), keys.SignedPreKey.Encoded, nil); err != nil {
			return fmt.Errorf("store: put prekeys: %w", err)
		}
	}
	if keys.LastResort != nil {
		if err := b.Set(deviceKey(addr, kindLastResort), keys.LastResort.Encoded, nil); err != nil {
			return fmt.Errorf("store: put prekeys: %w", err)
		}
	}
	for _, set := range []struct {
		kind byte
		keys []PreKey
	}{{kindOneTimeEC, keys.OneTimeEC}, {kindOneTimeKEM, keys.OneTimeKEM}} {
		if len(set.keys) == 0 {
			continue
		}
		if len(set.keys) > MaxOneTimePreKeys {
			return ErrTooManyPreKeys
		}
		seen := make(map[uint32]bool, len(set.keys))
		for _, k := range set.keys {
			if seen[k.ID] {
				return ErrDuplicatePreKey
			}
			seen[k.ID] = true
		}
		var dup bool
		n, err := s.count(deviceKey(addr, set.kind), func(key []byte) {
			if seen[binary.BigEndian.Uint32(key[len(key)-4:])] {
				dup = true
			}
		})
		if err != nil {
			return err
		}
		if dup {
			return ErrDuplicatePreKey
		}
		if n+len(set.keys) > MaxOneTimePreKeys {
			return ErrTooManyPreKeys
		}
		prefix := deviceKey(addr, set.kind)
		for _, k := range set.keys {
			key := oneTimeKey(addr, set.kind, k.ID)
			if _, ok := st.inflight[string(key)]; ok {
				return ErrDuplicatePreKey
			}
			if c, ok := st.cursor[string(prefix)]; ok && bytes.Compare(key, c) <= 0 {
				// Staged only: if the commit fails the cursor was merely
				// dropped, which costs a scan.
				delete(st.cursor, string(prefix))
			}
			if err := b.Set(key, k.Encoded, nil); err != nil {
				return fmt.Errorf("store: put prekeys: %w", err)
			}
		}
	}
	return nil
}

// count counts the keys under prefix, calling fn with each.
func (s *DB) count(prefix []byte, fn func(key []byte)) (int, error) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return 0, fmt.Errorf("store: count: %w", err)
	}
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		n++
		if fn != nil {
			fn(it.Key())
		}
	}
	if err := it.Close(); err != nil {
		return 0, fmt.Errorf("store: count: %w", err)
	}
	return n, nil
}

// PutPreKeys implements [Store].
func (s *DB) PutPreKeys(ctx context.Context, addr crypto.Address, keys DeviceKeys) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.leave()
	st := s.stripe(addr.Account)
	st.mu.Lock()
	defer st.mu.Unlock()
	delete(st.cache, addr.Account)
	a, err := s.account(addr.Account)
	if err != nil {
		return fmt.Errorf("store: put prekeys: %w", err)
	}
	if _, ok := a.Device(addr.Device); !ok {
		return fmt.Errorf("store: put prekeys: device: %w", ErrNotFound)
	}
	b := s.db.NewBatch()
	defer b.Close()
	if err := s.stageKeys(b, st, addr, keys); err != nil {
		return err
	}
	if err := s.commit(b); err != nil {
		return fmt.Errorf("store: put prekeys: %w", err)
	}
	return nil
}

// Counts implements [Store].
func (s *DB) Counts(ctx context.Context, addr crypto.Address) (Counts, error) {
	if err := s.enter(ctx); err != nil {
		return Counts{}, err
	}
	defer s.leave()
	st := s.stripe(addr.Account)
	st.mu.Lock()
	defer st.mu.Unlock()
	c0, err := s.accountLocked(st, addr.Account)
	if err != nil {
		return Counts{}, fmt.Errorf("store: counts: %w", err)
	}
	if _, ok := c0.acct.Device(addr.Device); !ok {
		return Counts{}, fmt.Errorf("store: counts: device: %w", ErrNotFound)
	}
	var c Counts
	// Keys being claimed are still on disk; they are no longer available.
	inflight := func(n *int) func([]byte) {
		return func(k []byte) {
			if _, ok := st.inflight[string(k)]; ok {
				*n--
			}
		}
	}
	var dEC, dKEM int
	if c.OneTimeEC, err = s.count(deviceKey(addr, kindOneTimeEC), inflight(&dEC)); err != nil {
		return Counts{}, err
	}
	if c.OneTimeKEM, err = s.count(deviceKey(addr, kindOneTimeKEM), inflight(&dKEM)); err != nil {
		return Counts{}, err
	}
	c.OneTimeEC += dEC
	c.OneTimeKEM += dKEM
	return c, nil
}

// ClaimBundles implements [Store]. See [DB] for how claims stay exclusive
// while sharing synced commits.
func (s *DB) ClaimBundles(ctx context.Context, id crypto.AccountID, devices []crypto.DeviceID) (*Account, []Bundle, error) {
	if err := s.enter(ctx); err != nil {
		return nil, nil, err
	}
	defer s.leave()
	st := s.stripe(id)
	st.mu.Lock()
	a, bundles, claimed, err := s.pickLocked(st, id, devices)
	st.mu.Unlock()
	if err != nil {
		return nil, nil, err
	}
	if len(claimed) == 0 {
		return a, bundles, nil
	}
	b := s.db.NewBatch()
	for _, k := range claimed {
		err = errors.Join(err, b.Delete(k, nil))
	}
	if err == nil {
		err = s.commit(b)
	}
	b.Close()
	st.mu.Lock()
	for _, k := range claimed {
		delete(st.inflight, string(k))
	}
	if err != nil {
		// The keys were not deleted: let the next claim find them again.
		st.dropCursors(accountPrefix(id))
	}
	st.mu.Unlock()
	if err != nil {
		return nil, nil, fmt.Errorf("store: claim: %w", err)
	}
	return a, bundles, nil
}

// pickLocked chooses the bundles' keys and marks the one-time keys in
// flight. The caller holds st.mu.
func (s *DB) pickLocked(st *stripe, id crypto.AccountID, devices []crypto.DeviceID) (*Account, []Bundle, [][]byte, error) {
	c, err := s.accountLocked(st, id)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("store: claim: %w", err)
	}
	acopy := *c.acct
	a := &acopy
	var want []Device
	if len(devices) == 0 {
		want = a.Devices
	} else {
		for _, d := range devices {
			dev, ok := a.Device(d)
			if !ok {
				return nil, nil, nil, fmt.Errorf("store: claim: device: %w", ErrNotFound)
			}
			want = append(want, dev)
		}
	}
	var bundles []Bundle
	var claimed [][]byte
	for _, d := range want {
		addr := crypto.Address{Account: id, Device: d.ID}
		k, err := s.deviceKeysLocked(c, addr)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("store: claim: %w", err)
		}
		if k.signed == nil || k.lastResort == nil {
			continue
		}
		bd := Bundle{Device: d, SignedPreKey: k.signed, LastResort: k.lastResort}
		// One iterator per device, re-bounded for each kind: creating an
		// iterator costs more than moving one.
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: devicePrefix(addr), UpperBound: prefixEnd(devicePrefix(addr))})
		if err != nil {
			return nil, nil, nil, fmt.Errorf("store: claim: %w", err)
		}
		for _, kind := range []byte{kindOneTimeEC, kindOneTimeKEM} {
			key, val := s.firstFree(st, it, deviceKey(addr, kind))
			if key == nil {
				continue
			}
			if key == nil {
				continue
			}
			st.inflight[string(key)] = struct{}{}
			claimed = append(claimed, key)
			if kind == kindOneTimeEC {
				bd.OneTimeEC = val
			} else {
				bd.OneTimeKEM = val
			}
		}
		if err := it.Close(); err != nil {
			// Roll back this call's picks: nothing was handed out.
			for _, k := range claimed {
				delete(st.inflight, string(k))
			}
			st.dropCursors(accountPrefix(id))
			return nil, nil, nil, fmt.Errorf("store: claim: %w", err)
		}
		bundles = append(bundles, bd)
	}
	return a, bundles, claimed, nil
}

// firstFree returns the first key under prefix that is not in flight, with
// a copy of its value, or nil when there is none, and advances the
// prefix's cursor to it. it must be bounded within the device's prefix;
// its error is checked when the caller closes it. The caller holds st.mu.
func (s *DB) firstFree(st *stripe, it *pebble.Iterator, prefix []byte) (key, val []byte) {
	lower := prefix
	if c, ok := st.cursor[string(prefix)]; ok {
		lower = append(bytes.Clone(c), 0) // the smallest key after c
	}
	it.SetBounds(lower, prefixEnd(prefix))
	for ok := it.First(); ok; ok = it.Next() {
		if _, busy := st.inflight[string(it.Key())]; busy {
			continue
		}
		key, val = bytes.Clone(it.Key()), bytes.Clone(it.Value())
		break
	}
	if key != nil {
		st.setCursor(prefix, key)
	}
	return key, val
}

// accountHandle reads the account's handle record.
func (s *DB) accountHandle(id crypto.AccountID) (skeleton, handle string, err error) {
	v, err := s.get(accountKey(id, subHandle))
	if err != nil {
		return "", "", err
	}
	if len(v) < 1 || len(v) < 1+int(v[0]) {
		return "", "", errCorrupt
	}
	return string(v[1 : 1+v[0]]), string(v[1+v[0]:]), nil
}

func checkHandle(handle, skeleton string) error {
	if handle == "" || skeleton == "" || len(handle) > MaxHandleLen || len(skeleton) > MaxHandleLen {
		return fmt.Errorf("store: handle: bad length: %w", ErrNotFound)
	}
	return nil
}

// ClaimHandle implements [Store].
func (s *DB) ClaimHandle(ctx context.Context, id crypto.AccountID, handle, skeleton string) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.leave()
	if err := checkHandle(handle, skeleton); err != nil {
		return err
	}
	st := s.stripe(id)
	st.mu.Lock()
	defer st.mu.Unlock()
	if _, err := s.account(id); err != nil {
		return fmt.Errorf("store: claim handle: %w", err)
	}
	s.handleMu.Lock()
	defer s.handleMu.Unlock()
	v, err := s.get(handleKey(skeleton))
	switch {
	case err == nil:
		if len(v) < crypto.AccountIDSize || !bytes.Equal(v[:crypto.AccountIDSize], id[:]) {
			return ErrHandleTaken
		}
	case !errors.Is(err, ErrNotFound):
		return fmt.Errorf("store: claim handle: %w", err)
	}
	b := s.db.NewBatch()
	defer b.Close()
	if old, _, err := s.accountHandle(id); err == nil && old != skeleton {
		if err := b.Delete(handleKey(old), nil); err != nil {
			return fmt.Errorf("store: claim handle: %w", err)
		}
	}
	rec := append([]byte{byte(len(skeleton))}, skeleton...)
	rec = append(rec, handle...)
	err = errors.Join(
		b.Set(accountKey(id, subHandle), rec, nil),
		b.Set(handleKey(skeleton), append(bytes.Clone(id[:]), handle...), nil),
	)
	if err == nil {
		err = s.commit(b)
	}
	if err != nil {
		return fmt.Errorf("store: claim handle: %w", err)
	}
	return nil
}

// ReleaseHandle implements [Store].
func (s *DB) ReleaseHandle(ctx context.Context, id crypto.AccountID) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.leave()
	st := s.stripe(id)
	st.mu.Lock()
	defer st.mu.Unlock()
	s.handleMu.Lock()
	defer s.handleMu.Unlock()
	skeleton, _, err := s.accountHandle(id)
	if err != nil {
		return fmt.Errorf("store: release handle: %w", err)
	}
	b := s.db.NewBatch()
	defer b.Close()
	err = errors.Join(b.Delete(accountKey(id, subHandle), nil), b.Delete(handleKey(skeleton), nil))
	if err == nil {
		err = s.commit(b)
	}
	if err != nil {
		return fmt.Errorf("store: release handle: %w", err)
	}
	return nil
}

// LookupHandle implements [Store].
func (s *DB) LookupHandle(ctx context.Context, handle, skeleton string) (crypto.AccountID, error) {
	if err := s.enter(ctx); err != nil {
		return crypto.AccountID{}, err
	}
	defer s.leave()
	if err := checkHandle(handle, skeleton); err != nil {
		return crypto.AccountID{}, err
	}
	v, err := s.get(handleKey(skeleton))
	if err != nil {
		return crypto.AccountID{}, fmt.Errorf("store: lookup handle: %w", err)
	}
	if len(v) < crypto.AccountIDSize || string(v[crypto.AccountIDSize:]) != handle {
		return crypto.AccountID{}, fmt.Errorf("store: lookup handle: %w", ErrNotFound)
	}
	var id crypto.AccountID
	copy(id[:], v)
	return id, nil
}

// Handle implements [Store].
func (s *DB) Handle(ctx context.Context, id crypto.AccountID) (string, error) {
	if err := s.enter(ctx); err != nil {
		return "", err
	}
	defer s.leave()
	_, h, err := s.accountHandle(id)
	if err != nil {
		return "", fmt.Errorf("store: handle: %w", err)
	}
	return h, nil
}

// pebbleLogger forwards Pebble's errors to slog and drops its chatter.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(string, ...any) {}
func (p pebbleLogger) Errorf(format string, args ...any) {
	if p.l != nil {
		p.l.Error("pebble", "msg", fmt.Sprintf(format, args...))
	}
}
func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if p.l != nil {
		p.l.Error("pebble fatal", "msg", msg)
	}
	panic(pebbleFatal(msg))
}

// pebbleFatal is what Pebble's fatal errors panic with. A commit that
// fails before reaching the WAL (a new WAL file cannot be created on a
// full disk) is one: commit recovers it as a storage failure.
type pebbleFatal string

func (f pebbleFatal) Error() string { return "store: pebble: " + string(f) }
