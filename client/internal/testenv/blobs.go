package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/relay/store"
)

// maxBlob bounds one blob in the test relay (attachments of 64 MiB and a
// little age overhead).
const maxBlob = 80 << 20

// fileBlobs keeps blobs as files, so that the relay holds none in memory
// and tests can measure the client's heap.
type fileBlobs struct{ dir string }

func newFileBlobs(dir string) (*fileBlobs, error) {
	return &fileBlobs{dir: dir}, os.MkdirAll(dir, 0o700)
}

func (b *fileBlobs) path(id store.BlobID) string {
	return filepath.Join(b.dir, hex.EncodeToString(id[:]))
}

func (b *fileBlobs) Create(_ context.Context, _ crypto.AccountID, declared int64, _ time.Time, r io.Reader) (store.BlobID, error) {
	if declared > maxBlob {
		return store.BlobID{}, store.ErrTooLarge
	}
	var id store.BlobID
	rand.Read(id[:])
	f, err := os.Create(b.path(id))
	if err != nil {
		return store.BlobID{}, err
	}
	n, err := io.Copy(f, io.LimitReader(r, declared+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n != declared {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		os.Remove(b.path(id))
		return store.BlobID{}, err
	}
	return id, nil
}

func (b *fileBlobs) Open(_ context.Context, id store.BlobID) (store.ReadSeekCloser, int64, error) {
	f, err := os.Open(b.path(id))
	if err != nil {
		return nil, 0, store.ErrNotFound
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, st.Size(), nil
}

func (b *fileBlobs) Delete(_ context.Context, id store.BlobID) error {
	os.Remove(b.path(id))
	return nil
}

func (b *fileBlobs) PurgeAccount(context.Context, crypto.AccountID) error { return nil }

func (b *fileBlobs) Sweep(context.Context, time.Time) (int, error) { return 0, nil }
