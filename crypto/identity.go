package crypto

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"

	"filippo.io/edwards25519"
)

// AccountIDSize is the length in bytes of an [AccountID].
const AccountIDSize = 20

// labelAccountID is the domain-separation prefix hashed before the account
// key to form an account ID (PROTOCOL.md §2.1).
const labelAccountID = "sotto/v1 account id"

// AccountID names an account. It is derived from the account's public key,
// so a client that receives an account key for an ID can check that the two
// belong together: the key server cannot substitute a key.
//
// AccountID = SHA-256("sotto/v1 account id" || account public key)[:20]
//
// Its text form is the 32-character lowercase base32 (RFC 4648, no padding)
// of those 20 bytes.
type AccountID [AccountIDSize]byte

var accountIDEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// String returns the text form of the account ID.
func (id AccountID) String() string {
	return strings.ToLower(accountIDEncoding.EncodeToString(id[:]))
}

// MarshalText implements encoding.TextMarshaler.
func (id AccountID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler with [ParseAccountID].
func (id *AccountID) UnmarshalText(b []byte) error {
	parsed, err := ParseAccountID(string(b))
	if err != nil {
		return err
	}
	*id = parsed
	return nil
}

// ErrInvalidAccountID is returned by [ParseAccountID] for text that is not an
// account ID.
var ErrInvalidAccountID = errors.New("crypto: invalid account ID")

// ParseAccountID parses the text form of an account ID. It accepts exactly
// 32 base32 characters in either case and nothing else.
func ParseAccountID(s string) (AccountID, error) {
	var id AccountID
	if len(s) != 32 {
		return id, ErrInvalidAccountID
	}
	n, err := accountIDEncoding.Decode(id[:], []byte(strings.ToUpper(s)))
	if err != nil || n != AccountIDSize {
		return AccountID{}, ErrInvalidAccountID
	}
	return id, nil
}

// accountIDFromKey derives the account ID of an Ed25519 account public key.
// It implements PROTOCOL.md §2.1.
func accountIDFromKey(pub []byte) AccountID {
	h := sha256.New()
	h.Write([]byte(labelAccountID))
	h.Write(pub)
	var id AccountID
	copy(id[:], h.Sum(nil))
	return id
}

// DeviceID numbers a device within its account. Device IDs are assigned by
// the account's primary device when it publishes a device list; 0 is never a
// valid device ID.
type DeviceID uint32

// Address names one device of one account: the unit to which sessions are
// bound and to which the relay delivers.
type Address struct {
	Account AccountID
	Device  DeviceID
}

// String returns "accountid.device".
func (a Address) String() string { return fmt.Sprintf("%s.%d", a.Account, a.Device) }

// Sizes of the public encodings of keys and signatures.
const (
	PublicKeySize = 32 // Ed25519 and X25519 public keys
	SignatureSize = ed25519.SignatureSize
)

// AccountKey is an account's Ed25519 public key. It signs the account's
// device lists. The zero value is not a valid key.
type AccountKey struct {
	pub [PublicKeySize]byte
}

// NewAccountKey parses a 32-byte Ed25519 public key. It rejects encodings
// that are not canonical points and points of small order.
func NewAccountKey(b []byte) (AccountKey, error) {
	if err := checkEd25519Public(b); err != nil {
		return AccountKey{}, fmt.Errorf("crypto: account key: %w", err)
	}
	var k AccountKey
	copy(k.pub[:], b)
	return k, nil
}

// Bytes returns the 32-byte encoding of the key.
func (k AccountKey) Bytes() []byte { return bytes.Clone(k.pub[:]) }

// ID returns the account ID derived from the key (PROTOCOL.md §2.1).
func (k AccountKey) ID() AccountID { return accountIDFromKey(k.pub[:]) }

// Equal reports whether k and other are the same key.
func (k AccountKey) Equal(other AccountKey) bool { return k.pub == other.pub }

// IsZero reports whether k is the zero value (no key).
func (k AccountKey) IsZero() bool { return k.pub == [PublicKeySize]byte{} }

// verify checks an Ed25519 signature made with [signWithLabel].
func (k AccountKey) verify(label string, msg, sig []byte) bool {
	return verifyWithLabel(k.pub[:], label, msg, sig)
}

// AccountPrivateKey is an account's Ed25519 private key, held by the
// primary device and carried in encrypted backups. It must be kept secret.
type AccountPrivateKey struct {
	_    [0]func() // not comparable: compare public keys instead
	priv ed25519.PrivateKey
	pub  AccountKey
}

// GenerateAccountKey returns a new account key drawn from crypto/rand.
func GenerateAccountKey() *AccountPrivateKey {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic("crypto: crypto/rand failed: " + err.Error())
	}
	k, _ := NewAccountPrivateKey(priv.Seed())
	return k
}

