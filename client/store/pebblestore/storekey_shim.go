package pebblestore

// TEMPORARY: stands in for crypto/storekey.go until it lands; replaced by
// calls to the crypto package. Do not build on it.

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"

	"filippo.io/age"
)

type storeKey [32]byte

func newStoreKey() (storeKey, error) {
	var k storeKey
	if _, err := rand.Read(k[:]); err != nil {
		return k, err
	}
	return k, nil
}

func wrapStoreKey(k storeKey, passphrase []byte, workFactor int) ([]byte, error) {
	r, err := age.NewScryptRecipient(string(passphrase))
	if err != nil {
		return nil, err
	}
	if workFactor > 0 {
		r.SetWorkFactor(workFactor)
	}
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, r)
	if err != nil {
		return nil, err
	}
	w.Write(k[:])
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func unwrapStoreKey(wrapped, passphrase []byte) (storeKey, error) {
	var k storeKey
	id, err := age.NewScryptIdentity(string(passphrase))
	if err != nil {
		return k, err
	}
	r, err := age.Decrypt(bytes.NewReader(wrapped), id)
	if err != nil {
		var nm *age.NoIdentityMatchError
		if errors.As(err, &nm) || errors.Is(err, age.ErrIncorrectIdentity) {
			return k, ErrWrongPassphrase
		}
		return k, fmt.Errorf("pebblestore: unwrap store key: %v: %w", err, ErrCorrupt)
	}
	b, err := io.ReadAll(io.LimitReader(r, 64))
	if err != nil || len(b) != 32 {
		return k, ErrCorrupt
	}
	copy(k[:], b)
	return k, nil
}
