package crypto

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"testing"
)

// Benchmarks of PQXDH and the Double Ratchet, named as in the project's
// benchmark list (DESIGN.md "Performance targets"):
//
//	go test -run '^$' -bench 'PQXDH|Ratchet|WireOverhead' -count 5 ./crypto

// BenchmarkPQXDH measures session setup with a bundle holding a one-time
// prekey and a one-time KEM prekey: initiator = InitiateSession (bundle
// signatures verified) plus the first prekey message of 64 bytes;
// responder = AcceptSession of that message (PQXDH and its decryption);
// both = the two in sequence.
func BenchmarkPQXDH(b *testing.B) {
	a, bd := newTestDevice(b, 1), newTestDevice(b, 2)
	bundle := bd.bundle(true, true)
	pt := bytes.Repeat([]byte{'x'}, 64)
	initiate := func() []byte {
		s, err := InitiateSession(a.ik, a.addr, bundle)
		if err != nil {
			b.Fatal(err)
		}
		m, err := s.Encrypt(pt)
		if err != nil {
			b.Fatal(err)
		}
		return m
	}
	accept := func(m []byte) {
		// The one-time keys stay in the store, so one message can be
		// accepted repeatedly: the cost is the same.
		if _, _, _, err := AcceptSession(bd.ik, bd.addr, bd, m); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("initiator", func(b *testing.B) {
		b.ReportAllocs()
		defer cpuMeter(b)()
		for b.Loop() {
			initiate()
		}
	})
	b.Run("responder", func(b *testing.B) {
		m := initiate()
		b.ReportAllocs()
		defer cpuMeter(b)()
		for b.Loop() {
			accept(m)
		}
	})
	b.Run("both", func(b *testing.B) {
		b.ReportAllocs()
		defer cpuMeter(b)()
		for b.Loop() {
			accept(initiate())
		}
	})

	// The client's path from the key server's bytes: ParsePreKeyBundle,
	// VerifyAgainst the peer's device list, InitiateSession, the first
	// message; "both-from-wire" adds AcceptSession.
	ak := GenerateAccountKey()
	wd := newTestDevice(b, 2)
	wd.addr.Account = ak.ID()
	list := &DeviceList{AccountKey: ak.Public(), Version: 1, Devices: []Device{{ID: wd.addr.Device, Identity: wd.ik.Public()}}}
	wire, err := wd.bundle(true, true).MarshalBinary()
	if err != nil {
		b.Fatal(err)
	}
	initiateFromWire := func() []byte {
		bundle, err := ParsePreKeyBundle(wire)
		if err != nil {
			b.Fatal(err)
		}
		if err := bundle.VerifyAgainst(list); err != nil {
			b.Fatal(err)
		}
		s, err := InitiateSession(a.ik, a.addr, bundle)
		if err != nil {
			b.Fatal(err)
		}
		m, err := s.Encrypt(pt)
		if err != nil {
			b.Fatal(err)
		}
		return m
	}
	b.Run("initiator-from-wire", func(b *testing.B) {
		b.ReportAllocs()
		defer cpuMeter(b)()
		for b.Loop() {
			initiateFromWire()
		}
	})
	b.Run("both-from-wire", func(b *testing.B) {
		b.ReportAllocs()
		defer cpuMeter(b)()
		for b.Loop() {
			if _, _, _, err := AcceptSession(wd.ik, wd.addr, wd, initiateFromWire()); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// benchSessions returns Alice and Bob after a full round trip, so that
// both are in the steady state (ratchet messages, no prekey fields).
func benchSessions(b *testing.B) (alice, bob *Session) {
	alice, bob, _, _ = newTestSessions(b)
	sessDecrypt(b, alice, sessEncrypt(b, bob, "r"), "r")
	sessDecrypt(b, bob, sessEncrypt(b, alice, "a"), "a")
	return alice, bob
}

func BenchmarkRatchet(b *testing.B) {
	sizes := []struct {
		name string
		n    int
	}{{"64B", 64}, {"1KiB", 1024}}
	for _, size := range sizes {
		pt := bytes.Repeat([]byte{'x'}, size.n)
		b.Run("encrypt/"+size.name+"/memory", func(b *testing.B) {
			alice, _ := benchSessions(b)
			b.SetBytes(int64(size.n))
			b.ReportAllocs()
			defer cpuMeter(b)()
			for b.Loop() {
				if _, err := alice.Encrypt(pt); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("encrypt/"+size.name+"/serialized", func(b *testing.B) {
			alice, _ := benchSessions(b)
			b.SetBytes(int64(size.n))
			b.ReportAllocs()
			defer cpuMeter(b)()
			for b.Loop() {
				if _, err := alice.Encrypt(pt); err != nil {
					b.Fatal(err)
				}
				if _, err := alice.MarshalBinary(); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("decrypt/"+size.name+"/memory", func(b *testing.B) {
			alice, bob := benchSessions(b)
			msgs := make([][]byte, b.N)
			for i := range msgs {
				msgs[i], _ = alice.Encrypt(pt)
			}
			b.SetBytes(int64(size.n))
			b.ReportAllocs()
			b.ResetTimer()
			defer cpuMeter(b)()
			for i := range b.N {
				if _, err := bob.Decrypt(msgs[i]); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("decrypt/"+size.name+"/serialized", func(b *testing.B) {
			alice, bob := benchSessions(b)
			msgs := make([][]byte, b.N)
			for i := range msgs {
				msgs[i], _ = alice.Encrypt(pt)
			}
			state := sessMarshal(b, bob)
			b.SetBytes(int64(size.n))
			b.ReportAllocs()
			b.ResetTimer()
			defer cpuMeter(b)()
			for i := range b.N {
				s, err := ParseSession(state)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := s.Decrypt(msgs[i]); err != nil {
					b.Fatal(err)
				}
				if state, err = s.MarshalBinary(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("pingpong", func(b *testing.B) {
		alice, bob := benchSessions(b)
		pt := bytes.Repeat([]byte{'x'}, 64)
		b.ReportAllocs()
		defer cpuMeter(b)()
		for b.Loop() {
			m, _ := alice.Encrypt(pt)
			if _, err := bob.Decrypt(m); err != nil {
				b.Fatal(err)
			}
			m, _ = bob.Encrypt(pt)
			if _, err := alice.Decrypt(m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("out-of-order", func(b *testing.B) {
		// Messages of one chain delivered in reverse order, in batches of
		// 64: the first decrypt of a batch skips 63 keys, the others use
		// stored skipped keys. Reported per message.
		const batch = 64
		alice, bob := benchSessions(b)
		pt := bytes.Repeat([]byte{'x'}, 64)
		msgs := make([][]byte, batch)
		b.ReportAllocs()
		b.ResetTimer()
		for done := 0; done < b.N; {
			b.StopTimer()
			for i := range msgs {
				msgs[i], _ = alice.Encrypt(pt)
			}
			b.StartTimer()
			for i := batch - 1; i >= 0 && done < b.N; i-- {
				if _, err := bob.Decrypt(msgs[i]); err != nil {
					b.Fatal(err)
				}
				done++
			}
		}
	})
}

// BenchmarkWireOverhead reports the bytes a message adds to a 64-byte
// plaintext: steady-B for a ratchet message, prekey-B for a prekey
// message (PROTOCOL.md §3.4, §4.3). The sealed-sender and group figures
// are reported by BenchmarkWireOverheadEnvelopes.
func BenchmarkWireOverhead(b *testing.B) {
	a, bd := newTestDevice(b, 1), newTestDevice(b, 2)
	alice, err := InitiateSession(a.ik, a.addr, bd.bundle(true, true))
	if err != nil {
		b.Fatal(err)
	}
	pt := bytes.Repeat([]byte{'x'}, 64)
	pre, _ := alice.Encrypt(pt)
	bob, _, _, err := AcceptSession(bd.ik, bd.addr, bd, pre)
	if err != nil {
		b.Fatal(err)
	}
	reply, _ := bob.Encrypt(pt)
	if _, err := alice.Decrypt(reply); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	var steady []byte
	for b.Loop() {
		steady, _ = alice.Encrypt(pt)
	}
	b.ReportMetric(float64(len(steady)-len(pt)), "steady-B")
	b.ReportMetric(float64(len(pre)-len(pt)), "prekey-B")
}

// BenchmarkRatchetFloor measures, in the same sitting as BenchmarkRatchet,
// the standard-library calls one steady-state ratchet message cannot
// avoid under PROTOCOL.md §4.1, written as plainly as possible: the chain
// KDF (two HMAC-SHA256 under the chain key), AES-256-GCM set-up under the
// message key and seal of 64 bytes. "both-floor"
// adds the open of the same message. BenchmarkRatchet's encrypt and
// decrypt should be compared with these, not with figures from another
// sitting.
func BenchmarkRatchetFloor(b *testing.B) {
	ck := bytes.Repeat([]byte{1}, 32)
	pt := bytes.Repeat([]byte{'x'}, 64)
	ad := make([]byte, 2*PublicKeySize+2*addressSize+1+headerSize)
	msgKey := func() []byte {
		h := hmac.New(sha256.New, ck)
		h.Write([]byte{1})
		mk := h.Sum(nil)
		h = hmac.New(sha256.New, ck)
		h.Write([]byte{2})
		h.Sum(nil)
		return mk
	}
	aead := func(mk []byte) (cipher.AEAD, []byte) {
		block, err := aes.NewCipher(mk)
		if err != nil {
			b.Fatal(err)
		}
		g, err := cipher.NewGCM(block)
		if err != nil {
			b.Fatal(err)
		}
		return g, make([]byte, 12)
	}
	b.Run("encrypt-floor/64B", func(b *testing.B) {
		b.ReportAllocs()
		defer cpuMeter(b)()
		for b.Loop() {
			g, nonce := aead(msgKey())
			g.Seal(nil, nonce, pt, ad)
		}
	})
	g, nonce := aead(msgKey())
	ct := g.Seal(nil, nonce, pt, ad)
	b.Run("decrypt-floor/64B", func(b *testing.B) {
		b.ReportAllocs()
		defer cpuMeter(b)()
		for b.Loop() {
			g, nonce := aead(msgKey())
			if _, err := g.Open(nil, nonce, ct, ad); err != nil {
				b.Fatal(err)
			}
		}
	})
}
