// Package memstore implements the client's storage interfaces
// ([store.Store]) in memory: maps guarded by one mutex, with every byte
// slice copied in and out so that callers never share memory with the store.
//
// It is the reference implementation of the contract checked by package
// storetest, and serves tests and ephemeral clients. It keeps secrets in
// plain memory and persists nothing.
package memstore

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/crypto"
)

type prekeyKey struct {
	kind store.PreKeyKind
	id   uint32
}

type senderKeyKey struct {
	group  store.GroupID
	sender crypto.Address
}

type recordKey struct {
	kind string
	key  string
}

type messageKey struct {
	conv store.ConversationID
	id   [16]byte
}

type seenKey struct {
	sender crypto.AccountID
	id     [16]byte
}

type outboxEntry struct {
	seq uint64
	rec []byte
}

// Store is an in-memory [store.Store]. The zero value is not usable; call
// [New].
type Store struct {
	mu struct {
		sync.Mutex
		closed      bool
		identity    []byte
		hasIdentity bool
		prekeys     map[prekeyKey][]byte
		sessions    map[crypto.Address][]byte
		senderKeys  map[senderKeyKey][]byte
		records     map[recordKey][]byte
		messages    map[messageKey]store.MessageRecord
		outbox      map[[16]byte]outboxEntry
		outboxSeq   uint64
		seen        map[seenKey]time.Time
	}
}

var (
	_ store.Store  = (*Store)(nil)
	_ store.Syncer = (*Store)(nil)
)

// New returns an empty in-memory store.
func New() *Store {
	s := new(Store)
	s.mu.prekeys = make(map[prekeyKey][]byte)
	s.mu.sessions = make(map[crypto.Address][]byte)
	s.mu.senderKeys = make(map[senderKeyKey][]byte)
	s.mu.records = make(map[recordKey][]byte)
	s.mu.messages = make(map[messageKey]store.MessageRecord)
	s.mu.outbox = make(map[[16]byte]outboxEntry)
	s.mu.seen = make(map[seenKey]time.Time)
	return s
}

// clone copies b, keeping a non-nil empty slice non-nil so that an empty
// record reads back as stored.
func clone(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return bytes.Clone(b)
}

// normTime drops the monotonic reading and the zone, keeping what a
// persistent store keeps: the instant to the nanosecond.
func normTime(t time.Time) time.Time { return time.Unix(0, t.UnixNano()) }

func cloneMessage(m store.MessageRecord) store.MessageRecord {
	m.Data = clone(m.Data)
	return m
}

// lock takes the mutex after checking ctx, and fails if the store is closed.
// On success the caller must unlock.
func (s *Store) lock(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memstore: %w", err)
	}
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		return fmt.Errorf("memstore: %w", store.ErrClosed)
	}
	return nil
}

func notFound(what string) error {
	return fmt.Errorf("memstore: %s: %w", what, store.ErrNotFound)
}

// Sync implements [store.Syncer]. Nothing in memory outlives the process,
// so there is nothing to flush: it only reports a closed store.
func (s *Store) Sync(ctx context.Context) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	s.mu.Unlock()
	return nil
}

// Close empties the store. Further calls fail with store.ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		return fmt.Errorf("memstore: %w", store.ErrClosed)
	}
	s.mu.closed = true
	s.mu.identity = nil
	s.mu.prekeys = nil
	s.mu.sessions = nil
	s.mu.senderKeys = nil
	s.mu.records = nil
	s.mu.messages = nil
	s.mu.outbox = nil
	s.mu.seen = nil
	return nil
}

// LoadIdentity implements [store.IdentityStore].
func (s *Store) LoadIdentity(ctx context.Context) ([]byte, error) {
	if err := s.lock(ctx); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	if !s.mu.hasIdentity {
		return nil, notFound("identity")
	}
	return clone(s.mu.identity), nil
}

// StoreIdentity implements [store.IdentityStore].
func (s *Store) StoreIdentity(ctx context.Context, rec []byte) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	s.mu.identity, s.mu.hasIdentity = clone(rec), true
	return nil
}

func checkKind(kind store.PreKeyKind) error {
	if !kind.Valid() {
		return fmt.Errorf("memstore: %v: %w", kind, store.ErrInvalid)
	}
	return nil
}

// LoadPreKey implements [store.PreKeyStore].
func (s *Store) LoadPreKey(ctx context.Context, kind store.PreKeyKind, id uint32) ([]byte, error) {
	if err := checkKind(kind); err != nil {
		return nil, err
	}
	if err := s.lock(ctx); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	rec, ok := s.mu.prekeys[prekeyKey{kind, id}]
	if !ok {
		return nil, notFound(fmt.Sprintf("%v prekey %d", kind, id))
	}
	return clone(rec), nil
}

// StorePreKey implements [store.PreKeyStore].
func (s *Store) StorePreKey(ctx context.Context, kind store.PreKeyKind, id uint32, rec []byte) error {
	if err := checkKind(kind); err != nil {
		return err
	}
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	s.mu.prekeys[prekeyKey{kind, id}] = clone(rec)
	return nil
}

