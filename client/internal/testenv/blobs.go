package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"sync"
	"time"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/relay/store"
)

// maxBlob bounds one blob in the test relay (attachments of 64 MiB and a
// little age overhead).
const maxBlob = 80 << 20

// memBlobs keeps blobs in memory: enough for the client's tests, which
// care about the client's heap, not the relay's.
type memBlobs struct {
	mu sync.Mutex
	m  map[store.BlobID][]byte
}

func newMemBlobs() *memBlobs { return &memBlobs{m: map[store.BlobID][]byte{}} }

func (b *memBlobs) Create(_ context.Context, _ crypto.AccountID, declared int64, _ time.Time, r io.Reader) (store.BlobID, error) {
	if declared > maxBlob {
		return store.BlobID{}, store.ErrTooLarge
	}
	data, err := io.ReadAll(io.LimitReader(r, declared+1))
	if err != nil {
		return store.BlobID{}, err
	}
	if int64(len(data)) != declared {
		return store.BlobID{}, io.ErrUnexpectedEOF
	}
	var id store.BlobID
	rand.Read(id[:])
	b.mu.Lock()
	b.m[id] = data
	b.mu.Unlock()
	return id, nil
}

type readSeekCloser struct{ *bytes.Reader }

func (readSeekCloser) Close() error { return nil }

func (b *memBlobs) Open(_ context.Context, id store.BlobID) (store.ReadSeekCloser, int64, error) {
	b.mu.Lock()
	data, ok := b.m[id]
	b.mu.Unlock()
	if !ok {
		return nil, 0, store.ErrNotFound
	}
	return readSeekCloser{bytes.NewReader(data)}, int64(len(data)), nil
}

func (b *memBlobs) Delete(_ context.Context, id store.BlobID) error {
	b.mu.Lock()
	delete(b.m, id)
	b.mu.Unlock()
	return nil
}

func (b *memBlobs) PurgeAccount(context.Context, crypto.AccountID) error { return nil }

func (b *memBlobs) Sweep(context.Context, time.Time) (int, error) { return 0, nil }
