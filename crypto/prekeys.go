package crypto

import (
	"bytes"
	"crypto/ecdh"
	"crypto/mlkem"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"sync/atomic"

	"golang.org/x/crypto/cryptobyte"
)

// Specification constants of prekeys (PROTOCOL.md §3.1).
const (
	// KEMEncapsulationKeySize and KEMCiphertextSize are those of ML-KEM-768
	// (FIPS 203), the KEM Sotto's PQXDH uses (PROTOCOL.md §3 says why).
	KEMEncapsulationKeySize = mlkem.EncapsulationKeySize768
	KEMCiphertextSize       = mlkem.CiphertextSize768
	preKeyBundleVersion     = 1
)

// SignedPreKey is the public half of a device's medium-term X25519 prekey,
// signed by the device identity key.
//
//	SignedPreKey = id u32 || public [32] || signature [64]
//	signed bytes = label("signed prekey") || id u32 || public [32]
type SignedPreKey struct {
	ID        uint32
	Public    *ecdh.PublicKey
	Signature []byte
}

// KEMPreKey is the public half of a device's ML-KEM-768 prekey, signed by
// the device identity key. A last-resort key is served when no one-time KEM
// prekey is left, and is not deleted by its owner after use.
//
//	KEMPreKey = id u32 || last_resort u8 || encapsulation_key opaque<2..> || signature [64]
//	signed bytes = label("kem prekey") || id u32 || last_resort u8 || encapsulation_key opaque<2..>
type KEMPreKey struct {
	ID               uint32
	LastResort       bool
	EncapsulationKey *mlkem.EncapsulationKey768
	Signature        []byte
}

// OneTimePreKey is the public half of a one-time X25519 prekey. As in
// Signal's protocol it is not signed: it only adds forward secrecy to a
// session whose authentication rests on the signed keys.
//
//	OneTimePreKey = id u32 || public [32]
type OneTimePreKey struct {
	ID     uint32
	Public *ecdh.PublicKey
}

// SignedPreKeyPair is a signed prekey with its private key, which must be
// kept secret.
type SignedPreKeyPair struct {
	_       [0]func()
	Private *ecdh.PrivateKey
	SignedPreKey
}

// KEMPreKeyPair is a KEM prekey with its decapsulation key, which must be
// kept secret.
type KEMPreKeyPair struct {
	_       [0]func()
	Private *mlkem.DecapsulationKey768
	KEMPreKey
}

// OneTimePreKeyPair is a one-time prekey with its private key, which must be
// kept secret.
type OneTimePreKeyPair struct {
	_       [0]func()
	Private *ecdh.PrivateKey
	OneTimePreKey
}

// GenerateSignedPreKey creates a signed prekey with the given ID.
func GenerateSignedPreKey(ik *IdentityPrivateKey, id uint32) *SignedPreKeyPair {
	priv := generateX25519()
	p := &SignedPreKeyPair{Private: priv}
	p.ID = id
	p.Public = priv.PublicKey()
	p.Signature = ik.sign(labelSignedPreKey, p.signedBytes())
	return p
}

// GenerateKEMPreKey creates a signed ML-KEM-768 prekey with the given ID.
func GenerateKEMPreKey(ik *IdentityPrivateKey, id uint32, lastResort bool) *KEMPreKeyPair {
	dk, err := mlkem.GenerateKey768()
	if err != nil {
		panic("crypto: ML-KEM key generation failed: " + err.Error())
	}
	p := &KEMPreKeyPair{Private: dk}
	p.ID = id
	p.LastResort = lastResort
	p.EncapsulationKey = dk.EncapsulationKey()
	p.Signature = ik.sign(labelKEMPreKey, p.signedBytes())
	return p
}

// GenerateOneTimePreKey creates a one-time prekey with the given ID.
func GenerateOneTimePreKey(id uint32) *OneTimePreKeyPair {
	priv := generateX25519()
	return &OneTimePreKeyPair{Private: priv, OneTimePreKey: OneTimePreKey{ID: id, Public: priv.PublicKey()}}
}

func generateX25519() *ecdh.PrivateKey {
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		panic("crypto: crypto/rand failed: " + err.Error())
	}
	return priv
}

