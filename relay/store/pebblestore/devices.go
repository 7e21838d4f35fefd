package pebblestore

import (
	"context"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/relay/store"
)

// MaxPushEndpointLen bounds a stored push endpoint URL.
const MaxPushEndpointLen = 2048

// setOp writes (or, with a nil value, deletes) one record. It goes through
// the committer so that it is ordered with purges.
type setOp struct {
	key, value []byte
}

func (*setOp) durable() bool { return true }

func (o *setOp) apply(w *writer) error {
	if o.value == nil {
		w.del(o.key)
	} else {
		w.set(o.key, o.value)
	}
	return nil
}

// SetAccessKeyHash implements store.Devices.
func (d *DB) SetAccessKeyHash(ctx context.Context, account crypto.AccountID, hash [32]byte) error {
	if err := d.submit(ctx, &setOp{key: accountKey(tAccess, account), value: hash[:]}); err != nil {
		return fmt.Errorf("pebblestore: set access key: %w", err)
	}
	return nil
}

// AccessKeyHash implements store.Devices.
func (d *DB) AccessKeyHash(ctx context.Context, account crypto.AccountID) ([32]byte, bool, error) {
	var h [32]byte
	v, ok, err := d.get(ctx, accountKey(tAccess, account))
	if err != nil || !ok {
		return h, false, err
	}
	if len(v) != len(h) {
		return h, false, fmt.Errorf("pebblestore: access key of %s: %w", account, errCorrupt)
	}
	copy(h[:], v)
	return h, true, nil
}

// SetPushEndpoint implements store.Devices.
func (d *DB) SetPushEndpoint(ctx context.Context, q store.QueueID, url string) error {
	if len(url) > MaxPushEndpointLen {
		return fmt.Errorf("pebblestore: push endpoint of %d bytes exceeds %d", len(url), MaxPushEndpointLen)
	}
	o := &setOp{key: queueKey(tPush, q)}
	if url != "" {
		o.value = []byte(url)
	}
	if err := d.submit(ctx, o); err != nil {
		return fmt.Errorf("pebblestore: set push endpoint: %w", err)
	}
	return nil
}

// PushEndpoint implements store.Devices.
func (d *DB) PushEndpoint(ctx context.Context, q store.QueueID) (string, error) {
	v, _, err := d.get(ctx, queueKey(tPush, q))
	return string(v), err
}

// get reads one committed record, translating pebble.ErrNotFound.
func (d *DB) get(ctx context.Context, k []byte) ([]byte, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	v, c, err := d.pdb.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("pebblestore: get: %w", err)
	}
	defer c.Close()
	return append([]byte(nil), v...), true, nil
}
