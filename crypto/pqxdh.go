package crypto

import (
	"bytes"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/mlkem"
	"crypto/sha256"
	"errors"
	"fmt"
)

// This file implements PQXDH (PROTOCOL.md §3) after Signal's PQXDH
// specification, with curve X25519, hash SHA-256 and
// ML-KEM-768 as the post-quantum KEM. It reads top to bottom like the
// specification: the initiator's computation, then the responder's.

// pqxdhPrefix is the 32 0xFF bytes that the specification puts before the
// key material (F), so that the HKDF input never starts like a valid
// scalar or point encoding.
var pqxdhPrefix = [32]byte{
	0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
}

// PreKeyLookup gives [AcceptSession] the responder's private prekeys by
// ID. Each method returns the key pair with exactly that ID, or an error
// wrapping [ErrUnknownPreKey] for an ID it does not hold, in particular
// for a one-time prekey already consumed and deleted. The returned keys
// must be kept secret.
type PreKeyLookup interface {
	SignedPreKey(id uint32) (*SignedPreKeyPair, error)
	KEMPreKey(id uint32) (*KEMPreKeyPair, error)
	OneTimePreKey(id uint32) (*OneTimePreKeyPair, error)
}

// PreKeysUsed reports which of the responder's prekeys an accepted prekey
// message used. The caller MUST delete the one-time prekey (when
// HasOneTimePreKey) and the KEM prekey (unless KEMLastResort) from its
// store before, or atomically with, persisting the new session, so that
// a second prekey message naming them is refused (PROTOCOL.md §3.5).
type PreKeysUsed struct {
	SignedPreKeyID   uint32
	KEMPreKeyID      uint32
	KEMLastResort    bool // the KEM prekey is a last-resort key: keep it
	HasOneTimePreKey bool
	OneTimePreKeyID  uint32
}

// pqxdhSecret derives SK from the key material. It implements PROTOCOL.md
// §3.3:
//
//	SK = HKDF-SHA-256(salt = 0^32, ikm = 0xFF^32 || DH1 || DH2 || DH3 [|| DH4] || SS,
//	                  info = "Sotto-v1_CURVE25519_SHA-256_ML-KEM-768", L = 32)
func pqxdhSecret(dh1, dh2, dh3, dh4, ss []byte) [32]byte {
	ikm := make([]byte, 0, len(pqxdhPrefix)+5*32)
	ikm = append(ikm, pqxdhPrefix[:]...)
	ikm = append(ikm, dh1...)
	ikm = append(ikm, dh2...)
	ikm = append(ikm, dh3...)
	ikm = append(ikm, dh4...)
	ikm = append(ikm, ss...)
	var zeroSalt [sha256.Size]byte
	out, err := hkdf.Key(sha256.New, ikm, zeroSalt[:], labelPQXDH, 32)
	if err != nil {
		panic("crypto: HKDF failed: " + err.Error())
	}
	clear(ikm)
	var sk [32]byte
	copy(sk[:], out)
	clear(out)
	return sk
}

// sessionAD is the associated data that binds both parties of a session
// (PROTOCOL.md §3.3):
//
//	AD = initiator_identity [32] || responder_identity [32]
//	     || initiator_account [20] || initiator_device u32
//	     || responder_account [20] || responder_device u32
func sessionAD(initiatorID, responderID *[PublicKeySize]byte, initiator, responder Address) []byte {
	ad := make([]byte, 0, 2*PublicKeySize+2*addressSize)
	ad = append(ad, initiatorID[:]...)
	ad = append(ad, responderID[:]...)
	ad = appendAddress(ad, initiator)
	return appendAddress(ad, responder)
}

// initiatorKeys are the random values of one PQXDH run on the initiator's
// side. Only tests choose them; InitiateSession draws them from crypto/rand.
type initiatorKeys struct {
	ephemeral *keyPair // EK_A
	ratchet   *keyPair // the initiator's first ratchet key
	// encapsulate runs ML-KEM encapsulation; nil means the randomized
	// EncapsulationKey768.Encapsulate.
	encapsulate func(*mlkem.EncapsulationKey768) (ss, ct []byte)
}

