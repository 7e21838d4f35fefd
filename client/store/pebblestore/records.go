package pebblestore

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/crypto"
)

// This file holds the small keyed records: identity, prekeys, sessions,
// sender keys and the client's own records. Key layouts are in keys.go.

// LoadIdentity implements [store.IdentityStore].
func (d *DB) LoadIdentity(ctx context.Context) ([]byte, error) {
	return d.load(ctx, "load identity", []byte{tIdentity})
}

// StoreIdentity implements [store.IdentityStore]. The write is synced.
func (d *DB) StoreIdentity(ctx context.Context, rec []byte) error {
	return d.save(ctx, "store identity", []byte{tIdentity}, rec)
}

func (d *DB) preKeyKey(kind store.PreKeyKind, id uint32) []byte {
	k := []byte{tPreKey, byte(kind)}
	return d.hasher.sum(k, hPreKey, []byte{byte(kind)}, be32(id))
}

func checkPreKeyKind(kind store.PreKeyKind) error {
	if !kind.Valid() {
		return fmt.Errorf("pebblestore: %v: %w", kind, store.ErrInvalid)
	}
	return nil
}

// LoadPreKey implements [store.PreKeyStore].
func (d *DB) LoadPreKey(ctx context.Context, kind store.PreKeyKind, id uint32) ([]byte, error) {
	if err := checkPreKeyKind(kind); err != nil {
		return nil, err
	}
	v, err := d.load(ctx, fmt.Sprintf("load %v prekey %d", kind, id), d.preKeyKey(kind, id))
	if err != nil {
		return nil, err
	}
	if len(v) < 4 || binary.BigEndian.Uint32(v) != id {
		return nil, fmt.Errorf("pebblestore: %v prekey %d: %w", kind, id, ErrCorrupt)
	}
	return v[4:], nil
}

// StorePreKey implements [store.PreKeyStore]. The write is synced: a
// prekey published before a crash must still be there to answer the
// sessions started with it.
func (d *DB) StorePreKey(ctx context.Context, kind store.PreKeyKind, id uint32, rec []byte) error {
	if err := checkPreKeyKind(kind); err != nil {
		return err
	}
	return d.save(ctx, "store prekey", d.preKeyKey(kind, id), append(be32(id), rec...))
}

// RemovePreKey implements [store.PreKeyStore]. The write is synced.
func (d *DB) RemovePreKey(ctx context.Context, kind store.PreKeyKind, id uint32) error {
	if err := checkPreKeyKind(kind); err != nil {
		return err
	}
	return d.remove(ctx, "remove prekey", d.preKeyKey(kind, id))
}

