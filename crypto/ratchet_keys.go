package crypto

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
)

// This file holds the three key roles of the Double Ratchet and the KDFs
// that link them (PROTOCOL.md §4.1). Each type wraps 32 secret bytes, is not
// comparable, and never prints its bytes.

// keySize is the length of root, chain and message keys.
const keySize = 32

// aeadTagSize is the tag size of the AEAD that encrypts ratchet messages:
// AES-256-GCM keyed with each message key (PROTOCOL.md §4.1).
const aeadTagSize = 16

// rootKey is the secret that each DH ratchet step mixes a Diffie-Hellman
// output into. It must be kept secret.
type rootKey struct {
	_ [0]func()
	b [keySize]byte
}

// chainKey is the secret of one sending or receiving chain. It must be kept
// secret.
type chainKey struct {
	_ [0]func()
	b [keySize]byte
}

// messageKey encrypts exactly one message. It must be kept secret.
type messageKey struct {
	_ [0]func()
	b [keySize]byte
}

func (rootKey) String() string    { return "rootKey(<redacted>)" }
func (chainKey) String() string   { return "chainKey(<redacted>)" }
func (messageKey) String() string { return "messageKey(<redacted>)" }

// step mixes a Diffie-Hellman output into the root key. It implements
// PROTOCOL.md §4.1 (root KDF):
//
//	root key', chain key = HKDF-SHA-256(salt = root key, ikm = dh, info = "sotto/v1 ratchet root", L = 64)
func (rk rootKey) step(dh []byte) (rootKey, chainKey) {
	out, err := hkdf.Key(sha256.New, dh, rk.b[:], labelRatchetRoot, 2*keySize)
	if err != nil {
		panic("crypto: HKDF failed: " + err.Error()) // only for absurd lengths
	}
	var next rootKey
	var ck chainKey
	copy(next.b[:], out[:keySize])
	copy(ck.b[:], out[keySize:])
	clear(out)
	return next, ck
}

// next advances the chain by one message. It implements PROTOCOL.md §4.1
// (chain KDF):
//
//	message key     = HMAC-SHA-256(chain key, 0x01)
//	next chain key  = HMAC-SHA-256(chain key, 0x02)
func (ck chainKey) next() (messageKey, chainKey) {
	// One HMAC key schedule serves both outputs.
	m := hmac.New(sha256.New, ck.b[:])
	var buf [sha256.Size]byte
	var mk messageKey
	var nk chainKey
	m.Write([]byte{0x01})
	copy(mk.b[:], m.Sum(buf[:0]))
	m.Reset()
	m.Write([]byte{0x02})
	copy(nk.b[:], m.Sum(buf[:0]))
	clear(buf[:])
	return mk, nk
}

// aead returns AES-256-GCM keyed with the message key itself. It
// implements PROTOCOL.md §4.1 (encryption):
//
//	ciphertext = AES-256-GCM(key = message key, nonce = 0^12, plaintext, ad)
//
// The message key is an HMAC output, already a uniformly random 32-byte
// key, and it encrypts exactly one message, so the nonce can be fixed, as
// in the envelopes (§5, §6). (An earlier draft expanded the key and nonce
// from the message key with HKDF-Expand: that cost about as much as the
// rest of a message together and added nothing.)
func (mk messageKey) aead() cipher.AEAD {
	block, err := aes.NewCipher(mk.b[:])
	if err != nil {
		panic("crypto: AES key setup failed: " + err.Error())
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		panic("crypto: GCM setup failed: " + err.Error())
	}
	return gcm
}

// seal encrypts plaintext under the message key, appending to dst.
func (mk messageKey) seal(dst, plaintext, ad []byte) []byte {
	return mk.aead().Seal(dst, zeroNonce[:], plaintext, ad)
}

// open decrypts and authenticates a ciphertext under the message key.
func (mk messageKey) open(ciphertext, ad []byte) ([]byte, error) {
	pt, err := mk.aead().Open(nil, zeroNonce[:], ciphertext, ad)
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}
