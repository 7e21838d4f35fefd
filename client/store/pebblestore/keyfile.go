package pebblestore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// The wrapped store key lives in a small file beside Pebble's files rather
// than under a Pebble key: replacing a file by rename leaves no older copy
// behind, while a Pebble value is rewritten through the WAL and compactions
// and an old copy, still openable with the old passphrase, could survive a
// passphrase change in a stale log or sstable.
//
// Key file layout (implementation format, version 1):
//
//	keyFileMagic ("sotto-client-store/v1\n") || wrapped store key (an age file, scrypt recipient)
const (
	keyFileName  = "STOREKEY"
	keyFileTemp  = "STOREKEY.tmp"
	keyFileMagic = "sotto-client-store/v1\n"
	// maxKeyFileSize bounds what Open reads: an age scrypt file wrapping a
	// 32-byte key is about 250 bytes.
	maxKeyFileSize = 4 << 10
)

// parseKeyFile checks the key file's header and returns the wrapped key.
func parseKeyFile(b []byte) ([]byte, error) {
	if len(b) > maxKeyFileSize {
		return nil, fmt.Errorf("pebblestore: key file of %d bytes: %w", len(b), ErrCorrupt)
	}
	wrapped, ok := bytes.CutPrefix(b, []byte(keyFileMagic))
	if !ok {
		return nil, fmt.Errorf("pebblestore: key file header: %w", ErrCorrupt)
	}
	if len(wrapped) == 0 {
		return nil, fmt.Errorf("pebblestore: empty key file: %w", ErrCorrupt)
	}
	return wrapped, nil
}

func marshalKeyFile(wrapped []byte) []byte {
	return append([]byte(keyFileMagic), wrapped...)
}

func readKeyFile(fs vfs.FS, dir string) ([]byte, error) {
	f, err := fs.Open(fs.PathJoin(dir, keyFileName))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("pebblestore: no store in %s: %w", dir, ErrNoStore)
		}
		return nil, fmt.Errorf("pebblestore: open key file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("pebblestore: read key file: %w", err)
	}
	return parseKeyFile(b)
}

// writeKeyFile replaces the key file atomically: write a temporary file,
// sync it, rename it over the old one and sync the directory. On the
// default file system the file is readable by its owner only.
func writeKeyFile(fs vfs.FS, dir string, wrapped []byte) error {
	tmp := fs.PathJoin(dir, keyFileTemp)
	f, err := fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("pebblestore: create key file: %w", err)
	}
	if fs == vfs.Default {
		// Restrict before writing anything into it.
		if err := os.Chmod(tmp, 0o600); err != nil {
			f.Close()
			return fmt.Errorf("pebblestore: key file mode: %w", err)
		}
	}
	if _, err := f.Write(marshalKeyFile(wrapped)); err != nil {
		f.Close()
		return fmt.Errorf("pebblestore: write key file: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("pebblestore: sync key file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("pebblestore: close key file: %w", err)
	}
	if err := fs.Rename(tmp, fs.PathJoin(dir, keyFileName)); err != nil {
		return fmt.Errorf("pebblestore: install key file: %w", err)
	}
	d, err := fs.OpenDir(dir)
	if err != nil {
		return fmt.Errorf("pebblestore: open store directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("pebblestore: sync store directory: %w", err)
	}
	return nil
}
