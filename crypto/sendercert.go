package crypto

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/cryptobyte"
)

const (
	senderCertVersion = 1
	// TrustRootIDSize is the length of the key ID that names the trust root
	// which signed a sender certificate.
	TrustRootIDSize = 8
	// MaxSenderCertLifetime bounds how far in the future a certificate may
	// expire, so that a leaked certificate is useful only briefly.
	MaxSenderCertLifetime = 7 * 24 * time.Hour
)

// SenderCertificate is the key server's statement that an address holds an
// identity key, until Expires. It travels inside sealed-sender envelopes so
// that the recipient, and only the recipient, learns and can verify who
// sent a message (PROTOCOL.md §5.1).
//
//	SenderCertificate = version u8 (1) || signer_id [8] || account [20] || device u32
//	                    || identity_key [32] || expires u64 (Unix seconds) || signature [64]
//	signed bytes      = label("sender certificate") || all fields before the signature
type SenderCertificate struct {
	Sender   Address
	Identity IdentityKey
	Expires  time.Time
	signer   [TrustRootIDSize]byte
	raw      []byte // the full encoding as parsed or signed
}

// Bytes returns the certificate's encoding.
func (c *SenderCertificate) Bytes() []byte { return bytes.Clone(c.raw) }

// TrustRoot is the public key of a key server's sender-certificate signer.
// Clients pin it; it is printed by sottod on start.
type TrustRoot struct {
	pub [PublicKeySize]byte
}

// NewTrustRoot parses a 32-byte Ed25519 public key.
func NewTrustRoot(b []byte) (TrustRoot, error) {
	if err := checkEd25519Public(b); err != nil {
		return TrustRoot{}, fmt.Errorf("crypto: trust root: %w", err)
	}
	var r TrustRoot
	copy(r.pub[:], b)
	return r, nil
}

// Bytes returns the 32-byte encoding of the trust root.
func (r TrustRoot) Bytes() []byte { return bytes.Clone(r.pub[:]) }

// ID returns the 8-byte key ID that certificates carry:
// SHA-256(label("sender certificate") || public key)[:8].
func (r TrustRoot) ID() [TrustRootIDSize]byte {
	sum := sha256.Sum256(labelled(labelSenderCert, r.pub[:]))
	var id [TrustRootIDSize]byte
	copy(id[:], sum[:])
	return id
}

// String returns the text form "sotto-root:" followed by the unpadded
// base64url of the key, which operators publish and clients pin.
func (r TrustRoot) String() string {
	return "sotto-root:" + base64.RawURLEncoding.EncodeToString(r.pub[:])
}

// ParseTrustRoot parses the text form returned by String.
func ParseTrustRoot(s string) (TrustRoot, error) {
	rest, ok := bytes.CutPrefix([]byte(s), []byte("sotto-root:"))
	if !ok {
		return TrustRoot{}, errors.New("crypto: trust root: missing sotto-root: prefix")
	}
	b, err := base64.RawURLEncoding.DecodeString(string(rest))
	if err != nil {
		return TrustRoot{}, errors.New("crypto: trust root: bad base64")
	}
	return NewTrustRoot(b)
}

// Fingerprint returns a human-comparable digest of the trust root: the
// first 16 bytes of SHA-256 of the key, as hex in groups of four.
func (r TrustRoot) Fingerprint() string {
	sum := sha256.Sum256(r.pub[:])
	var out []byte
	for i := 0; i < 16; i += 2 {
		if i > 0 {
			out = append(out, ':')
		}
		out = fmt.Appendf(out, "%02x%02x", sum[i], sum[i+1])
	}
	return string(out)
}

// CertificateSigner signs sender certificates. It holds the key server's
// sender-certificate private key, which must be kept secret.
type CertificateSigner struct {
	_    [0]func()
	priv ed25519.PrivateKey
	root TrustRoot
}

// NewCertificateSigner builds a signer from a 32-byte Ed25519 seed.
func NewCertificateSigner(seed []byte) (*CertificateSigner, error) {
	if len(seed) != ed25519.SeedSize {
		return nil, errors.New("crypto: certificate signer: wrong seed length")
	}
	priv := ed25519.NewKeyFromSeed(seed)
	s := &CertificateSigner{priv: priv}
	copy(s.root.pub[:], priv.Public().(ed25519.PublicKey))
	return s, nil
}