// RemovePreKey implements [store.PreKeyStore].
func (s *Store) RemovePreKey(ctx context.Context, kind store.PreKeyKind, id uint32) error {
	if err := checkKind(kind); err != nil {
		return err
	}
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	delete(s.mu.prekeys, prekeyKey{kind, id})
	return nil
}

// PreKeyIDs implements [store.PreKeyStore].
func (s *Store) PreKeyIDs(ctx context.Context, kind store.PreKeyKind) ([]uint32, error) {
	if err := checkKind(kind); err != nil {
		return nil, err
	}
	if err := s.lock(ctx); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	var ids []uint32
	for k := range s.mu.prekeys {
		if k.kind == kind {
			ids = append(ids, k.id)
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// LoadSession implements [store.SessionStore].
func (s *Store) LoadSession(ctx context.Context, addr crypto.Address) ([]byte, error) {
	if err := s.lock(ctx); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	rec, ok := s.mu.sessions[addr]
	if !ok {
		return nil, notFound("session " + addr.String())
	}
	return clone(rec), nil
}

// StoreSession implements [store.SessionStore].
func (s *Store) StoreSession(ctx context.Context, addr crypto.Address, rec []byte) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	s.mu.sessions[addr] = clone(rec)
	return nil
}

// DeleteSession implements [store.SessionStore].
func (s *Store) DeleteSession(ctx context.Context, addr crypto.Address) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	delete(s.mu.sessions, addr)
	return nil
}

// SessionDevices implements [store.SessionStore].
func (s *Store) SessionDevices(ctx context.Context, account crypto.AccountID) ([]crypto.DeviceID, error) {
	if err := s.lock(ctx); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	var devs []crypto.DeviceID
	for a := range s.mu.sessions {
		if a.Account == account {
			devs = append(devs, a.Device)
		}
	}
	slices.Sort(devs)
	return devs, nil
}

// LoadSenderKey implements [store.SenderKeyStore].
func (s *Store) LoadSenderKey(ctx context.Context, group store.GroupID, sender crypto.Address) ([]byte, error) {
	if err := s.lock(ctx); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	rec, ok := s.mu.senderKeys[senderKeyKey{group, sender}]
	if !ok {
		return nil, notFound("sender key of " + sender.String())
	}
	return clone(rec), nil
}

// StoreSenderKey implements [store.SenderKeyStore].
func (s *Store) StoreSenderKey(ctx context.Context, group store.GroupID, sender crypto.Address, rec []byte) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	s.mu.senderKeys[senderKeyKey{group, sender}] = clone(rec)
	return nil
}

// DeleteSenderKeys implements [store.SenderKeyStore].
func (s *Store) DeleteSenderKeys(ctx context.Context, group store.GroupID) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	for k := range s.mu.senderKeys {
		if k.group == group {
			delete(s.mu.senderKeys, k)
		}
	}
	return nil
}

// LoadRecord implements [store.RecordStore].
func (s *Store) LoadRecord(ctx context.Context, kind string, key []byte) ([]byte, error) {
	if err := store.CheckKind(kind); err != nil {
		return nil, err
	}
	if err := s.lock(ctx); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	rec, ok := s.mu.records[recordKey{kind, string(key)}]
	if !ok {
		return nil, notFound(kind + " record")
	}
	return clone(rec), nil
}

// StoreRecord implements [store.RecordStore].
func (s *Store) StoreRecord(ctx context.Context, kind string, key []byte, rec []byte) error {
	if err := store.CheckKind(kind); err != nil {
		return err
	}
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	s.mu.records[recordKey{kind, string(key)}] = clone(rec)
	return nil
}

// DeleteRecord implements [store.RecordStore].
func (s *Store) DeleteRecord(ctx context.Context, kind string, key []byte) error {
	if err := store.CheckKind(kind); err != nil {
		return err
	}
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	delete(s.mu.records, recordKey{kind, string(key)})
	return nil
}

// ListRecords implements [store.RecordStore]. It calls fn on a snapshot taken
// under the lock, so fn may use the store.
func (s *Store) ListRecords(ctx context.Context, kind string, fn func(key, rec []byte) error) error {
	if err := store.CheckKind(kind); err != nil {
		return err
	}
	if err := s.lock(ctx); err != nil {
		return err
	}
	type kv struct{ k, v []byte }
	var snap []kv
	for k, v := range s.mu.records {
		if k.kind == kind {
			snap = append(snap, kv{[]byte(k.key), clone(v)})
		}
	}
	s.mu.Unlock()
	for _, e := range snap {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("memstore: %w", err)
		}
		if err := fn(e.k, e.v); err != nil {
			return err
		}
	}
	return nil
}

// PutMessage implements [store.MessageStore].
func (s *Store) PutMessage(ctx context.Context, m store.MessageRecord) error {
	if err := store.CheckTime(m.Time); err != nil {
		return err
	}
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	m = cloneMessage(m)
	m.Time = normTime(m.Time)
	s.mu.messages[messageKey{m.Conversation, m.ID}] = m
	return nil
}