func (k *SignedPreKey) signedBytes() []byte {
	b := binary.BigEndian.AppendUint32(nil, k.ID)
	return append(b, k.Public.Bytes()...)
}

func (k *KEMPreKey) signedBytes() []byte {
	b := binary.BigEndian.AppendUint32(nil, k.ID)
	b = append(b, boolByte(k.LastResort))
	ek := k.EncapsulationKey.Bytes()
	b = binary.BigEndian.AppendUint16(b, uint16(len(ek)))
	return append(b, ek...)
}

// MarshalBinary encodes the signed prekey (PROTOCOL.md §3.1).
func (k *SignedPreKey) MarshalBinary() ([]byte, error) {
	return append(k.signedBytes(), k.Signature...), nil
}

// MarshalBinary encodes the KEM prekey (PROTOCOL.md §3.1).
func (k *KEMPreKey) MarshalBinary() ([]byte, error) {
	return append(k.signedBytes(), k.Signature...), nil
}

// MarshalBinary encodes the one-time prekey (PROTOCOL.md §3.1).
func (k *OneTimePreKey) MarshalBinary() ([]byte, error) {
	b := binary.BigEndian.AppendUint32(nil, k.ID)
	return append(b, k.Public.Bytes()...), nil
}

// ParseSignedPreKey parses a signed prekey and verifies its signature by
// the device identity key ik.
func ParseSignedPreKey(b []byte, ik IdentityKey) (*SignedPreKey, error) {
	s := cryptobyte.String(b)
	k, err := readSignedPreKey(&s)
	if err != nil || !s.Empty() {
		return nil, malformed("signed prekey")
	}
	if err := k.verify(ik); err != nil {
		return nil, err
	}
	return k, nil
}

// ParseKEMPreKey parses a KEM prekey and verifies its signature by the
// device identity key ik.
func ParseKEMPreKey(b []byte, ik IdentityKey) (*KEMPreKey, error) {
	s := cryptobyte.String(b)
	k, err := readKEMPreKey(&s)
	if err != nil || !s.Empty() {
		return nil, malformed("KEM prekey")
	}
	if err := k.verify(ik); err != nil {
		return nil, err
	}
	return k, nil
}

// ParseOneTimePreKey parses a one-time prekey.
func ParseOneTimePreKey(b []byte) (*OneTimePreKey, error) {
	s := cryptobyte.String(b)
	k, err := readOneTimePreKey(&s)
	if err != nil || !s.Empty() {
		return nil, malformed("one-time prekey")
	}
	return k, nil
}

func (k *SignedPreKey) verify(ik IdentityKey) error {
	if ik.IsZero() || !ik.verify(labelSignedPreKey, k.signedBytes(), k.Signature) {
		return fmt.Errorf("crypto: signed prekey: %w", ErrBadSignature)
	}
	return nil
}

func (k *KEMPreKey) verify(ik IdentityKey) error {
	if ik.IsZero() || !ik.verify(labelKEMPreKey, k.signedBytes(), k.Signature) {
		return fmt.Errorf("crypto: KEM prekey: %w", ErrBadSignature)
	}
	return nil
}

func readSignedPreKey(s *cryptobyte.String) (*SignedPreKey, error) {
	k := new(SignedPreKey)
	var pub []byte
	if !s.ReadUint32(&k.ID) || !s.ReadBytes(&pub, PublicKeySize) || !s.ReadBytes(&k.Signature, SignatureSize) {
		return nil, ErrMalformed
	}
	var err error
	if k.Public, err = ecdh.X25519().NewPublicKey(pub); err != nil {
		return nil, ErrInvalidKey
	}
	k.Signature = append([]byte(nil), k.Signature...)
	return k, nil
}

func readKEMPreKey(s *cryptobyte.String) (*KEMPreKey, error) {
	k := new(KEMPreKey)
	var lastResort uint8
	var ek []byte
	if !s.ReadUint32(&k.ID) || !s.ReadUint8(&lastResort) || lastResort > 1 ||
		!readUint16Bytes(s, &ek) || !s.ReadBytes(&k.Signature, SignatureSize) {
		return nil, ErrMalformed
	}
	k.LastResort = lastResort == 1
	var err error
	// NewEncapsulationKey768 checks the length and that the key is canonical
	// (FIPS 203 §7.2 modulus check).
	if k.EncapsulationKey, err = mlkem.NewEncapsulationKey768(ek); err != nil {
		return nil, ErrInvalidKey
	}
	k.Signature = append([]byte(nil), k.Signature...)
	return k, nil
}

