package crypto

import (
	"bytes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"

	"filippo.io/age"
	"golang.org/x/crypto/chacha20poly1305"
)

// Store key at rest (PROTOCOL.md §10).
//
// The client encrypts its local store (sessions, sender keys, messages)
// under a random 32-byte store key. On disk the store key is wrapped with
// age's scrypt recipient under the user's passphrase. Changing the
// passphrase rewraps the key alone; the store is not re-encrypted.
//
// Store values are sealed with XChaCha20-Poly1305 under a key derived from
// the store key, with a random 192-bit nonce per value: a store writes
// values for years under one key, and 192-bit random nonces make a
// collision negligible at any realistic count, unlike GCM's 96 bits.

// Specification constants of the store key (PROTOCOL.md §10).
const (
	// StoreKeySize is the size of a store key.
	StoreKeySize = 32
	// StoreKeyScryptLogN is the scrypt work factor (log2 N, r = 8, p = 1)
	// used to wrap store keys: age's default, about one second and 256 MiB
	// on a current laptop. The store key is unwrapped once per app start, so
	// the cost is paid rarely, while an attacker with the wrapped key pays
	// it for every passphrase guessed.
	StoreKeyScryptLogN = 18
	// MaxStoreKeyScryptLogN is the largest work factor UnwrapStoreKey
	// accepts, so that a tampered file cannot make it allocate without
	// bound: scrypt needs 2^logN KiB, so 20 means 1 GiB.
	MaxStoreKeyScryptLogN = 20
	storeKeyWrapVersion   = 1
	storeValueVersion     = 1
	// StoreValueOverhead is the size a sealed store value adds.
	StoreValueOverhead = 1 + chacha20poly1305.NonceSizeX + chacha20poly1305.Overhead
)

// StoreKey is the key of the client's local store. It must be kept
// secret; it leaves memory only wrapped under a passphrase. Obtain one
// from GenerateStoreKey or UnwrapStoreKey; the zero value is not usable.
type StoreKey struct {
	_    [0]func()
	key  [StoreKeySize]byte
	aead cipher.AEAD
}

// GenerateStoreKey returns a new store key from crypto/rand.
func GenerateStoreKey() *StoreKey {
	var k [StoreKeySize]byte
	if _, err := rand.Read(k[:]); err != nil {
		panic("crypto: crypto/rand failed: " + err.Error())
	}
	return newStoreKey(k)
}

func newStoreKey(k [StoreKeySize]byte) *StoreKey {
	// value key = HKDF-SHA256(ikm = store key, salt = "", info = "sotto/v1 store value key")
	aead, err := chacha20poly1305.NewX(envelopeKDF(k[:], nil, labelStoreValueKey, chacha20poly1305.KeySize))
	if err != nil {
		panic("crypto: store key: " + err.Error())
	}
	return &StoreKey{key: k, aead: aead}
}

// String never prints key material.
func (k *StoreKey) String() string { return "StoreKey(<redacted>)" }

// Equal reports, in constant time, whether k and o are the same key.
func (k *StoreKey) Equal(o *StoreKey) bool {
	return subtle.ConstantTimeCompare(k.key[:], o.key[:]) == 1
}

// WrapStoreKey encrypts k under passphrase with age's scrypt recipient at
// work factor StoreKeyScryptLogN (PROTOCOL.md §10). The output is a binary
// age file holding version u8 (1) || store key [32]; it may be stored
// anywhere the passphrase's strength is an acceptable protection.
func WrapStoreKey(k *StoreKey, passphrase string) ([]byte, error) {
	return wrapStoreKey(k, passphrase, StoreKeyScryptLogN)
}

// MinStoreKeyScryptLogN is the lowest work factor
// WrapStoreKeyWithWorkFactor accepts.
const MinStoreKeyScryptLogN = 10

// WrapStoreKeyWithWorkFactor is WrapStoreKey with scrypt work factor logN
// (MinStoreKeyScryptLogN to MaxStoreKeyScryptLogN). Every step below
// StoreKeyScryptLogN halves the cost of guessing the passphrase: it exists
// so that tests and benchmarks of programs built on the store can run
// fast, and must not be used for real users' stores.
func WrapStoreKeyWithWorkFactor(k *StoreKey, passphrase string, logN int) ([]byte, error) {
	if logN < MinStoreKeyScryptLogN || logN > MaxStoreKeyScryptLogN {
		return nil, errors.New("crypto: store key: work factor out of range")
	}
	return wrapStoreKey(k, passphrase, logN)
}

