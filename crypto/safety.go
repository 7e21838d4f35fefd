package crypto

import (
	"crypto/sha512"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"strings"
)

// Safety numbers (PROTOCOL.md §2.4).
//
// A safety number lets two people check, by reading digits aloud or by
// scanning a QR code, that each holds the other's real account key: if the
// key server substituted a key, the numbers differ. Each account
// contributes a 30-digit half computed from its own account key alone, so
// a person's half is the same in all their conversations; the two halves
// are shown lower first, so both people see the same 60 digits.
//
// Each half comes from SafetyNumberIterations rounds of SHA-512, which
// makes the search for a second key whose half matches a given one cost
// 2^100 × 5200 hashes (100 bits: 30 decimal digits) instead of 2^100.

// Specification constants of safety numbers (PROTOCOL.md §2.4).
const (
	safetyNumberVersion = 1
	// SafetyNumberIterations is the number of SHA-512 rounds per half.
	SafetyNumberIterations = 5200
	// SafetyNumberDigits is the length of a safety number in digits.
	SafetyNumberDigits = 60
	// SafetyQRPayloadSize is the size of the QR code payload.
	SafetyQRPayloadSize   = 1 + 2*safetyFingerprintSize
	safetyFingerprintSize = 32
)

// SafetyNumber is the fingerprint of a pair of accounts as seen from one
// side ("local"). It holds only public values.
type SafetyNumber struct {
	local, remote [safetyFingerprintSize]byte
}

// NewSafetyNumber computes the safety number of the conversation between
// the local account and the remote one (PROTOCOL.md §2.4). It takes about
// 2 × 5200 SHA-512 computations.
func NewSafetyNumber(local, remote AccountKey) *SafetyNumber {
	return &SafetyNumber{local: safetyFingerprint(local), remote: safetyFingerprint(remote)}
}

// safetyFingerprint implements PROTOCOL.md §2.4:
//
//	h[0] = SHA-512("sotto/v1 safety number" || version u16 (1) || account key || account ID)
//	h[i] = SHA-512(h[i-1] || account key), for i = 1 .. 5199
//	fingerprint = h[5199][:32]
func safetyFingerprint(k AccountKey) [safetyFingerprintSize]byte {
	id := k.ID()
	in := make([]byte, 0, len(labelSafetyNumber)+2+PublicKeySize+AccountIDSize)
	in = append(in, labelSafetyNumber...)
	in = binary.BigEndian.AppendUint16(in, safetyNumberVersion)
	in = append(in, k.pub[:]...)
	in = append(in, id[:]...)
	h := sha512.Sum512(in)
	buf := make([]byte, sha512.Size+PublicKeySize)
	copy(buf[sha512.Size:], k.pub[:])
	for range SafetyNumberIterations - 1 {
		copy(buf, h[:])
		h = sha512.Sum512(buf)
	}
	var fp [safetyFingerprintSize]byte
	copy(fp[:], h[:])
	return fp
}

// safetyDigits renders the first 30 bytes of a fingerprint as 30 digits:
// six 5-byte big-endian integers, each reduced mod 100000 and written as 5
// digits.
func safetyDigits(fp *[safetyFingerprintSize]byte) string {
	var sb strings.Builder
	for i := 0; i < 30; i += 5 {
		var v uint64
		for _, b := range fp[i : i+5] {
			v = v<<8 | uint64(b)
		}
		fmt.Fprintf(&sb, "%05d", v%100000)
	}
	return sb.String()
}

// Digits returns the 60 digits: the two halves, numerically lower first.
func (s *SafetyNumber) Digits() string {
	a, b := safetyDigits(&s.local), safetyDigits(&s.remote)
	if b < a {
		a, b = b, a
	}
	return a + b
}

// String returns the digits in twelve groups of five, separated by spaces,
// for display.
func (s *SafetyNumber) String() string {
	d := s.Digits()
	groups := make([]string, 0, SafetyNumberDigits/5)
	for i := 0; i < len(d); i += 5 {
		groups = append(groups, d[i:i+5])
	}
	return strings.Join(groups, " ")
}

// QRPayload returns the bytes this side shows as a QR code:
//
//	version u8 (1) || local fingerprint [32] || remote fingerprint [32]
func (s *SafetyNumber) QRPayload() []byte {
	b := make([]byte, 0, SafetyQRPayloadSize)
	b = append(b, safetyNumberVersion)
	b = append(b, s.local[:]...)
	return append(b, s.remote[:]...)
}

// VerifyScanned checks a QR payload scanned from the other person's
// device: it must show their fingerprint first and ours second. It returns
// [ErrMalformed] (wrapped) for a payload of the wrong size or version and
// [ErrSafetyNumberMismatch] if the fingerprints differ from the keys this
// side holds.
func (s *SafetyNumber) VerifyScanned(payload []byte) error {
	if len(payload) != SafetyQRPayloadSize || payload[0] != safetyNumberVersion {
		return malformed("safety number QR payload")
	}
	want := make([]byte, 0, SafetyQRPayloadSize)
	want = append(want, safetyNumberVersion)
	want = append(want, s.remote[:]...)
	want = append(want, s.local[:]...)
	if subtle.ConstantTimeCompare(want, payload) != 1 {
		return ErrSafetyNumberMismatch
	}
	return nil
}
