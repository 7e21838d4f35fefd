package pebblestore

import (
	"crypto/cipher"
	"crypto/rand"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"
)

// Sealed value layout (implementation format, version 1):
//
//	sealed = version (1 byte, 0x01) || nonce (24 bytes) || XChaCha20-Poly1305(value key, nonce, plaintext, ad = Pebble key)
//
// XChaCha20-Poly1305 takes 24-byte random nonces, so a store that is
// rewritten for years (every ratchet step rewrites a session) never comes
// near a nonce collision, which 12-byte random nonces would bound at about
// 2^32 writes. The Pebble key as associated data binds each value to its
// key: a value copied under another key fails to open.
const (
	sealVersion  = 0x01
	sealOverhead = 1 + chacha20poly1305.NonceSizeX + chacha20poly1305.Overhead
)

// sealer seals and opens values under the value subkey.
type sealer struct {
	aead cipher.AEAD
}

func newSealer(key []byte) (*sealer, error) {
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, fmt.Errorf("pebblestore: value cipher: %w", err)
	}
	return &sealer{aead: aead}, nil
}

// seal encrypts plaintext for storage under key and returns the sealed
// value.
func (s *sealer) seal(key, plaintext []byte) []byte {
	out := make([]byte, 1+chacha20poly1305.NonceSizeX, sealOverhead+len(plaintext))
	out[0] = sealVersion
	nonce := out[1:]
	rand.Read(nonce) // never fails (crypto/rand documents a fatal error instead)
	return s.aead.Seal(out, nonce, plaintext, key)
}

// open authenticates and decrypts a sealed value read under key. Bytes
// read from disk are untrusted: any malformed, truncated, tampered or
// moved value returns ErrCorrupt.
func (s *sealer) open(key, sealed []byte) ([]byte, error) {
	if len(sealed) < sealOverhead {
		return nil, fmt.Errorf("pebblestore: sealed value of %d bytes: %w", len(sealed), ErrCorrupt)
	}
	if sealed[0] != sealVersion {
		return nil, fmt.Errorf("pebblestore: sealed value version %d: %w", sealed[0], ErrCorrupt)
	}
	nonce := sealed[1 : 1+chacha20poly1305.NonceSizeX]
	pt, err := s.aead.Open(nil, nonce, sealed[1+chacha20poly1305.NonceSizeX:], key)
	if err != nil {
		return nil, fmt.Errorf("pebblestore: value does not authenticate: %w", ErrCorrupt)
	}
	return pt, nil
}
