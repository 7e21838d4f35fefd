package crypto

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/cryptobyte"
)

// Sealed sender (PROTOCOL.md §5.2).
//
// A sealed envelope carries one per-device payload (an opaque ratchet
// message) to one recipient device so that the relay, which sees only the
// recipient's address, cannot tell who sent it. It has two layers, both
// keyed by X25519 with the recipient's identity key:
//
//   - an ephemeral-static layer (a fresh ephemeral key and the recipient's
//     identity key) that encrypts the sender's X25519 identity key, so only
//     the recipient learns who the sender is;
//   - a static-static layer (the sender's identity key and the recipient's,
//     chained to the first) that encrypts the sender certificate and the
//     content, so a successful decryption proves the holder of the sender's
//     identity key made the envelope for this recipient.
//
// The recipient then checks the certificate against its trust roots and
// that the certificate names the identity key the second layer
// authenticated. This is the shape of Signal's sealed sender v1. HPKE's
// auth mode would do the same job, but Go's crypto/hpke offers only the base
// mode, so the two layers are built from crypto/ecdh, crypto/hkdf and
// AES-256-GCM directly. Each AEAD key is used for exactly one message, so
// the nonce is fixed at zero.
//
// Sealed sender is not responsible for: replay protection (the ratchet
// message inside rejects replays), padding (the ratchet plaintext is padded,
// §8) or forward secrecy of the sender's identity against a later
// compromise of the recipient's identity key (a non-goal, §11).

// Specification constants of sealed sender (PROTOCOL.md §5.2).
const (
	sealedVersion = 1
	// sealedPrefixSize is version || ephemeral key || encrypted static key.
	sealedPrefixSize = 1 + PublicKeySize + PublicKeySize + gcmTagSize
	// SealedOverhead is the size of a sealed envelope minus the sizes of its
	// content and sender certificate.
	SealedOverhead = sealedPrefixSize + 2 + gcmTagSize
)

// Implementation constants.
const (
	// MaxSealedContentSize bounds the content of a sealed envelope. It is
	// far above any padded ratchet message; the bound lets Open refuse
	// absurd inputs before doing any Diffie-Hellman.
	MaxSealedContentSize = 1 << 20
	// maxSealedEnvelopeSize bounds a whole envelope.
	maxSealedEnvelopeSize = SealedOverhead + 0xffff + MaxSealedContentSize
)

const gcmTagSize = 16

var zeroNonce [12]byte

// envelopeGCM returns AES-256-GCM keyed with a 32-byte single-use key.
func envelopeGCM(key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic("crypto: envelopeGCM: " + err.Error()) // key length is internal
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic("crypto: envelopeGCM: " + err.Error())
	}
	return aead
}

// envelopeKDF is HKDF-SHA256 with the given salt, info and output length.
func envelopeKDF(secret, salt []byte, info string, n int) []byte {
	out, err := hkdf.Key(sha256.New, secret, salt, info, n)
	if err != nil {
		panic("crypto: envelopeKDF: " + err.Error()) // lengths are internal
	}
	return out
}

// Seal wraps content for the recipient device's identity key so that only
// that device can open it and learn that sender sent it (PROTOCOL.md §5.2).
// cert must be a certificate for sender's identity key; it is carried
// encrypted. content is opaque (normally a ratchet message) and at most
// MaxSealedContentSize bytes. The envelope reveals its length and the
// recipient it was made for, nothing else.
func Seal(sender *IdentityPrivateKey, cert *SenderCertificate, recipient IdentityKey, content []byte) ([]byte, error) {
	if err := checkSealArgs(sender, cert, recipient, content); err != nil {
		return nil, err
	}
	e, err := newKeyPair()
	if err != nil {
		return nil, fmt.Errorf("crypto: sealed sender: %w", err)
	}
	defer e.forget()
	return sealEnvelope(e, sender, cert, recipient, content)
}

