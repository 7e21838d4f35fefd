package crypto

import (
	"bytes"
	"crypto/ecdh"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Sealer seals and opens sealed-sender envelopes (PROTOCOL.md §5.2) and
// multi-recipient messages (§6) for one device identity, caching the two
// results that repeat between messages:
//
//   - the static-static Diffie-Hellman output DH(own identity, peer
//     identity), the same for every envelope between two devices in
//     either direction;
//   - sender certificates already verified, keyed by their exact bytes
//     (a device reuses its certificate for a day).
//
// With both caches warm, sealing costs two X25519 operations instead of
// three, opening one instead of two plus an Ed25519 verification, and a
// multi-recipient message one X25519 operation per recipient instead of
// two. The output is byte for byte that of [Seal] and [SealMulti], and
// [Open] and Sealer.Open (or [OpenMulti] and Sealer.OpenMulti) accept
// exactly the same inputs: a cached certificate is still checked against
// the roots and the time given to each call.
//
// The caches hold at most the number of entries given to [NewSealer]
// each; when one is full, an arbitrary entry is evicted. The cached
// Diffie-Hellman outputs are as secret as the identity key.
//
// Whether a peer's entries are cached changes how long a call takes:
// someone who can time this device's handling of an envelope could
// learn whether it has recently exchanged envelopes with that peer's
// device. Use [Seal] and [Open] where that matters.
//
// A Sealer is safe for concurrent use.
type Sealer struct {
	_    [0]func()
	ik   *IdentityPrivateKey
	max  int
	mu   sync.Mutex
	dh   map[[PublicKeySize]byte]*[32]byte // peer X25519 identity -> DH(ik, peer)
	cert map[string]*verifiedCert          // certificate bytes -> parsed, verified
}

// verifiedCert is a certificate whose signature verified under root. Its
// expiry is checked again on every use.
type verifiedCert struct {
	cert *SenderCertificate
	root [PublicKeySize]byte
}

// DefaultSealerCacheSize is the cache size [NewSealer] uses for a size
// of 0 or less.
const DefaultSealerCacheSize = 4096

// NewSealer returns a Sealer for the device identity ik whose two caches
// hold at most maxEntries entries each (DefaultSealerCacheSize if
// maxEntries <= 0).
func NewSealer(ik *IdentityPrivateKey, maxEntries int) (*Sealer, error) {
	if ik == nil {
		return nil, errors.New("crypto: sealer: missing identity key")
	}
	if maxEntries <= 0 {
		maxEntries = DefaultSealerCacheSize
	}
	return &Sealer{
		ik:   ik,
		max:  maxEntries,
		dh:   make(map[[PublicKeySize]byte]*[32]byte),
		cert: make(map[string]*verifiedCert),
	}, nil
}

// Seal is [Seal] with the Sealer's identity as the sender.
func (s *Sealer) Seal(cert *SenderCertificate, recipient IdentityKey, content []byte) ([]byte, error) {
	if err := checkSealArgs(s.ik, cert, recipient, content); err != nil {
		return nil, err
	}
	e, err := newKeyPair()
	if err != nil {
		return nil, fmt.Errorf("crypto: sealed sender: %w", err)
	}
	defer e.forget()
	return s.sealWith(e, cert, recipient, content)
}

// sealWith is Seal with a given ephemeral key.
func (s *Sealer) sealWith(e *keyPair, cert *SenderCertificate, recipient IdentityKey, content []byte) ([]byte, error) {
	dh2, err := s.sealDH(recipient.X25519())
	if err != nil {
		return nil, fmt.Errorf("crypto: sealed sender: recipient key: %w", err)
	}
	defer clear(dh2)
	return sealEnvelopeStatic(e, s.ik, dh2, cert, recipient, content)
}

// SealMulti is [SealMulti] with the Sealer's identity as the sender: the
// static Diffie-Hellman with each recipient comes from the cache, which
// halves the X25519 operations per recipient once warm.
func (s *Sealer) SealMulti(cert *SenderCertificate, recipients []MultiRecipient, content []byte) (body []byte, headers []RecipientHeader, err error) {
	return sealMultiWith(s.ik, s.sealDH, cert, recipients, content)
}

// sealDH is the static DH for a recipient the caller chose: cached at once.
func (s *Sealer) sealDH(peer *ecdh.PublicKey) ([]byte, error) {
	dh, hit, err := s.lookupDH(peer)
	if err != nil {
		return nil, err
	}
	if !hit {
		s.storeDH(peer, dh)
	}
	return dh, nil
}

// Open is [Open] with the Sealer's identity as the recipient. The
// returned certificate is the caller's own copy.
func (s *Sealer) Open(envelope []byte, roots []TrustRoot, now time.Time) (*SenderCertificate, []byte, error) {
	var o sealerOpen
	defer o.done()
	certBytes, content, senderX, err := openEnvelope(s.ik, envelope, o.dh(s))
	if err != nil {
		return nil, nil, err
	}
	return o.finish(s, certBytes, content, senderX, roots, now)
}

// OpenMulti is [OpenMulti] with the Sealer's identity as the recipient.
// The returned certificate is the caller's own copy.
func (s *Sealer) OpenMulti(header, body []byte, roots []TrustRoot, now time.Time) (*SenderCertificate, []byte, error) {
	var o sealerOpen
	defer o.done()
	certBytes, content, senderX, err := openMulti(s.ik, header, body, o.dh(s))
	if err != nil {
		return nil, nil, err
	}
	return o.finish(s, certBytes, content, senderX, roots, now)
}

// sealerOpen is one Open: a static Diffie-Hellman output computed on a
// cache miss is cached only once the envelope has authenticated and its
// certificate verified, so that forged envelopes (anyone can make the
// first layer name any sender key) cannot churn the cache.
type sealerOpen struct {
	peer  *ecdh.PublicKey
	fresh []byte
}

func (o *sealerOpen) dh(s *Sealer) func(*ecdh.PublicKey) ([]byte, error) {
	return func(peer *ecdh.PublicKey) ([]byte, error) {
		dh, hit, err := s.lookupDH(peer)
		if err == nil && !hit {
			o.peer, o.fresh = peer, bytes.Clone(dh)
		}
		return dh, err
	}
}

func (o *sealerOpen) finish(s *Sealer, certBytes, content, senderX []byte, roots []TrustRoot, now time.Time) (*SenderCertificate, []byte, error) {
	cert, err := s.verifiedCertificate(certBytes, senderX, roots, now)
	if err != nil {
		return nil, nil, err
	}
	if o.fresh != nil {
		s.storeDH(o.peer, o.fresh)
	}
	return cert, content, nil
}

func (o *sealerOpen) done() { clear(o.fresh) }

// lookupDH returns a copy of DH(own identity, peer), from the cache (hit)
// or computed. The caller clears the copy after use.
func (s *Sealer) lookupDH(peer *ecdh.PublicKey) (dh []byte, hit bool, err error) {
	if peer == nil {
		return nil, false, ErrInvalidKey
	}
	key := [PublicKeySize]byte(peer.Bytes())
	s.mu.Lock()
	if cached, ok := s.dh[key]; ok {
		dh = bytes.Clone(cached[:])
	}
	s.mu.Unlock()
	if dh != nil {
		return dh, true, nil
	}
	dh, err = s.ik.dh(peer)
	return dh, false, err
}

// storeDH caches DH(own identity, peer) = dh (copied).
func (s *Sealer) storeDH(peer *ecdh.PublicKey, dh []byte) {
	key := [PublicKeySize]byte(peer.Bytes())
	entry := new([32]byte)
	copy(entry[:], dh)
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.dh[key]; ok {
		clear(old[:])
	} else if len(s.dh) >= s.max {
		for k, v := range s.dh { // an arbitrary entry
			clear(v[:])
			delete(s.dh, k)
			break
		}
	}
	s.dh[key] = entry
}

// verifiedCertificate verifies certBytes as [ParseSenderCertificate] does
// (signature by one of roots, expiry against now) and that the
// certificate names senderX. The signature check is skipped for bytes
// whose signature already verified under a root that is still in roots;
// the time checks and the sender check run every time. It returns a copy
// the caller owns.
func (s *Sealer) verifiedCertificate(certBytes, senderX []byte, roots []TrustRoot, now time.Time) (*SenderCertificate, error) {
	s.mu.Lock()
	v, ok := s.cert[string(certBytes)]
	s.mu.Unlock()
	if !ok || !hasRoot(roots, v.root) {
		cert, root, err := verifySenderCertificate(certBytes, roots, now)
		if err != nil {
			return nil, fmt.Errorf("crypto: sealed sender: %w", err)
		}
		if err := checkSealedSender(cert, senderX); err != nil {
			return nil, err
		}
		v = &verifiedCert{cert: cert, root: root.pub}
		s.mu.Lock()
		if _, ok := s.cert[string(certBytes)]; !ok && len(s.cert) >= s.max {
			for k := range s.cert { // an arbitrary entry
				delete(s.cert, k)
				break
			}
		}
		s.cert[string(certBytes)] = v
		s.mu.Unlock()
	} else {
		if err := checkCertificateTime(v.cert, now); err != nil {
			return nil, fmt.Errorf("crypto: sealed sender: %w", err)
		}
		if err := checkSealedSender(v.cert, senderX); err != nil {
			return nil, err
		}
	}
	c := *v.cert
	return &c, nil
}

func hasRoot(roots []TrustRoot, pub [PublicKeySize]byte) bool {
	for i := range roots {
		if roots[i].pub == pub {
			return true
		}
	}
	return false
}
