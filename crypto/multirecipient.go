package crypto

import (
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"time"
)

// Multi-recipient sealed messages (PROTOCOL.md §6).
//
// A message for many recipient devices (typically a sender-key group
// message, §7) is split into one body, encrypted once under a fresh message
// key M, and one small header per recipient device. The relay stores the
// body once and delivers header || body to each device; it learns the
// recipients, the body length and the time, never the sender.
//
// A header lets exactly one device recover M (M XOR a pad derived from an
// ephemeral-static X25519 exchange) and authenticates the sender to that
// device with a tag derived from the static-static exchange, over the
// ephemeral key, the masked key and the SHA-256 of the body. This is the
// shape of Signal's sealed sender v2, with two deliberate differences:
//
//   - the tag covers the hash of the whole body, so a co-recipient who
//     knows M cannot substitute a different body under the sender's name;
//   - the body carries a commitment to M (derived from M with HKDF) instead
//     of deriving the ephemeral key from M, so that AES-GCM, which is not
//     key-committing, cannot be made to open one body to different
//     plaintexts under different keys, without a base-point multiplication
//     on every open.
//
// Multi-recipient messages are not responsible for replay protection (the
// sender-key message inside rejects replays) nor for padding (§8).

// Specification constants of multi-recipient messages (PROTOCOL.md §6).
const (
	multiVersion = 1
	// MultiHeaderSize is the size of one recipient's header: the masked
	// message key and the authentication tag.
	MultiHeaderSize = 32 + multiTagSize
	multiTagSize    = 16
	// multiBodyPrefixSize is version || ephemeral key || commitment.
	multiBodyPrefixSize = 1 + PublicKeySize + 32
	// MultiBodyOverhead is the size of a body minus its content and sender
	// certificate.
	MultiBodyOverhead = multiBodyPrefixSize + PublicKeySize + 2 + gcmTagSize
)

// Implementation constants.
const (
	// MaxMultiRecipients bounds the recipient devices of one message, as
	// Signal does; larger groups split the send.
	MaxMultiRecipients = 5000
	maxMultiBodySize   = MultiBodyOverhead + 0xffff + MaxSealedContentSize
)

// MultiRecipient is one recipient device of a multi-recipient message.
type MultiRecipient struct {
	Address  Address
	Identity IdentityKey
}

// RecipientHeader is the header for one recipient device. The relay
// delivers Header followed by the shared body to the device at Address.
type RecipientHeader struct {
	Address Address
	Header  []byte // MultiHeaderSize bytes
}

// SealMulti encrypts content once for all recipients and returns the shared
// body and one header per recipient, in the order of recipients
// (PROTOCOL.md §6). cert must be a certificate for sender's identity key.
// Recipients must be distinct addresses, at most MaxMultiRecipients. Only
// the body and headers leave the device; the message key is discarded.
func SealMulti(sender *IdentityPrivateKey, cert *SenderCertificate, recipients []MultiRecipient, content []byte) (body []byte, headers []RecipientHeader, err error) {
	return sealMultiWith(sender, sender.dh, cert, recipients, content)
}

// sealMultiWith is SealMulti with the static-static Diffie-Hellman
// computed by staticDH (the sender's identity dh, or a [Sealer]'s cache).
func sealMultiWith(sender *IdentityPrivateKey, staticDH func(*ecdh.PublicKey) ([]byte, error), cert *SenderCertificate, recipients []MultiRecipient, content []byte) (body []byte, headers []RecipientHeader, err error) {
	if len(recipients) == 0 || len(recipients) > MaxMultiRecipients {
		return nil, nil, fmt.Errorf("crypto: multi-recipient: %d recipients (1..%d allowed)", len(recipients), MaxMultiRecipients)
	}
	seen := make(map[Address]bool, len(recipients))
	for _, r := range recipients {
		if err := checkSealArgs(sender, cert, r.Identity, content); err != nil {
			return nil, nil, fmt.Errorf("crypto: multi-recipient: %w", err)
		}
		if seen[r.Address] {
			return nil, nil, fmt.Errorf("crypto: multi-recipient: duplicate recipient %s", r.Address)
		}
		seen[r.Address] = true
	}
	var m [32]byte
	if _, err := rand.Read(m[:]); err != nil {
		return nil, nil, fmt.Errorf("crypto: multi-recipient: %w", err)
	}
	e, err := newKeyPair()
	if err != nil {
		return nil, nil, fmt.Errorf("crypto: multi-recipient: %w", err)
	}
	defer e.forget()
	return sealMulti(m[:], e, sender, staticDH, cert, recipients, content)
}