// initiate runs the initiator's side of PQXDH and sets up its ratchet. It
// implements PROTOCOL.md §3.3. The bundle's signatures are verified here
// (once per bundle: [PreKeyBundle.Verify] remembers); that its identity
// key is the one the peer's device list names is the caller's check.
func initiate(ik *IdentityPrivateKey, self Address, bundle *PreKeyBundle, keys initiatorKeys) (*Session, error) {
	if ik == nil || bundle == nil {
		return nil, errors.New("crypto: pqxdh: nil identity or bundle")
	}
	if self.Device == 0 || self == bundle.Address {
		return nil, errors.New("crypto: pqxdh: invalid own address")
	}
	if err := bundle.Verify(); err != nil {
		return nil, fmt.Errorf("crypto: pqxdh: %w", err)
	}
	ek := keys.ephemeral
	dh1, err := ik.dh(bundle.SignedPreKey.Public)
	if err != nil {
		return nil, fmt.Errorf("crypto: pqxdh: DH1: %w", err)
	}
	dh2, err := ek.dh(bundle.Identity.X25519())
	if err != nil {
		return nil, fmt.Errorf("crypto: pqxdh: DH2: %w", err)
	}
	dh3, err := ek.dh(bundle.SignedPreKey.Public)
	if err != nil {
		return nil, fmt.Errorf("crypto: pqxdh: DH3: %w", err)
	}
	var dh4 []byte
	if bundle.OneTimePreKey != nil {
		if dh4, err = ek.dh(bundle.OneTimePreKey.Public); err != nil {
			return nil, fmt.Errorf("crypto: pqxdh: DH4: %w", err)
		}
	}
	var ss, ct []byte
	if keys.encapsulate != nil {
		ss, ct = keys.encapsulate(bundle.KEMPreKey.EncapsulationKey)
	} else {
		ss, ct = bundle.KEMPreKey.EncapsulationKey.Encapsulate()
	}
	sk := pqxdhSecret(dh1, dh2, dh3, dh4, ss)
	for _, b := range [][]byte{dh1, dh2, dh3, dh4, ss} {
		clear(b)
	}

	r, err := initInitiator(sk, keys.ratchet, bundle.SignedPreKey.Public)
	clear(sk[:])
	if err != nil {
		return nil, fmt.Errorf("crypto: pqxdh: %w", err)
	}
	s := &Session{
		role:     roleInitiator,
		local:    self,
		remote:   bundle.Address,
		localID:  ik.pub.ed,
		remoteID: bundle.Identity.ed,
		ratchet:  r,
		pending: &pendingPreKey{
			signedPreKeyID: bundle.SignedPreKey.ID,
			kemPreKeyID:    bundle.KEMPreKey.ID,
			kemCiphertext:  ct,
		},
	}
	copy(s.baseKey[:], ek.public())
	if bundle.OneTimePreKey != nil {
		s.pending.hasOneTime = true
		s.pending.oneTimePreKeyID = bundle.OneTimePreKey.ID
	}
	s.remoteIdentity = bundle.Identity
	s.ad = s.computeAD()
	return s, nil
}