// NewAccountPrivateKey rebuilds an account key from its 32-byte seed, as
// returned by Seed.
func NewAccountPrivateKey(seed []byte) (*AccountPrivateKey, error) {
	if len(seed) != ed25519.SeedSize {
		return nil, errors.New("crypto: account private key: wrong seed length")
	}
	priv := ed25519.NewKeyFromSeed(seed)
	k := &AccountPrivateKey{priv: priv}
	copy(k.pub.pub[:], priv.Public().(ed25519.PublicKey))
	return k, nil
}

// Seed returns the 32-byte seed of the key. It must be kept secret.
func (k *AccountPrivateKey) Seed() []byte { return k.priv.Seed() }

// Public returns the account's public key.
func (k *AccountPrivateKey) Public() AccountKey { return k.pub }

// ID returns the account ID.
func (k *AccountPrivateKey) ID() AccountID { return k.pub.ID() }

// String never prints key material.
func (k *AccountPrivateKey) String() string { return "AccountPrivateKey(" + k.pub.ID().String() + ")" }

func (k *AccountPrivateKey) sign(label string, msg []byte) []byte {
	return signWithLabel(k.priv, label, msg)
}

// IdentityKey is a device's long-term public identity: an Ed25519 key that
// signs the device's prekeys, and the X25519 key obtained from it by the
// birational map of RFC 7748 §4.1, used in PQXDH (PROTOCOL.md §2.2).
type IdentityKey struct {
	ed [PublicKeySize]byte
	x  *ecdh.PublicKey
}

// NewIdentityKey parses a 32-byte Ed25519 identity public key. It rejects
// non-canonical encodings and points of small order, and derives the X25519
// form.
func NewIdentityKey(b []byte) (IdentityKey, error) {
	if err := checkEd25519Public(b); err != nil {
		return IdentityKey{}, fmt.Errorf("crypto: identity key: %w", err)
	}
	p, _ := new(edwards25519.Point).SetBytes(b) // checked above
	x, err := ecdh.X25519().NewPublicKey(p.BytesMontgomery())
	if err != nil {
		return IdentityKey{}, fmt.Errorf("crypto: identity key: %w", err)
	}
	var k IdentityKey
	copy(k.ed[:], b)
	k.x = x
	return k, nil
}

// Bytes returns the 32-byte Ed25519 encoding of the key.
func (k IdentityKey) Bytes() []byte { return bytes.Clone(k.ed[:]) }

// Equal reports whether k and other are the same key.
func (k IdentityKey) Equal(other IdentityKey) bool { return k.ed == other.ed }

// IsZero reports whether k is the zero value (no key).
func (k IdentityKey) IsZero() bool { return k.x == nil }

// X25519 returns the Diffie-Hellman form of the key.
func (k IdentityKey) X25519() *ecdh.PublicKey { return k.x }

// Fingerprint returns a short printable digest of the key, safe for logs.
func (k IdentityKey) Fingerprint() string {
	sum := sha256.Sum256(k.ed[:])
	return fmt.Sprintf("%x", sum[:8])
}

func (k IdentityKey) verify(label string, msg, sig []byte) bool {
	return verifyWithLabel(k.ed[:], label, msg, sig)
}

// IdentityPrivateKey is a device's long-term private identity key. It must
// be kept secret. Its X25519 scalar is the clamped first half of
// SHA-512(seed), the same scalar Ed25519 signs with (RFC 8032 §5.1.5).
type IdentityPrivateKey struct {
	_    [0]func()
	priv ed25519.PrivateKey
	x    *ecdh.PrivateKey
	pub  IdentityKey
}

// GenerateIdentityKey returns a new device identity key from crypto/rand.
func GenerateIdentityKey() *IdentityPrivateKey {
	var seed [ed25519.SeedSize]byte
	if _, err := rand.Read(seed[:]); err != nil {
		panic("crypto: crypto/rand failed: " + err.Error())
	}
	k, err := NewIdentityPrivateKey(seed[:])
	if err != nil {
		panic("crypto: generated identity key is invalid: " + err.Error())
	}
	return k
}