// sealMulti implements PROTOCOL.md §6 with a given message key and
// ephemeral key.
func sealMulti(m []byte, e *keyPair, sender *IdentityPrivateKey, staticDH func(*ecdh.PublicKey) ([]byte, error), cert *SenderCertificate, recipients []MultiRecipient, content []byte) ([]byte, []RecipientHeader, error) {
	ephPub := e.public()
	bodyKey, commitment := multiBodyKeys(m, ephPub)
	body := make([]byte, 0, MultiBodyOverhead+len(cert.raw)+len(content))
	body = append(body, multiVersion)
	body = append(body, ephPub...)
	body = append(body, commitment...)
	inner := make([]byte, 0, PublicKeySize+2+len(cert.raw)+len(content)+gcmTagSize)
	inner = append(inner, sender.Public().X25519().Bytes()...)
	inner = append(inner, byte(len(cert.raw)>>8), byte(len(cert.raw)))
	inner = append(inner, cert.raw...)
	inner = append(inner, content...)
	body = envelopeGCM(bodyKey).Seal(body, zeroNonce[:], inner, body[:1+PublicKeySize])
	bodyHash := sha256.Sum256(body)
	senderX := sender.Public().X25519().Bytes()

	headers := make([]RecipientHeader, len(recipients))
	for i, r := range recipients {
		recipientX := r.Identity.X25519().Bytes()
		dh1, err := e.dh(r.Identity.X25519())
		if err != nil {
			return nil, nil, fmt.Errorf("crypto: multi-recipient: key of %s: %w", r.Address, err)
		}
		h := make([]byte, MultiHeaderSize)
		subtle.XORBytes(h[:32], m, multiKeyPad(dh1, ephPub, recipientX))
		dh2, err := staticDH(r.Identity.X25519())
		if err != nil {
			return nil, nil, fmt.Errorf("crypto: multi-recipient: key of %s: %w", r.Address, err)
		}
		copy(h[32:], multiAuthTag(dh2, ephPub, h[:32], bodyHash[:], senderX, recipientX))
		clear(dh2)
		headers[i] = RecipientHeader{Address: r.Address, Header: h}
	}
	return body, headers, nil
}

// multiBodyKeys derives the body key and the commitment to M:
//
//	body key || commitment = HKDF-SHA256(ikm = M, salt = "",
//	                         info = "sotto/v1 multi-recipient body" || E)
func multiBodyKeys(m, ephPub []byte) (bodyKey, commitment []byte) {
	k := envelopeKDF(m, nil, labelMultiBody+string(ephPub), 64)
	return k[:32], k[32:]
}

// multiKeyPad derives the pad that masks M in one header:
//
//	pad = HKDF-SHA256(ikm = DH(e, R), salt = "",
//	      info = "sotto/v1 multi-recipient key" || E || R)
func multiKeyPad(dh, ephPub, recipientX []byte) []byte {
	return envelopeKDF(dh, nil, labelMultiKey+string(ephPub)+string(recipientX), 32)
}

// multiAuthTag derives one header's authentication tag:
//
//	tag = HKDF-SHA256(ikm = DH(s, R), salt = "", info = "sotto/v1
//	      multi-recipient auth" || E || C || SHA-256(body) || S || R)[:16]
func multiAuthTag(dh, ephPub, masked, bodyHash, senderX, recipientX []byte) []byte {
	info := make([]byte, 0, len(labelMultiAuth)+5*32)
	info = append(info, labelMultiAuth...)
	info = append(info, ephPub...)
	info = append(info, masked...)
	info = append(info, bodyHash...)
	info = append(info, senderX...)
	info = append(info, recipientX...)
	return envelopeKDF(dh, nil, string(info), multiTagSize)
}