func checkSealArgs(sender *IdentityPrivateKey, cert *SenderCertificate, recipient IdentityKey, content []byte) error {
	switch {
	case sender == nil || cert == nil || recipient.IsZero():
		return errors.New("crypto: sealed sender: missing sender, certificate or recipient")
	case !cert.Identity.Equal(sender.Public()):
		return errors.New("crypto: sealed sender: certificate is not for the sender's identity key")
	case len(cert.raw) > 0xffff:
		return errors.New("crypto: sealed sender: certificate too large")
	case len(content) > MaxSealedContentSize:
		return errors.New("crypto: sealed sender: content too large")
	}
	return nil
}

// sealEnvelope implements PROTOCOL.md §5.2 with a given ephemeral key.
func sealEnvelope(e *keyPair, sender *IdentityPrivateKey, cert *SenderCertificate, recipient IdentityKey, content []byte) ([]byte, error) {
	dh2, err := sender.dh(recipient.X25519())
	if err != nil {
		return nil, fmt.Errorf("crypto: sealed sender: recipient key: %w", err)
	}
	defer clear(dh2)
	return sealEnvelopeStatic(e, sender, dh2, cert, recipient, content)
}

// sealEnvelopeStatic is sealEnvelope with the static-static
// Diffie-Hellman output dh2 = DH(sender, recipient) already computed
// (by the caller or a [Sealer]'s cache).
func sealEnvelopeStatic(e *keyPair, sender *IdentityPrivateKey, dh2 []byte, cert *SenderCertificate, recipient IdentityKey, content []byte) ([]byte, error) {
	ephPub := e.public()
	recipientX := recipient.X25519().Bytes()

	// Layer 1: ephemeral-static, hides the sender's identity key.
	dh1, err := e.dh(recipient.X25519())
	if err != nil {
		return nil, fmt.Errorf("crypto: sealed sender: recipient key: %w", err)
	}
	chainKey, key1 := sealedLayer1Keys(dh1, ephPub, recipientX)
	clear(dh1)
	out := make([]byte, 0, SealedOverhead+len(cert.raw)+len(content))
	out = append(out, sealedVersion)
	out = append(out, ephPub...)
	out = envelopeGCM(key1).Seal(out, zeroNonce[:], sender.Public().X25519().Bytes(), out[:1+PublicKeySize])

	// Layer 2: static-static, authenticates the sender to the recipient.
	// The inner plaintext is built in place after the prefix and
	// encrypted over itself.
	key2 := envelopeKDF(dh2, chainKey, labelSealedStatic, 32)
	inner := out[sealedPrefixSize:]
	inner = append(inner, byte(len(cert.raw)>>8), byte(len(cert.raw)))
	inner = append(inner, cert.raw...)
	inner = append(inner, content...)
	return envelopeGCM(key2).Seal(out[:sealedPrefixSize], zeroNonce[:], inner, out[:sealedPrefixSize]), nil
}

// sealedLayer1Keys derives the chain key and layer-1 key:
//
//	chain key || key1 = HKDF-SHA256(ikm = DH(e, R), salt = "",
//	                    info = "sotto/v1 sealed sender ephemeral" || E || R)
func sealedLayer1Keys(dh, ephPub, recipientX []byte) (chainKey, key1 []byte) {
	info := make([]byte, 0, len(labelSealedEphemeral)+2*PublicKeySize)
	info = append(info, labelSealedEphemeral...)
	info = append(info, ephPub...)
	info = append(info, recipientX...)
	k := envelopeKDF(dh, nil, string(info), 64)
	return k[:32], k[32:]
}

// Open opens a sealed envelope addressed to recipient (PROTOCOL.md §5.2).
// It verifies, in order: both AEAD layers (any failure is [ErrDecrypt]);
// the sender certificate against roots at now (ParseSenderCertificate's
// errors, wrapped); and that the certificate names the identity key that
// authenticated the envelope ([ErrSenderMismatch]). It returns the verified
// certificate and the content; on error both are nil. The content is
// authenticated as coming from the certificate's identity key, but replay
// protection is the inner protocol's job.
func Open(recipient *IdentityPrivateKey, envelope []byte, roots []TrustRoot, now time.Time) (*SenderCertificate, []byte, error) {
	if recipient == nil {
		return nil, nil, errors.New("crypto: sealed sender: missing recipient key")
	}
	certBytes, content, senderX, err := openEnvelope(recipient, envelope, recipient.dh)
	if err != nil {
		return nil, nil, err
	}
	cert, err := checkSealedCertificate(certBytes, senderX, roots, now)
	if err != nil {
		return nil, nil, err
	}
	return cert, content, nil
}

