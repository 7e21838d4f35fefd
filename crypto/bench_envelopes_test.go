package crypto

import (
	"bytes"
	"io"
	"testing"
)

// Benchmarks of the envelope layer (names in the project's benchmark list).

func BenchmarkSealedSender(b *testing.B) {
	f := newEnvFixture(b)
	alice, bob := f.party(b, 1), f.party(b, 2)
	content := bytes.Repeat([]byte{1}, 256)
	b.Run("seal+open/256B", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(content)))
		for b.Loop() {
			env, err := Seal(alice.key, alice.cert, bob.key.Public(), content)
			if err != nil {
				b.Fatal(err)
			}
			if _, _, err := Open(bob.key, env, f.roots, envNow); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkGroup(b *testing.B) {
	pt := bytes.Repeat([]byte{2}, 1024)
	b.Run("encrypt/1KiB", func(b *testing.B) {
		sk, _ := newGroupPair(b)
		b.ReportAllocs()
		b.SetBytes(int64(len(pt)))
		for b.Loop() {
			if _, err := sk.Encrypt(pt); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decrypt/1KiB", func(b *testing.B) {
		sk, r := newGroupPair(b)
		msgs := make([][]byte, b.N)
		for i := range msgs {
			msgs[i] = mustGroupEncrypt(b, sk, string(pt))
		}
		b.ReportAllocs()
		b.SetBytes(int64(len(pt)))
		b.ResetTimer()
		for i := range b.N {
			if _, err := r.Decrypt(msgs[i]); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkWireOverheadEnvelopes reports the bytes a sealed envelope and a
// group message add to a 64-byte plaintext ("sealed-B" includes the sender
// certificate; "group-B" is the sender-key message alone; neither counts
// padding, which the caller applies, PROTOCOL.md §8).
func BenchmarkWireOverheadEnvelopes(b *testing.B) {
	f := newEnvFixture(b)
	alice, bob := f.party(b, 1), f.party(b, 2)
	sk, _ := newGroupPair(b)
	pt := make([]byte, 64)
	var sealed, group int
	for b.Loop() {
		env, err := Seal(alice.key, alice.cert, bob.key.Public(), pt)
		if err != nil {
			b.Fatal(err)
		}
		msg, err := sk.Encrypt(pt)
		if err != nil {
			b.Fatal(err)
		}
		sealed, group = len(env)-len(pt), len(msg)-len(pt)
	}
	b.ReportAllocs()
	b.ReportMetric(float64(sealed), "sealed-B")
	b.ReportMetric(float64(group), "group-B")
}

// BenchmarkAttachment measures encryption then decryption of one attachment,
// streaming through a reused buffer; MB/s counts the plaintext once.
func BenchmarkAttachment(b *testing.B) {
	pt := bytes.Repeat([]byte{3}, 1<<20)
	b.Run("1MiB", func(b *testing.B) {
		var ct bytes.Buffer
		ct.Grow(len(pt) + 1<<10)
		b.ReportAllocs()
		b.SetBytes(int64(len(pt)))
		for b.Loop() {
			ct.Reset()
			key, digest, _, err := EncryptAttachment(&ct, bytes.NewReader(pt))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := DecryptAttachment(io.Discard, bytes.NewReader(ct.Bytes()), key, digest); err != nil {
				b.Fatal(err)
			}
		}
	})
}
