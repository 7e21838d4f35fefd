package crypto

import "golang.org/x/crypto/cryptobyte"

// Encoding conventions (PROTOCOL.md §1.2): integers are big-endian;
// variable-length fields carry a 1-, 2- or 4-byte length prefix named in
// the layout (opaque<0..2^8-1>, opaque<0..2^16-1>, opaque<0..2^32-1>);
// every top-level structure starts with a version byte; decoders reject
// trailing bytes, so that parse then marshal reproduces the input exactly.

// readUint16Bytes reads a 2-byte length and that many bytes.
func readUint16Bytes(s *cryptobyte.String, out *[]byte) bool {
	var v cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&v) {
		return false
	}
	*out = v
	return true
}
