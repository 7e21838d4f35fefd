package libsignalgo

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"testing"

	"go.mau.fi/libsignal/keys/prekey"
	"go.mau.fi/libsignal/protocol"
	"go.mau.fi/libsignal/session"
)

// established returns two parties with a session in both directions: Alice processed Bob's
// bundle, sent a prekey message, Bob decrypted it and replied, Alice decrypted the reply.
func established(tb testing.TB, serializing bool) (*Party, *Party) {
	tb.Helper()
	ctx := context.Background()
	alice, err := NewParty("alice", serializing)
	if err != nil {
		tb.Fatal(err)
	}
	bob, err := NewParty("bob", serializing)
	if err != nil {
		tb.Fatal(err)
	}
	bundle, err := bob.Bundle()
	if err != nil {
		tb.Fatal(err)
	}
	if err := alice.ProcessBundle(ctx, bob.Addr, bundle); err != nil {
		tb.Fatal(err)
	}
	ab, ba := alice.Cipher(bob.Addr), bob.Cipher(alice.Addr)
	msg := []byte("hello bob")
	w, typ, err := Encrypt(ctx, ab, msg)
	if err != nil {
		tb.Fatal(err)
	}
	if typ != protocol.PREKEY_TYPE {
		tb.Fatalf("first message type %d, want prekey", typ)
	}
	pt, err := Decrypt(ctx, ba, w, typ)
	if err != nil || !bytes.Equal(pt, msg) {
		tb.Fatalf("first decrypt: %q %v", pt, err)
	}
	w, typ, err = Encrypt(ctx, ba, msg)
	if err != nil {
		tb.Fatal(err)
	}
	pt, err = Decrypt(ctx, ab, w, typ)
	if err != nil || !bytes.Equal(pt, msg) {
		tb.Fatalf("reply decrypt: %q %v", pt, err)
	}
	return alice, bob
}

func stores() []struct {
	name        string
	serializing bool
} {
	return []struct {
		name        string
		serializing bool
	}{{"memory", false}, {"serialized", true}}
}

// TestRoundTrip checks that the helpers really run the protocol, with both stores, including a
// few direction changes and a tampered message.
func TestRoundTrip(t *testing.T) {
	ctx := context.Background()
	for _, st := range stores() {
		t.Run(st.name, func(t *testing.T) {
			alice, bob := established(t, st.serializing)
			ab, ba := alice.Cipher(bob.Addr), bob.Cipher(alice.Addr)
			for i := range 6 {
				msg := fmt.Appendf(nil, "message %d", i)
				from, to := ab, ba
				if i%2 == 1 {
					from, to = ba, ab
				}
				w, typ, err := Encrypt(ctx, from, msg)
				if err != nil {
					t.Fatal(err)
				}
				pt, err := Decrypt(ctx, to, w, typ)
				if err != nil || !bytes.Equal(pt, msg) {
					t.Fatalf("round %d: %q %v", i, pt, err)
				}
			}
			w, typ, err := Encrypt(ctx, ab, []byte("x"))
			if err != nil {
				t.Fatal(err)
			}
			w[len(w)-1] ^= 1
			if _, err := Decrypt(ctx, ba, w, typ); err == nil {
				t.Fatal("tampered message decrypted")
			}
		})
	}
}