// NewIdentityPrivateKey rebuilds an identity key from its 32-byte seed, as
// returned by Seed.
func NewIdentityPrivateKey(seed []byte) (*IdentityPrivateKey, error) {
	if len(seed) != ed25519.SeedSize {
		return nil, errors.New("crypto: identity private key: wrong seed length")
	}
	priv := ed25519.NewKeyFromSeed(seed)
	h := sha512.Sum512(seed)
	// crypto/ecdh clamps the scalar itself (RFC 7748 §5); the clamping here
	// makes the stored scalar equal to Ed25519's secret scalar.
	h[0] &= 248
	h[31] &= 127
	h[31] |= 64
	x, err := ecdh.X25519().NewPrivateKey(h[:32])
	if err != nil {
		return nil, fmt.Errorf("crypto: identity private key: %w", err)
	}
	pub, err := NewIdentityKey(priv.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, err
	}
	return &IdentityPrivateKey{priv: priv, x: x, pub: pub}, nil
}

// Seed returns the 32-byte seed of the key. It must be kept secret.
func (k *IdentityPrivateKey) Seed() []byte { return k.priv.Seed() }

// Public returns the device's public identity key.
func (k *IdentityPrivateKey) Public() IdentityKey { return k.pub }

// String never prints key material.
func (k *IdentityPrivateKey) String() string {
	return "IdentityPrivateKey(" + k.pub.Fingerprint() + ")"
}

func (k *IdentityPrivateKey) sign(label string, msg []byte) []byte {
	return signWithLabel(k.priv, label, msg)
}

// dh computes X25519 between the identity's scalar and a peer key, refusing
// an all-zero result (PROTOCOL.md §2.2).
func (k *IdentityPrivateKey) dh(peer *ecdh.PublicKey) ([]byte, error) {
	return x25519(k.x, peer)
}

// SignLoginChallenge signs a key server's login challenge with the device
// identity key (PROTOCOL.md §2.5). The challenge must be the exact bytes the
// server issued; the signature is useless for any other purpose.
func (k *IdentityPrivateKey) SignLoginChallenge(challenge []byte) []byte {
	return k.sign(labelLogin, challenge)
}

// VerifyLoginChallenge checks a signature made by SignLoginChallenge.
func (k IdentityKey) VerifyLoginChallenge(challenge, sig []byte) error {
	if k.IsZero() || !k.verify(labelLogin, challenge, sig) {
		return ErrBadSignature
	}
	return nil
}

// SignAccountDeletion authorises the deletion of the account at a key
// server (PROTOCOL.md §2.6): it signs the server's single-use challenge
// together with the account ID with the account key, which only the
// primary device and backups hold, so that a linked device or a stolen
// token cannot delete the account.
func (k *AccountPrivateKey) SignAccountDeletion(challenge []byte) []byte {
	return k.sign(labelAccountDeletion, accountDeletionMessage(k.ID(), challenge))
}

// VerifyAccountDeletion checks a signature made by SignAccountDeletion.
func (k AccountKey) VerifyAccountDeletion(challenge, sig []byte) error {
	if k.IsZero() || !k.verify(labelAccountDeletion, accountDeletionMessage(k.ID(), challenge), sig) {
		return ErrBadSignature
	}
	return nil
}

func accountDeletionMessage(id AccountID, challenge []byte) []byte {
	return append(id[:], challenge...)
}

// checkEd25519Public accepts a canonical encoding of a point that is not of
// small order.
func checkEd25519Public(b []byte) error {
	if len(b) != PublicKeySize {
		return ErrInvalidKey
	}
	p, err := new(edwards25519.Point).SetBytes(b)
	if err != nil {
		return ErrInvalidKey
	}
	// SetBytes accepts a few non-canonical encodings; insist on the canonical one.
	if !bytes.Equal(p.Bytes(), b) {
		return ErrInvalidKey
	}
	if new(edwards25519.Point).MultByCofactor(p).Equal(edwards25519.NewIdentityPoint()) == 1 {
		return ErrInvalidKey
	}
	return nil
}

// signWithLabel signs label-prefixed messages so that a signature made for
// one purpose never verifies for another (PROTOCOL.md §1.3):
//
//	signed bytes = "sotto/v1 " || label || 0x00 || msg
func signWithLabel(priv ed25519.PrivateKey, label string, msg []byte) []byte {
	return ed25519.Sign(priv, labelled(label, msg))
}

func verifyWithLabel(pub []byte, label string, msg, sig []byte) bool {
	if len(sig) != SignatureSize || len(pub) != PublicKeySize {
		return false
	}
	return ed25519.Verify(pub, labelled(label, msg), sig)
}

func labelled(label string, msg []byte) []byte {
	b := make([]byte, 0, len(signaturePrefix)+len(label)+1+len(msg))
	b = append(b, signaturePrefix...)
	b = append(b, label...)
	b = append(b, 0)
	return append(b, msg...)
}