// TrustRoot returns the public key clients pin.
func (s *CertificateSigner) TrustRoot() TrustRoot { return s.root }

// Issue signs a certificate stating that sender holds identity until
// expires.
func (s *CertificateSigner) Issue(sender Address, identity IdentityKey, expires time.Time) (*SenderCertificate, error) {
	if identity.IsZero() || sender.Device == 0 || expires.Unix() <= 0 {
		return nil, errors.New("crypto: sender certificate: incomplete")
	}
	c := &SenderCertificate{Sender: sender, Identity: identity, Expires: time.Unix(expires.Unix(), 0).UTC(), signer: s.root.ID()}
	body := c.marshalBody()
	c.raw = append(body, signWithLabel(s.priv, labelSenderCert, body)...)
	return c, nil
}

func (c *SenderCertificate) marshalBody() []byte {
	var b cryptobyte.Builder
	b.AddUint8(senderCertVersion)
	b.AddBytes(c.signer[:])
	b.AddBytes(c.Sender.Account[:])
	b.AddUint32(uint32(c.Sender.Device))
	b.AddBytes(c.Identity.ed[:])
	b.AddUint64(uint64(c.Expires.Unix()))
	return b.BytesOrPanic()
}

// ParseSenderCertificate parses a certificate and verifies it: signed by
// one of roots, not expired at now, and expiring no later than
// now + MaxSenderCertLifetime. It returns [ErrUntrustedCertificate] or
// [ErrCertificateExpired] (wrapped) when those checks fail. It does not
// check that the identity matches a session: callers that hold one must
// compare Identity with it.
func ParseSenderCertificate(data []byte, roots []TrustRoot, now time.Time) (*SenderCertificate, error) {
	c, _, err := verifySenderCertificate(data, roots, now)
	return c, err
}

// verifySenderCertificate is ParseSenderCertificate that also returns the
// root whose signature verified.
func verifySenderCertificate(data []byte, roots []TrustRoot, now time.Time) (*SenderCertificate, *TrustRoot, error) {
	c, sig, err := parseSenderCertificate(data)
	if err != nil {
		return nil, nil, err
	}
	var root *TrustRoot
	for i := range roots {
		if roots[i].ID() == c.signer {
			root = &roots[i]
			break
		}
	}
	if root == nil || !verifyWithLabel(root.pub[:], labelSenderCert, data[:len(data)-SignatureSize], sig) {
		return nil, nil, ErrUntrustedCertificate
	}
	if err := checkCertificateTime(c, now); err != nil {
		return nil, nil, err
	}
	return c, root, nil
}

// checkCertificateTime checks that a certificate has not expired at now
// and does not expire later than now + MaxSenderCertLifetime.
func checkCertificateTime(c *SenderCertificate, now time.Time) error {
	if !now.Before(c.Expires) {
		return ErrCertificateExpired
	}
	if c.Expires.After(now.Add(MaxSenderCertLifetime)) {
		return fmt.Errorf("crypto: sender certificate: expiry too far ahead: %w", ErrUntrustedCertificate)
	}
	return nil
}

func parseSenderCertificate(data []byte) (*SenderCertificate, []byte, error) {
	s := cryptobyte.String(data)
	var version uint8
	var signer, account, identity, sig []byte
	var device uint32
	var expires uint64
	if !s.ReadUint8(&version) || version != senderCertVersion ||
		!s.ReadBytes(&signer, TrustRootIDSize) || !s.ReadBytes(&account, AccountIDSize) ||
		!s.ReadUint32(&device) || device == 0 || !s.ReadBytes(&identity, PublicKeySize) ||
		!s.ReadUint64(&expires) || expires > 1<<62 || !s.ReadBytes(&sig, SignatureSize) || !s.Empty() {
		return nil, nil, malformed("sender certificate")
	}
	ik, err := NewIdentityKey(identity)
	if err != nil {
		return nil, nil, err
	}
	c := &SenderCertificate{Identity: ik, Expires: time.Unix(int64(expires), 0).UTC(), raw: bytes.Clone(data)}
	copy(c.signer[:], signer)
	copy(c.Sender.Account[:], account)
	c.Sender.Device = DeviceID(device)
	return c, sig, nil
}
