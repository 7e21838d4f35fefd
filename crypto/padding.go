package crypto

import "errors"

// Padding (PROTOCOL.md §8).
//
// A plaintext is padded before it is handed to the Double Ratchet or the
// sender-key cipher, so that a ciphertext's length reveals only which size
// bucket the message falls in. The scheme is ISO/IEC 7816-4: one 0x80 byte,
// then zero bytes up to the bucket size. It is unambiguous (the last
// non-zero byte is the marker) and, because the bucket is a function of the
// plaintext length, canonical: Unpad accepts exactly the outputs of Pad.
//
// Buckets: powers of two from 64 B to 16 KiB, then multiples of 16 KiB.
// Chat messages are small, so the few power-of-two buckets separate "short"
// from "long" while leaking at most log2 of the size; above 16 KiB the
// overhead is bounded by 16 KiB per message rather than doubling. For the
// typical message (< 64 B) every ciphertext has the same length.

// Specification constants of the padding scheme (PROTOCOL.md §8).
const (
	// PadMinBucket is the smallest padded size.
	PadMinBucket = 64
	// PadLinearStep is the size from which buckets grow linearly, by this
	// step, instead of doubling.
	PadLinearStep = 16 << 10
	// padMarker ends the plaintext inside the padded buffer.
	padMarker = 0x80
)

// ErrBadPadding reports a padded buffer that Pad cannot have produced. It
// only occurs after a successful decryption, so it reveals nothing to an
// attacker who cannot forge ciphertexts; it still wraps [ErrMalformed].
var ErrBadPadding = errors.Join(errors.New("crypto: bad padding"), ErrMalformed)

// PaddedSize returns the bucket size for a plaintext of n bytes: the
// length of Pad's output.
func PaddedSize(n int) int {
	need := n + 1 // room for the marker
	if need <= PadLinearStep {
		size := PadMinBucket
		for size < need {
			size <<= 1
		}
		return size
	}
	return (need + PadLinearStep - 1) / PadLinearStep * PadLinearStep
}

// Pad returns plaintext followed by 0x80 and zero bytes up to
// PaddedSize(len(plaintext)). It implements PROTOCOL.md §8. The result is a
// new slice; plaintext is not modified.
func Pad(plaintext []byte) []byte {
	out := make([]byte, PaddedSize(len(plaintext)))
	copy(out, plaintext)
	out[len(plaintext)] = padMarker
	return out
}

// Unpad returns the plaintext inside a buffer produced by Pad, as a
// subslice of padded. It returns [ErrBadPadding] unless padded is exactly
// Pad's output for that plaintext: a bucket size, a 0x80 marker, only zeros
// after it, and no smaller bucket that would have fitted. It implements
// PROTOCOL.md §8.
func Unpad(padded []byte) ([]byte, error) {
	// Find the last non-zero byte without branching on each byte's value,
	// so the time taken depends only on the buffer length.
	last := -1
	for i, b := range padded {
		// nz is 1 if b != 0, else 0.
		nz := int((uint32(b) | -uint32(b)) >> 31)
		last = last + nz*(i-last)
	}
	if last < 0 || padded[last] != padMarker || PaddedSize(last) != len(padded) {
		return nil, ErrBadPadding
	}
	return padded[:last], nil
}