// OpenMulti opens the shared body of a multi-recipient message with this
// device's header (PROTOCOL.md §6). It verifies, in order: the masked key
// and the body's commitment and AEAD (failures are [ErrDecrypt]); the
// header's tag, which authenticates the sender's identity key over this
// exact body ([ErrDecrypt]); the sender certificate against roots at now
// (ParseSenderCertificate's errors, wrapped); and that the certificate names
// the authenticated identity key ([ErrSenderMismatch]). It returns nil
// values on any error.
func OpenMulti(recipient *IdentityPrivateKey, header, body []byte, roots []TrustRoot, now time.Time) (*SenderCertificate, []byte, error) {
	if recipient == nil {
		return nil, nil, errors.New("crypto: multi-recipient: missing recipient key")
	}
	certBytes, content, senderX, err := openMulti(recipient, header, body, recipient.dh)
	if err != nil {
		return nil, nil, err
	}
	cert, err := checkSealedCertificate(certBytes, senderX, roots, now)
	if err != nil {
		return nil, nil, err
	}
	return cert, content, nil
}

// openMulti opens and authenticates a multi-recipient message for this
// device's header and returns the sender certificate's bytes, the content
// and the sender's X25519 identity key that authenticated it; nothing is
// verified about the certificate yet. staticDH computes the static-static
// Diffie-Hellman with the sender's key (as for openEnvelope).
func openMulti(recipient *IdentityPrivateKey, header, body []byte, staticDH func(*ecdh.PublicKey) ([]byte, error)) (certBytes, content, senderX []byte, err error) {
	if len(header) != MultiHeaderSize {
		return nil, nil, nil, malformed("multi-recipient header")
	}
	if len(body) < MultiBodyOverhead || len(body) > maxMultiBodySize || body[0] != multiVersion {
		return nil, nil, nil, malformed("multi-recipient body")
	}
	ephPub := body[1 : 1+PublicKeySize]
	eph, err := ecdh.X25519().NewPublicKey(ephPub)
	if err != nil {
		return nil, nil, nil, ErrDecrypt
	}
	dh1, err := recipient.dh(eph)
	if err != nil {
		return nil, nil, nil, ErrDecrypt
	}
	recipientX := recipient.Public().X25519().Bytes()
	m := make([]byte, 32)
	subtle.XORBytes(m, header[:32], multiKeyPad(dh1, ephPub, recipientX))
	bodyKey, commitment := multiBodyKeys(m, ephPub)
	if subtle.ConstantTimeCompare(commitment, body[1+PublicKeySize:multiBodyPrefixSize]) != 1 {
		return nil, nil, nil, ErrDecrypt
	}
	inner, err := envelopeGCM(bodyKey).Open(nil, zeroNonce[:], body[multiBodyPrefixSize:], body[:1+PublicKeySize])
	if err != nil {
		return nil, nil, nil, ErrDecrypt
	}
	senderX = inner[:PublicKeySize] // length guaranteed by MultiBodyOverhead
	senderPub, err := ecdh.X25519().NewPublicKey(senderX)
	if err != nil {
		return nil, nil, nil, ErrDecrypt
	}
	dh2, err := staticDH(senderPub)
	if err != nil {
		return nil, nil, nil, ErrDecrypt
	}
	bodyHash := sha256.Sum256(body)
	tag := multiAuthTag(dh2, ephPub, header[:32], bodyHash[:], senderX, recipientX)
	clear(dh2)
	if subtle.ConstantTimeCompare(tag, header[32:]) != 1 {
		return nil, nil, nil, ErrDecrypt
	}
	certBytes, content, ok := splitCertAndContent(inner[PublicKeySize:])
	if !ok {
		return nil, nil, nil, ErrDecrypt
	}
	return certBytes, content, senderX, nil
}
