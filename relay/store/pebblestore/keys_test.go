package pebblestore

import (
	"bytes"
	"testing"
)

// FuzzDecodeRecords feeds arbitrary bytes to the decoders of stored records:
// a corrupt disk must give an error, never a panic, and what decodes must
// encode back to the same bytes.
func FuzzDecodeRecords(f *testing.F) {
	f.Add((&entry{id: [16]byte{1}, stored: 2, expires: 3, bodyID: 4, bodyLen: 5, header: []byte("hdr")}).encode())
	f.Add((&entry{id: [16]byte{1}, bodyLen: 4, header: []byte("h"), inline: []byte("body")}).encode())
	f.Add(counters{messages: 1, bytes: 2, lastSeq: 3}.encode())
	f.Add(idem{cursor: makeCursor(7, 9), etime: 11}.encode())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if e, err := decodeEntry(bytes.Clone(b)); err == nil {
			if got := e.encode(); !bytes.Equal(got, b) {
				t.Fatalf("entry re-encodes to %x, was %x", got, b)
			}
			if e.bodyID == 0 && len(e.inline) != int(e.bodyLen) {
				t.Fatal("inline body length disagrees")
			}
		}
		if c, err := decodeCounters(b); err == nil && !bytes.Equal(c.encode(), b) {
			t.Fatal("counters do not round-trip")
		}
		if v, err := decodeIdem(b); err == nil && !bytes.Equal(v.encode(), b) {
			t.Fatal("idempotency record does not round-trip")
		}
	})
}
