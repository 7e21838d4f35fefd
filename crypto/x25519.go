package crypto

import (
	"crypto/ecdh"
	"crypto/rand"
	"crypto/subtle"

	circl "github.com/cloudflare/circl/dh/x25519"
)

// X25519 arithmetic. Keys are held as crypto/ecdh values everywhere in the
// package (parsing, serialising and validation are the standard
// library's), but the scalar multiplications run on CIRCL's
// implementation (github.com/cloudflare/circl/dh/x25519, constant time,
// with BMI2/ADX assembly on amd64): on the 2-core Xeon the benchmarks
// run on, a shared secret takes 38 µs there against 64 µs in crypto/ecdh,
// and a key pair 27 µs against 64 µs (crypto/ecdh computes a public key
// with the variable-base ladder; CIRCL uses a fixed-base table). Sealed
// sender makes three of these per message, which made X25519 a quarter
// of the client-to-client CPU profile (BENCHMARKS.md). TestX25519MatchesECDH
// checks that both give the same bytes and refuse the same inputs.

// x25519 computes a Diffie-Hellman shared secret and rejects the all-zero
// output that small-order peer points produce (PROTOCOL.md §2.2), exactly
// as crypto/ecdh's PrivateKey.ECDH does.
func x25519(priv *ecdh.PrivateKey, peer *ecdh.PublicKey) ([]byte, error) {
	if priv == nil || peer == nil {
		return nil, ErrInvalidKey
	}
	var sk circl.Key
	copy(sk[:], priv.Bytes())
	defer clear(sk[:])
	return x25519Bytes(&sk, peer.Bytes())
}

// x25519Bytes is x25519 on a raw scalar (clamped by the multiplication)
// and a raw u-coordinate of PublicKeySize bytes.
func x25519Bytes(scalar *circl.Key, peer []byte) ([]byte, error) {
	var pk circl.Key
	if copy(pk[:], peer) != len(pk) {
		return nil, ErrInvalidKey
	}
	out := new(circl.Key)
	circl.Shared(out, scalar, &pk)
	// The all-zero check of RFC 7748 §6.1, on the output as crypto/ecdh
	// makes it (CIRCL's own flag compares the input with a list of
	// small-order points, which comes to the same thing).
	if subtle.ConstantTimeCompare(out[:], make([]byte, len(out))) == 1 {
		return nil, ErrInvalidKey
	}
	return out[:], nil
}

// keyPair is an X25519 key pair that this package generates and uses
// itself — the sealed-sender and multi-recipient ephemeral E, PQXDH's EK_A
// and every ratchet key — held as bytes: it never becomes an
// *ecdh.PrivateKey, whose construction computes the public key (again)
// with the variable-base ladder, 2.5 times the cost of CIRCL's fixed-base
// key generation.
type keyPair struct {
	priv, pub circl.Key
}

// newKeyPair generates a key pair from crypto/rand.
func newKeyPair() (*keyPair, error) {
	e := new(keyPair)
	if _, err := rand.Read(e.priv[:]); err != nil {
		return nil, err
	}
	circl.KeyGen(&e.pub, &e.priv)
	return e, nil
}

// mustKeyPair is newKeyPair for callers that cannot fail: crypto/rand
// does not.
func mustKeyPair() *keyPair {
	k, err := newKeyPair()
	if err != nil {
		panic("crypto: crypto/rand failed: " + err.Error())
	}
	return k
}

// keyPairFrom wraps an existing key pair (tests and vectors fix theirs).
func keyPairFrom(k *ecdh.PrivateKey) *keyPair {
	e := new(keyPair)
	copy(e.priv[:], k.Bytes())
	copy(e.pub[:], k.PublicKey().Bytes())
	return e
}

// public returns the public key's u-coordinate.
func (e *keyPair) public() []byte { return e.pub[:] }

// dh computes X25519 of the private scalar and peer, refusing the all-zero
// output.
func (e *keyPair) dh(peer *ecdh.PublicKey) ([]byte, error) {
	if peer == nil {
		return nil, ErrInvalidKey
	}
	return x25519Bytes(&e.priv, peer.Bytes())
}

// forget clears the private scalar.
func (e *keyPair) forget() { clear(e.priv[:]) }