// AddMessage implements [store.MessageStore].
func (s *Store) AddMessage(ctx context.Context, m store.MessageRecord) (bool, error) {
	if err := store.CheckTime(m.Time); err != nil {
		return false, err
	}
	if err := s.lock(ctx); err != nil {
		return false, err
	}
	defer s.mu.Unlock()
	k := messageKey{m.Conversation, m.ID}
	if _, ok := s.mu.messages[k]; ok {
		return false, nil
	}
	m = cloneMessage(m)
	m.Time = normTime(m.Time)
	s.mu.messages[k] = m
	return true, nil
}

// GetMessage implements [store.MessageStore].
func (s *Store) GetMessage(ctx context.Context, conv store.ConversationID, id [16]byte) (store.MessageRecord, error) {
	if err := s.lock(ctx); err != nil {
		return store.MessageRecord{}, err
	}
	defer s.mu.Unlock()
	m, ok := s.mu.messages[messageKey{conv, id}]
	if !ok {
		return store.MessageRecord{}, notFound("message")
	}
	return cloneMessage(m), nil
}

// DeleteMessage implements [store.MessageStore].
func (s *Store) DeleteMessage(ctx context.Context, conv store.ConversationID, id [16]byte) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	delete(s.mu.messages, messageKey{conv, id})
	return nil
}

// ListMessages implements [store.MessageStore]. Messages with equal times
// come in descending order of ID.
func (s *Store) ListMessages(ctx context.Context, conv store.ConversationID, after, before time.Time, limit int) ([]store.MessageRecord, error) {
	if err := s.lock(ctx); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	var out []store.MessageRecord
	for k, m := range s.mu.messages {
		if k.conv != conv {
			continue
		}
		if !after.IsZero() && m.Time.Before(after) {
			continue
		}
		if !before.IsZero() && !m.Time.Before(before) {
			continue
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b store.MessageRecord) int {
		if c := b.Time.Compare(a.Time); c != 0 {
			return c
		}
		return bytes.Compare(b.ID[:], a.ID[:])
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	for i := range out {
		out[i] = cloneMessage(out[i])
	}
	return out, nil
}

// ScanMessages implements [store.MessageStore]. It calls fn on a snapshot
// taken under the lock, so fn may use the store.
func (s *Store) ScanMessages(ctx context.Context, fn func(store.MessageRecord) error) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	snap := make([]store.MessageRecord, 0, len(s.mu.messages))
	for _, m := range s.mu.messages {
		snap = append(snap, cloneMessage(m))
	}
	s.mu.Unlock()
	for _, m := range snap {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("memstore: %w", err)
		}
		if err := fn(m); err != nil {
			return err
		}
	}
	return nil
}

// PutOutbox implements [store.OutboxStore].
func (s *Store) PutOutbox(ctx context.Context, id [16]byte, rec []byte) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	e, ok := s.mu.outbox[id]
	if !ok {
		s.mu.outboxSeq++
		e.seq = s.mu.outboxSeq
	}
	e.rec = clone(rec)
	s.mu.outbox[id] = e
	return nil
}

// DeleteOutbox implements [store.OutboxStore].
func (s *Store) DeleteOutbox(ctx context.Context, id [16]byte) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	delete(s.mu.outbox, id)
	return nil
}

// ListOutbox implements [store.OutboxStore]. It calls fn on a snapshot taken
// under the lock, so fn may use the store (typically DeleteOutbox).
func (s *Store) ListOutbox(ctx context.Context, fn func(id [16]byte, rec []byte) error) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	type entry struct {
		id  [16]byte
		seq uint64
		rec []byte
	}
	snap := make([]entry, 0, len(s.mu.outbox))
	for id, e := range s.mu.outbox {
		snap = append(snap, entry{id, e.seq, clone(e.rec)})
	}
	s.mu.Unlock()
	slices.SortFunc(snap, func(a, b entry) int { return cmp.Compare(a.seq, b.seq) })
	for _, e := range snap {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("memstore: %w", err)
		}
		if err := fn(e.id, e.rec); err != nil {
			return err
		}
	}
	return nil
}

// Seen implements [store.SeenStore].
func (s *Store) Seen(ctx context.Context, sender crypto.AccountID, id [16]byte) (bool, error) {
	if err := s.lock(ctx); err != nil {
		return false, err
	}
	defer s.mu.Unlock()
	_, ok := s.mu.seen[seenKey{sender, id}]
	return ok, nil
}

// MarkSeen implements [store.SeenStore].
func (s *Store) MarkSeen(ctx context.Context, sender crypto.AccountID, id [16]byte, at time.Time) (bool, error) {
	if err := store.CheckTime(at); err != nil {
		return false, err
	}
	if err := s.lock(ctx); err != nil {
		return false, err
	}
	defer s.mu.Unlock()
	k := seenKey{sender, id}
	if _, ok := s.mu.seen[k]; ok {
		return true, nil
	}
	s.mu.seen[k] = normTime(at)
	return false, nil
}

// PruneSeen implements [store.SeenStore].
func (s *Store) PruneSeen(ctx context.Context, cutoff time.Time) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	for k, at := range s.mu.seen {
		if at.Before(cutoff) {
			delete(s.mu.seen, k)
		}
	}
	return nil
}
