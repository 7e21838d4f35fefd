package crypto

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"testing"

	"filippo.io/age"
)

// Benchmarks of the envelope layer (names in the project's benchmark list).

func BenchmarkSealedSender(b *testing.B) {
	f := newEnvFixture(b)
	alice, bob := f.party(b, 1), f.party(b, 2)
	content := bytes.Repeat([]byte{1}, 256)
	b.Run("seal+open/256B", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(content)))
		defer cpuMeter(b)()
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
	// The same with a Sealer on each side, caches warm: the steady state
	// of two devices that exchange messages.
	b.Run("seal+open/256B/sealer", func(b *testing.B) {
		as, err := NewSealer(alice.key, 0)
		if err != nil {
			b.Fatal(err)
		}
		bs, err := NewSealer(bob.key, 0)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.SetBytes(int64(len(content)))
		defer cpuMeter(b)()
		for b.Loop() {
			env, err := as.Seal(alice.cert, bob.key.Public(), content)
			if err != nil {
				b.Fatal(err)
			}
			if _, _, err := bs.Open(env, f.roots, envNow); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSealMulti measures a multi-recipient message to 100 devices
// (1 KiB content), with SealMulti and with a warm Sealer, per message.
func BenchmarkSealMulti(b *testing.B) {
	f := newEnvFixture(b)
	alice := f.party(b, 1)
	var rs []MultiRecipient
	for i := range 100 {
		p := f.party(b, DeviceID(2+i))
		rs = append(rs, MultiRecipient{Address: p.addr, Identity: p.key.Public()})
	}
	content := bytes.Repeat([]byte{4}, 1024)
	b.Run("100-recipients/1KiB", func(b *testing.B) {
		b.ReportAllocs()
		defer cpuMeter(b)()
		for b.Loop() {
			if _, _, err := SealMulti(alice.key, alice.cert, rs, content); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("100-recipients/1KiB/sealer", func(b *testing.B) {
		as, err := NewSealer(alice.key, 0)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		defer cpuMeter(b)()
		for b.Loop() {
			if _, _, err := as.SealMulti(alice.cert, rs, content); err != nil {
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
		defer cpuMeter(b)()
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
		defer cpuMeter(b)()
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
		defer cpuMeter(b)()
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

// BenchmarkEnvelopeFloor measures, in the same sitting, the primitives that
// bound the envelope benchmarks above: sealed sender costs three X25519
// operations to seal and two plus an Ed25519 verification to open; a group
// message one Ed25519 signature or verification; an attachment age's
// encryption and decryption plus two SHA-256 passes over the ciphertext.
func BenchmarkEnvelopeFloor(b *testing.B) {
	b.Run("x25519-keygen", func(b *testing.B) {
		b.ReportAllocs()
		defer cpuMeter(b)()
		for b.Loop() {
			if _, err := ecdh.X25519().GenerateKey(rand.Reader); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("x25519-dh", func(b *testing.B) {
		k, _ := ecdh.X25519().GenerateKey(rand.Reader)
		p := k.PublicKey()
		b.ReportAllocs()
		defer cpuMeter(b)()
		for b.Loop() {
			if _, err := k.ECDH(p); err != nil {
				b.Fatal(err)
			}
		}
	})
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	msg := make([]byte, 1024)
	sig := ed25519.Sign(priv, msg)
	b.Run("ed25519-sign/1KiB", func(b *testing.B) {
		b.ReportAllocs()
		defer cpuMeter(b)()
		for b.Loop() {
			ed25519.Sign(priv, msg)
		}
	})
	b.Run("ed25519-verify/1KiB", func(b *testing.B) {
		b.ReportAllocs()
		defer cpuMeter(b)()
		for b.Loop() {
			if !ed25519.Verify(pub, msg, sig) {
				b.Fatal("bad signature")
			}
		}
	})
	big := make([]byte, 1<<20)
	b.Run("sha256/1MiB", func(b *testing.B) {
		b.SetBytes(int64(len(big)))
		defer cpuMeter(b)()
		for b.Loop() {
			sha256.Sum256(big)
		}
	})
	b.Run("age-no-digest/1MiB", func(b *testing.B) {
		var ct bytes.Buffer
		b.SetBytes(int64(len(big)))
		b.ReportAllocs()
		defer cpuMeter(b)()
		for b.Loop() {
			ct.Reset()
			id, _ := age.GenerateX25519Identity()
			w, err := age.Encrypt(&ct, id.Recipient())
			if err != nil {
				b.Fatal(err)
			}
			w.Write(big)
			w.Close()
			r, err := age.Decrypt(&ct, id)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, r); err != nil {
				b.Fatal(err)
			}
		}
	})
}