func readOneTimePreKey(s *cryptobyte.String) (*OneTimePreKey, error) {
	k := new(OneTimePreKey)
	var pub []byte
	if !s.ReadUint32(&k.ID) || !s.ReadBytes(&pub, PublicKeySize) {
		return nil, ErrMalformed
	}
	var err error
	if k.Public, err = ecdh.X25519().NewPublicKey(pub); err != nil {
		return nil, ErrInvalidKey
	}
	return k, nil
}

// PreKeyBundle is what a sender fetches from the key server to start a
// session with one device (PROTOCOL.md §3.2).
//
//	PreKeyBundle = version u8 (1) || account [20] || device u32 || identity_key [32]
//	               || SignedPreKey || KEMPreKey || has_one_time u8 || [OneTimePreKey]
//
// Verifying the bundle's signatures costs two Ed25519 verifications, so
// a bundle remembers what it verified: [ParsePreKeyBundle],
// [PreKeyBundle.Verify], [PreKeyBundle.VerifyAgainst] and
// [InitiateSession] verify the signatures only once for the same bundle,
// and again whenever any field they cover has been changed since.
type PreKeyBundle struct {
	Address       Address
	Identity      IdentityKey
	SignedPreKey  SignedPreKey
	KEMPreKey     KEMPreKey
	OneTimePreKey *OneTimePreKey // nil when the device has none left

	// verified records the fields whose signatures were last verified.
	// It is atomic so that concurrent Verify calls on one bundle stay
	// race-free, as they were when Verify only read the bundle.
	verified atomic.Pointer[verifiedBundle]
}

// verifiedBundle is what a successful signature check covered. The keys
// are held by pointer: *ecdh.PublicKey and *mlkem.EncapsulationKey768 are
// immutable, so the same pointer is the same key, and the record keeps
// them alive so that no other key can take their address.
type verifiedBundle struct {
	identity     [PublicKeySize]byte
	identityX    *ecdh.PublicKey
	spkID        uint32
	spk          *ecdh.PublicKey
	spkSignature [SignatureSize]byte
	kemID        uint32
	kemLast      bool
	kem          *mlkem.EncapsulationKey768
	kemSignature [SignatureSize]byte
}

// snapshot returns the record of b's current signed fields.
func (b *PreKeyBundle) snapshot() *verifiedBundle {
	v := &verifiedBundle{
		identity:  b.Identity.ed,
		identityX: b.Identity.x,
		spkID:     b.SignedPreKey.ID,
		spk:       b.SignedPreKey.Public,
		kemID:     b.KEMPreKey.ID,
		kemLast:   b.KEMPreKey.LastResort,
		kem:       b.KEMPreKey.EncapsulationKey,
	}
	copy(v.spkSignature[:], b.SignedPreKey.Signature)
	copy(v.kemSignature[:], b.KEMPreKey.Signature)
	return v
}

// covers reports whether v recorded exactly b's current signed fields.
func (v *verifiedBundle) covers(b *PreKeyBundle) bool {
	return v != nil &&
		v.identity == b.Identity.ed && v.identityX == b.Identity.x &&
		v.spkID == b.SignedPreKey.ID && v.spk == b.SignedPreKey.Public &&
		bytes.Equal(v.spkSignature[:], b.SignedPreKey.Signature) &&
		v.kemID == b.KEMPreKey.ID && v.kemLast == b.KEMPreKey.LastResort &&
		v.kem == b.KEMPreKey.EncapsulationKey &&
		bytes.Equal(v.kemSignature[:], b.KEMPreKey.Signature)
}