// BenchmarkSessionSetup measures X3DH session setup, both sides: Alice processes Bob's bundle
// and encrypts a 64 B first message, Bob parses and decrypts it. As in the libsignal reference,
// a fresh Alice (identity, stores) and fresh Bob prekeys are made per handshake outside the timer.
func BenchmarkSessionSetup(b *testing.B) {
	ctx := context.Background()
	msg := make([]byte, 64)
	rand.Read(msg)
	for _, st := range stores() {
		b.Run("both/"+st.name, func(b *testing.B) {
			bob, err := NewParty("bob", st.serializing)
			if err != nil {
				b.Fatal(err)
			}
			const pool = 64
			alices := make([]*Party, pool)
			bundles := make([]*prekey.Bundle, pool)
			n := 0
			b.ResetTimer()
			for n < b.N {
				b.StopTimer()
				k := min(pool, b.N-n)
				bob.ForgetSessions()
				for i := range k {
					a, err := NewParty(fmt.Sprintf("alice-%d", n+i), st.serializing)
					if err != nil {
						b.Fatal(err)
					}
					alices[i] = a
					bu, err := bob.Bundle()
					if err != nil {
						b.Fatal(err)
					}
					bundles[i] = bu
				}
				b.StartTimer()
				for i := range k {
					a := alices[i]
					if err := a.ProcessBundle(ctx, bob.Addr, bundles[i]); err != nil {
						b.Fatal(err)
					}
					w, typ, err := Encrypt(ctx, a.Cipher(bob.Addr), msg)
					if err != nil {
						b.Fatal(err)
					}
					pt, err := Decrypt(ctx, bob.Cipher(a.Addr), w, typ)
					if err != nil || len(pt) != len(msg) {
						b.Fatalf("decrypt: %v", err)
					}
				}
				n += k
			}
		})
	}
}

// BenchmarkRatchet mirrors Sotto's BenchmarkRatchet names: steady-state encrypt and decrypt on
// an established session (wire bytes produced / parsed inside the timer), and ping-pong round
// trips where every message changes direction (a DH ratchet step each way).
func BenchmarkRatchet(b *testing.B) {
	ctx := context.Background()
	sizes := []struct {
		name string
		n    int
	}{{"64B", 64}, {"1KiB", 1024}}
	for _, sz := range sizes {
		for _, st := range stores() {
			b.Run("encrypt/"+sz.name+"/"+st.name, func(b *testing.B) {
				alice, bob := established(b, st.serializing)
				c := alice.Cipher(bob.Addr)
				msg := make([]byte, sz.n)
				rand.Read(msg)
				b.SetBytes(int64(sz.n))
				b.ResetTimer()
				for range b.N {
					if _, _, err := Encrypt(ctx, c, msg); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
	for _, sz := range sizes {
		for _, st := range stores() {
			b.Run("decrypt/"+sz.name+"/"+st.name, func(b *testing.B) {
				alice, bob := established(b, st.serializing)
				enc, dec := alice.Cipher(bob.Addr), bob.Cipher(alice.Addr)
				msg := make([]byte, sz.n)
				rand.Read(msg)
				const batch = 1000
				wires := make([][]byte, batch)
				b.SetBytes(int64(sz.n))
				b.ResetTimer()
				for n := 0; n < b.N; {
					k := min(batch, b.N-n)
					b.StopTimer()
					for i := range k {
						w, _, err := Encrypt(ctx, enc, msg)
						if err != nil {
							b.Fatal(err)
						}
						wires[i] = w
					}
					b.StartTimer()
					for i := range k {
						pt, err := Decrypt(ctx, dec, wires[i], protocol.WHISPER_TYPE)
						if err != nil || len(pt) != sz.n {
							b.Fatalf("decrypt: %v", err)
						}
					}
					n += k
				}
			})
		}
	}
	for _, st := range stores() {
		b.Run("pingpong/"+st.name, func(b *testing.B) {
			alice, bob := established(b, st.serializing)
			ab, ba := alice.Cipher(bob.Addr), bob.Cipher(alice.Addr)
			msg := make([]byte, 64)
			rand.Read(msg)
			b.ResetTimer()
			for range b.N {
				for _, dir := range [2][2]any{{ab, ba}, {ba, ab}} {
					from, to := dir[0].(*session.Cipher), dir[1].(*session.Cipher)
					w, typ, err := Encrypt(ctx, from, msg)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := Decrypt(ctx, to, w, typ); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// BenchmarkWireOverhead reports the bytes a steady-state message adds to a 64 B plaintext.
func BenchmarkWireOverhead(b *testing.B) {
	ctx := context.Background()
	alice, bob := established(b, false)
	c := alice.Cipher(bob.Addr)
	msg := make([]byte, 64)
	var w []byte
	for range b.N {
		var err error
		if w, _, err = Encrypt(ctx, c, msg); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(w)-len(msg)), "steady-B")
}