// PreKeyIDs implements [store.PreKeyStore]. It opens every prekey of kind
// to read its ID, since keys hold only hashes.
func (d *DB) PreKeyIDs(ctx context.Context, kind store.PreKeyKind) ([]uint32, error) {
	if err := checkPreKeyKind(kind); err != nil {
		return nil, err
	}
	lower := []byte{tPreKey, byte(kind)}
	var ids []uint32
	err := d.iterate(ctx, "list prekeys", lower, prefixEnd(lower), func(_, v []byte) error {
		if len(v) < 4 {
			return fmt.Errorf("pebblestore: prekey record: %w", ErrCorrupt)
		}
		ids = append(ids, binary.BigEndian.Uint32(v))
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(ids)
	return ids, nil
}

func (d *DB) sessionPrefix(account crypto.AccountID) []byte {
	return d.hasher.sum([]byte{tSession}, hAccount, account[:])
}

func (d *DB) sessionKey(addr crypto.Address) []byte {
	return d.hasher.sum(d.sessionPrefix(addr.Account), hAddress, addr.Account[:], be32(uint32(addr.Device)))
}

// LoadSession implements [store.SessionStore].
func (d *DB) LoadSession(ctx context.Context, addr crypto.Address) ([]byte, error) {
	v, err := d.load(ctx, "load session", d.sessionKey(addr))
	if err != nil {
		return nil, err
	}
	if len(v) < 4 || binary.BigEndian.Uint32(v) != uint32(addr.Device) {
		return nil, fmt.Errorf("pebblestore: session record: %w", ErrCorrupt)
	}
	return v[4:], nil
}

// StoreSession implements [store.SessionStore]. The write is synced: a
// ratchet state lost after its message was acknowledged cannot be rebuilt.
func (d *DB) StoreSession(ctx context.Context, addr crypto.Address, rec []byte) error {
	return d.save(ctx, "store session", d.sessionKey(addr), append(be32(uint32(addr.Device)), rec...))
}

// DeleteSession implements [store.SessionStore]. The write is synced.
func (d *DB) DeleteSession(ctx context.Context, addr crypto.Address) error {
	return d.remove(ctx, "delete session", d.sessionKey(addr))
}

// SessionDevices implements [store.SessionStore].
func (d *DB) SessionDevices(ctx context.Context, account crypto.AccountID) ([]crypto.DeviceID, error) {
	lower := d.sessionPrefix(account)
	var devs []crypto.DeviceID
	err := d.iterate(ctx, "list sessions", lower, prefixEnd(lower), func(_, v []byte) error {
		if len(v) < 4 {
			return fmt.Errorf("pebblestore: session record: %w", ErrCorrupt)
		}
		devs = append(devs, crypto.DeviceID(binary.BigEndian.Uint32(v)))
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(devs)
	return devs, nil
}

func (d *DB) senderKeyPrefix(group store.GroupID) []byte {
	return d.hasher.sum([]byte{tSender}, hGroup, group[:])
}

// LoadSenderKey implements [store.SenderKeyStore].
func (d *DB) LoadSenderKey(ctx context.Context, group store.GroupID, sender crypto.Address) ([]byte, error) {
	return d.load(ctx, "load sender key", d.senderKeyKey(group, sender))
}

func (d *DB) senderKeyKey(group store.GroupID, sender crypto.Address) []byte {
	return d.hasher.sum(d.senderKeyPrefix(group), hGroupSender, group[:], sender.Account[:], be32(uint32(sender.Device)))
}

// StoreSenderKey implements [store.SenderKeyStore]. The write is synced.
func (d *DB) StoreSenderKey(ctx context.Context, group store.GroupID, sender crypto.Address, rec []byte) error {
	return d.save(ctx, "store sender key", d.senderKeyKey(group, sender), rec)
}

// DeleteSenderKeys implements [store.SenderKeyStore] with one synced range
// deletion.
func (d *DB) DeleteSenderKeys(ctx context.Context, group store.GroupID) error {
	if err := d.enter(ctx); err != nil {
		return err
	}
	defer d.exit()
	lower := d.senderKeyPrefix(group)
	if err := d.db.DeleteRange(lower, prefixEnd(lower), durable(ctx)); err != nil {
		return fmt.Errorf("pebblestore: delete sender keys: %w", err)
	}
	return nil
}

func (d *DB) recordPrefix(kind string) []byte {
	return d.hasher.sum([]byte{tRecord}, hKind, []byte(kind))
}

func (d *DB) recordKey(kind string, key []byte) []byte {
	// The kind is length-prefixed so that (kind, key) pairs with the same
	// concatenation hash apart.
	return d.hasher.sum(d.recordPrefix(kind), hKindKey, []byte{byte(len(kind))}, []byte(kind), key)
}

// decodeRecord splits a record value: uvarint len(key) || key || record.
func decodeRecord(v []byte) (key, rec []byte, err error) {
	n, w := binary.Uvarint(v)
	if w <= 0 || n > uint64(len(v)-w) {
		return nil, nil, fmt.Errorf("pebblestore: record value: %w", ErrCorrupt)
	}
	return v[w : w+int(n) : w+int(n)], v[w+int(n):], nil
}

// LoadRecord implements [store.RecordStore].
func (d *DB) LoadRecord(ctx context.Context, kind string, key []byte) ([]byte, error) {
	if err := store.CheckKind(kind); err != nil {
		return nil, err
	}
	v, err := d.load(ctx, "load "+kind+" record", d.recordKey(kind, key))
	if err != nil {
		return nil, err
	}
	_, rec, err := decodeRecord(v)
	return rec, err
}

// StoreRecord implements [store.RecordStore]. The write is synced.
func (d *DB) StoreRecord(ctx context.Context, kind string, key []byte, rec []byte) error {
	if err := store.CheckKind(kind); err != nil {
		return err
	}
	v := binary.AppendUvarint(make([]byte, 0, binary.MaxVarintLen64+len(key)+len(rec)), uint64(len(key)))
	v = append(append(v, key...), rec...)
	return d.save(ctx, "store "+kind+" record", d.recordKey(kind, key), v)
}

// DeleteRecord implements [store.RecordStore]. The write is synced.
func (d *DB) DeleteRecord(ctx context.Context, kind string, key []byte) error {
	if err := store.CheckKind(kind); err != nil {
		return err
	}
	return d.remove(ctx, "delete "+kind+" record", d.recordKey(kind, key))
}

// ListRecords implements [store.RecordStore]. Records come in the order
// of their hashed keys.
func (d *DB) ListRecords(ctx context.Context, kind string, fn func(key, rec []byte) error) error {
	if err := store.CheckKind(kind); err != nil {
		return err
	}
	lower := d.recordPrefix(kind)
	return d.iterate(ctx, "list "+kind+" records", lower, prefixEnd(lower), func(_, v []byte) error {
		key, rec, err := decodeRecord(v)
		if err != nil {
			return err
		}
		return fn(key, rec)
	})
}