// MarshalBinary encodes the bundle.
func (b *PreKeyBundle) MarshalBinary() ([]byte, error) {
	var cb cryptobyte.Builder
	cb.AddUint8(preKeyBundleVersion)
	cb.AddBytes(b.Address.Account[:])
	cb.AddUint32(uint32(b.Address.Device))
	cb.AddBytes(b.Identity.ed[:])
	spk, _ := b.SignedPreKey.MarshalBinary()
	cb.AddBytes(spk)
	kpk, _ := b.KEMPreKey.MarshalBinary()
	cb.AddBytes(kpk)
	if b.OneTimePreKey != nil {
		cb.AddUint8(1)
		opk, _ := b.OneTimePreKey.MarshalBinary()
		cb.AddBytes(opk)
	} else {
		cb.AddUint8(0)
	}
	return cb.Bytes()
}

// ParsePreKeyBundle parses a bundle and verifies the signatures of its
// signed prekey and KEM prekey by the bundle's identity key. The caller must
// still check that the identity key is the one the account's verified device
// list names for that device ([PreKeyBundle.VerifyAgainst]).
func ParsePreKeyBundle(data []byte) (*PreKeyBundle, error) {
	s := cryptobyte.String(data)
	var version uint8
	var account, identity []byte
	var device uint32
	if !s.ReadUint8(&version) || version != preKeyBundleVersion ||
		!s.ReadBytes(&account, AccountIDSize) || !s.ReadUint32(&device) ||
		!s.ReadBytes(&identity, PublicKeySize) {
		return nil, malformed("prekey bundle")
	}
	b := new(PreKeyBundle)
	copy(b.Address.Account[:], account)
	b.Address.Device = DeviceID(device)
	var err error
	if b.Identity, err = NewIdentityKey(identity); err != nil {
		return nil, err
	}
	spk, err := readSignedPreKey(&s)
	if err != nil {
		return nil, malformed("prekey bundle: signed prekey")
	}
	kpk, err := readKEMPreKey(&s)
	if err != nil {
		return nil, malformed("prekey bundle: KEM prekey")
	}
	b.SignedPreKey, b.KEMPreKey = *spk, *kpk
	var hasOneTime uint8
	if !s.ReadUint8(&hasOneTime) || hasOneTime > 1 {
		return nil, malformed("prekey bundle")
	}
	if hasOneTime == 1 {
		if b.OneTimePreKey, err = readOneTimePreKey(&s); err != nil {
			return nil, malformed("prekey bundle: one-time prekey")
		}
	}
	if !s.Empty() {
		return nil, malformed("prekey bundle: trailing data")
	}
	if err := b.Verify(); err != nil {
		return nil, err
	}
	return b, nil
}

// Verify checks the signatures of the signed prekey and the KEM prekey by
// the bundle's identity key. The signatures are verified only if they
// have not been verified for the bundle's current fields before (see
// [PreKeyBundle]).
func (b *PreKeyBundle) Verify() error {
	if b.Address.Device == 0 {
		return malformed("prekey bundle: device 0")
	}
	if b.verified.Load().covers(b) {
		return nil
	}
	if len(b.SignedPreKey.Signature) != SignatureSize || len(b.KEMPreKey.Signature) != SignatureSize {
		if err := b.SignedPreKey.verify(b.Identity); err != nil {
			return err
		}
		return b.KEMPreKey.verify(b.Identity)
	}
	// Verify a copy and record exactly what was verified.
	v := b.snapshot()
	spk := SignedPreKey{ID: v.spkID, Public: v.spk, Signature: v.spkSignature[:]}
	kem := KEMPreKey{ID: v.kemID, LastResort: v.kemLast, EncapsulationKey: v.kem, Signature: v.kemSignature[:]}
	identity := IdentityKey{ed: v.identity, x: v.identityX}
	if err := spk.verify(identity); err != nil {
		return err
	}
	if err := kem.verify(identity); err != nil {
		return err
	}
	b.verified.Store(v)
	return nil
}

// VerifyAgainst checks the bundle's signatures and that its account, device
// and identity key are those of a verified device list. It returns
// *[UntrustedIdentityError] when the identity key differs.
func (b *PreKeyBundle) VerifyAgainst(l *DeviceList) error {
	if got := l.Account(); got != b.Address.Account {
		return &AccountMismatchError{Want: b.Address.Account, Got: got}
	}
	d, ok := l.Device(b.Address.Device)
	if !ok || !d.Identity.Equal(b.Identity) {
		return &UntrustedIdentityError{Address: b.Address}
	}
	return b.Verify()
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}
