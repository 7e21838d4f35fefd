package crypto

import (
	"bytes"
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
			if _, _, err := Open(bob.key, env, f.roots, testNow); err != nil {
				b.Fatal(err)
			}
		}
	})
}
