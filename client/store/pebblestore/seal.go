package pebblestore

import "fmt"

// Values are sealed with the crypto package's store-value AEAD
// ([crypto.StoreKey.Seal], PROTOCOL.md §10: XChaCha20-Poly1305 under a
// subkey derived from the store key with HKDF), with the Pebble key as
// associated data so that a value moved under another key fails to open.

// seal seals value for storage under key.
func (d *DB) seal(key, value []byte) []byte { return d.sk.Seal(key, value) }

// open authenticates and decrypts a value read under key. Bytes read from
// disk are untrusted: anything malformed, truncated, tampered with or moved
// returns ErrCorrupt. The result is a new slice.
func (d *DB) open(key, sealed []byte) ([]byte, error) {
	v, err := d.sk.Open(key, sealed)
	if err != nil {
		return nil, fmt.Errorf("pebblestore: value of %d bytes does not authenticate: %w", len(sealed), ErrCorrupt)
	}
	return v, nil
}