// openEnvelope opens both AEAD layers of a sealed envelope (PROTOCOL.md
// §5.2) and returns the sender certificate's bytes, the content and the
// sender's X25519 identity key that authenticated the envelope; nothing
// is verified about the certificate yet. staticDH computes the
// static-static Diffie-Hellman with the sender's key (the recipient's
// identity dh, or a [Sealer]'s cache of it).
func openEnvelope(recipient *IdentityPrivateKey, envelope []byte, staticDH func(*ecdh.PublicKey) ([]byte, error)) (certBytes, content, senderX []byte, err error) {
	if len(envelope) < SealedOverhead || len(envelope) > maxSealedEnvelopeSize || envelope[0] != sealedVersion {
		return nil, nil, nil, malformed("sealed envelope")
	}
	eph, err := ecdh.X25519().NewPublicKey(envelope[1 : 1+PublicKeySize])
	if err != nil {
		return nil, nil, nil, ErrDecrypt
	}
	dh1, err := recipient.dh(eph)
	if err != nil {
		return nil, nil, nil, ErrDecrypt
	}
	chainKey, key1 := sealedLayer1Keys(dh1, envelope[1:1+PublicKeySize], recipient.Public().X25519().Bytes())
	clear(dh1)
	senderX, err = envelopeGCM(key1).Open(nil, zeroNonce[:], envelope[1+PublicKeySize:sealedPrefixSize], envelope[:1+PublicKeySize])
	if err != nil {
		return nil, nil, nil, ErrDecrypt
	}
	senderPub, err := ecdh.X25519().NewPublicKey(senderX)
	if err != nil {
		return nil, nil, nil, ErrDecrypt
	}
	dh2, err := staticDH(senderPub)
	if err != nil {
		return nil, nil, nil, ErrDecrypt
	}
	key2 := envelopeKDF(dh2, chainKey, labelSealedStatic, 32)
	clear(dh2)
	inner, err := envelopeGCM(key2).Open(nil, zeroNonce[:], envelope[sealedPrefixSize:], envelope[:sealedPrefixSize])
	if err != nil {
		return nil, nil, nil, ErrDecrypt
	}
	certBytes, content, ok := splitCertAndContent(inner)
	if !ok {
		// Authenticated but malformed: only the sender can produce it.
		return nil, nil, nil, ErrDecrypt
	}
	return certBytes, content, senderX, nil
}

// splitCertAndContent splits cert_length u16 || cert || content.
func splitCertAndContent(inner []byte) (cert, content []byte, ok bool) {
	s := cryptobyte.String(inner)
	var c cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&c) {
		return nil, nil, false
	}
	return c, []byte(s), true
}

// checkSealedCertificate verifies the certificate carried by an envelope and
// that it names the X25519 identity key that authenticated the envelope.
func checkSealedCertificate(certBytes, senderX []byte, roots []TrustRoot, now time.Time) (*SenderCertificate, error) {
	cert, err := ParseSenderCertificate(certBytes, roots, now)
	if err != nil {
		return nil, fmt.Errorf("crypto: sealed sender: %w", err)
	}
	return cert, checkSealedSender(cert, senderX)
}

// checkSealedSender checks that a verified certificate names the X25519
// identity key that authenticated the envelope.
func checkSealedSender(cert *SenderCertificate, senderX []byte) error {
	// The map from Ed25519 to X25519 keys is 2-to-1 (P and -P share a u
	// coordinate), and the private scalars of the two are negations of each
	// other: whoever authenticated with one holds the other.
	if subtle.ConstantTimeCompare(cert.Identity.X25519().Bytes(), senderX) != 1 {
		return ErrSenderMismatch
	}
	return nil
}