// accept runs the responder's side of PQXDH on a parsed prekey message
// and decrypts the ratchet message it carries. It implements PROTOCOL.md
// §3.5. Nothing is returned unless the AEAD opened.
func accept(ik *IdentityPrivateKey, self Address, keys PreKeyLookup, m *message) (*Session, []byte, PreKeysUsed, error) {
	var used PreKeysUsed
	p := m.preKey
	if p == nil {
		return nil, nil, used, fmt.Errorf("crypto: pqxdh: not a prekey message: %w", ErrMalformed)
	}
	if p.responder != self {
		return nil, nil, used, fmt.Errorf("crypto: pqxdh: prekey message for another address: %w", ErrDecrypt)
	}
	// The ratchet's bound, checked before any Diffie-Hellman (§4.4).
	if m.header.n > MaxSkip {
		return nil, nil, used, ErrTooManySkipped
	}
	initiatorID, err := NewIdentityKey(p.identity[:])
	if err != nil {
		return nil, nil, used, fmt.Errorf("crypto: pqxdh: initiator %w", err)
	}
	ek, err := ecdh.X25519().NewPublicKey(p.ephemeral[:])
	if err != nil {
		return nil, nil, used, fmt.Errorf("crypto: pqxdh: ephemeral key: %w", ErrInvalidKey)
	}
	spk, err := keys.SignedPreKey(p.signedPreKeyID)
	if err != nil {
		return nil, nil, used, fmt.Errorf("crypto: pqxdh: signed prekey %d: %w", p.signedPreKeyID, err)
	}
	kpk, err := keys.KEMPreKey(p.kemPreKeyID)
	if err != nil {
		return nil, nil, used, fmt.Errorf("crypto: pqxdh: KEM prekey %d: %w", p.kemPreKeyID, err)
	}
	var opk *OneTimePreKeyPair
	if p.hasOneTime {
		if opk, err = keys.OneTimePreKey(p.oneTimePreKeyID); err != nil {
			return nil, nil, used, fmt.Errorf("crypto: pqxdh: one-time prekey %d: %w", p.oneTimePreKeyID, err)
		}
	}
	if spk == nil || spk.Private == nil || spk.ID != p.signedPreKeyID ||
		kpk == nil || kpk.Private == nil || kpk.ID != p.kemPreKeyID ||
		(p.hasOneTime && (opk == nil || opk.Private == nil || opk.ID != p.oneTimePreKeyID)) {
		// A lookup that returns nothing, or a key under another ID, would
		// make the caller delete the wrong key.
		return nil, nil, used, fmt.Errorf("crypto: pqxdh: prekey lookup returned no key or another ID: %w", ErrUnknownPreKey)
	}

	dh1, err := x25519(spk.Private, initiatorID.X25519())
	if err != nil {
		return nil, nil, used, fmt.Errorf("crypto: pqxdh: DH1: %w", err)
	}
	dh2, err := ik.dh(ek)
	if err != nil {
		return nil, nil, used, fmt.Errorf("crypto: pqxdh: DH2: %w", err)
	}
	dh3, err := x25519(spk.Private, ek)
	if err != nil {
		return nil, nil, used, fmt.Errorf("crypto: pqxdh: DH3: %w", err)
	}
	var dh4 []byte
	if opk != nil {
		if dh4, err = x25519(opk.Private, ek); err != nil {
			return nil, nil, used, fmt.Errorf("crypto: pqxdh: DH4: %w", err)
		}
	}
	// ML-KEM decapsulation never fails on a ciphertext of the right length:
	// a forged one yields an unrelated secret (implicit rejection), and the
	// AEAD below fails.
	ss, err := kpk.Private.Decapsulate(p.kemCiphertext)
	if err != nil {
		return nil, nil, used, fmt.Errorf("crypto: pqxdh: KEM ciphertext: %w", ErrMalformed)
	}
	sk := pqxdhSecret(dh1, dh2, dh3, dh4, ss)
	for _, b := range [][]byte{dh1, dh2, dh3, dh4, ss} {
		clear(b)
	}

	s := &Session{
		role:           roleResponder,
		local:          self,
		remote:         p.initiator,
		localID:        ik.pub.ed,
		remoteID:       p.identity,
		baseKey:        p.ephemeral,
		ratchet:        initResponder(sk, spk.Private),
		remoteIdentity: initiatorID,
	}
	clear(sk[:])
	s.ad = s.computeAD()
	pt, err := s.ratchet.decrypt(m, append(bytes.Clone(s.ad), m.prefix...))
	if err != nil {
		return nil, nil, used, err
	}
	used = PreKeysUsed{
		SignedPreKeyID:   spk.ID,
		KEMPreKeyID:      kpk.ID,
		KEMLastResort:    kpk.LastResort,
		HasOneTimePreKey: opk != nil,
	}
	if opk != nil {
		used.OneTimePreKeyID = opk.ID
	}
	return s, pt, used, nil
}

// parseX25519Public parses a 32-byte X25519 public key.
func parseX25519Public(b []byte) (*ecdh.PublicKey, error) {
	k, err := ecdh.X25519().NewPublicKey(b)
	if err != nil {
		return nil, ErrInvalidKey
	}
	return k, nil
}