// wrapStoreKey is WrapStoreKey with a chosen work factor; tests use a low
// one.
func wrapStoreKey(k *StoreKey, passphrase string, logN int) ([]byte, error) {
	if k == nil {
		return nil, errors.New("crypto: store key: missing key")
	}
	if passphrase == "" {
		return nil, errors.New("crypto: store key: empty passphrase")
	}
	r, err := age.NewScryptRecipient(passphrase)
	if err != nil {
		return nil, fmt.Errorf("crypto: store key: %w", err)
	}
	r.SetWorkFactor(logN)
	var out bytes.Buffer
	w, err := age.Encrypt(&out, r)
	if err != nil {
		return nil, fmt.Errorf("crypto: store key: %w", err)
	}
	w.Write([]byte{storeKeyWrapVersion}) // bytes.Buffer writes do not fail
	w.Write(k.key[:])
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("crypto: store key: %w", err)
	}
	return out.Bytes(), nil
}

// UnwrapStoreKey decrypts a store key wrapped by WrapStoreKey (PROTOCOL.md
// §10). It returns [ErrWrongPassphrase] if passphrase does not unlock it,
// and [ErrMalformed] (wrapped) for anything that is not a wrapped store
// key, including a work factor above MaxStoreKeyScryptLogN. The error
// never contains the passphrase.
func UnwrapStoreKey(wrapped []byte, passphrase string) (*StoreKey, error) {
	id, err := age.NewScryptIdentity(passphrase)
	if err != nil {
		return nil, fmt.Errorf("crypto: store key: %w", err)
	}
	id.SetMaxWorkFactor(MaxStoreKeyScryptLogN)
	r, err := age.Decrypt(bytes.NewReader(wrapped), id)
	if err != nil {
		var noMatch *age.NoIdentityMatchError
		if errors.As(err, &noMatch) && errors.Is(err, age.ErrIncorrectIdentity) && len(noMatch.StanzaTypes) == 1 && noMatch.StanzaTypes[0] == "scrypt" {
			return nil, ErrWrongPassphrase
		}
		return nil, malformed("wrapped store key")
	}
	var buf [1 + StoreKeySize + 1]byte
	n, err := io.ReadFull(r, buf[:])
	if err != io.ErrUnexpectedEOF || n != 1+StoreKeySize || buf[0] != storeKeyWrapVersion {
		return nil, malformed("wrapped store key")
	}
	var k [StoreKeySize]byte
	copy(k[:], buf[1:])
	return newStoreKey(k), nil
}

// RewrapStoreKey changes the passphrase of a wrapped store key: it
// unwraps with oldPassphrase and wraps the same key under newPassphrase,
// with a fresh salt (PROTOCOL.md §10). The store itself is untouched.
func RewrapStoreKey(wrapped []byte, oldPassphrase, newPassphrase string) ([]byte, error) {
	return rewrapStoreKey(wrapped, oldPassphrase, newPassphrase, StoreKeyScryptLogN)
}

func rewrapStoreKey(wrapped []byte, oldPassphrase, newPassphrase string, logN int) ([]byte, error) {
	k, err := UnwrapStoreKey(wrapped, oldPassphrase)
	if err != nil {
		return nil, err
	}
	return wrapStoreKey(k, newPassphrase, logN)
}

// Seal encrypts and authenticates one store value, binding it to ad (for
// example the record's key in the store, so that values cannot be swapped
// between records). It implements PROTOCOL.md §10:
//
//	sealed = version u8 (1) || nonce [24]
//	         || XChaCha20-Poly1305(value key, nonce, plaintext, ad = version || ad)
func (k *StoreKey) Seal(ad, plaintext []byte) []byte {
	out := make([]byte, 1+chacha20poly1305.NonceSizeX, StoreValueOverhead+len(plaintext))
	out[0] = storeValueVersion
	if _, err := rand.Read(out[1:]); err != nil {
		panic("crypto: crypto/rand failed: " + err.Error())
	}
	return k.aead.Seal(out, out[1:], plaintext, storeValueAD(ad))
}

// Open decrypts a value sealed by Seal with the same ad. Any failure is
// [ErrDecrypt]; the result is a new slice.
func (k *StoreKey) Open(ad, sealed []byte) ([]byte, error) {
	if len(sealed) < StoreValueOverhead || sealed[0] != storeValueVersion {
		return nil, ErrDecrypt
	}
	pt, err := k.aead.Open(nil, sealed[1:1+chacha20poly1305.NonceSizeX], sealed[1+chacha20poly1305.NonceSizeX:], storeValueAD(ad))
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}

func storeValueAD(ad []byte) []byte {
	b := make([]byte, 0, 1+len(ad))
	b = append(b, storeValueVersion)
	return append(b, ad...)
}
