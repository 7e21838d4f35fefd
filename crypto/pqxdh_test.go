package crypto

import (
	"crypto/ecdh"
	"crypto/mlkem"
	"crypto/mlkem/mlkemtest"
	"crypto/rand"
	"errors"
	"strings"
	"sync"
	"testing"
)

func TestPQXDHBundleSignaturesChecked(t *testing.T) {
	a, b := newTestDevice(t, 1), newTestDevice(t, 2)
	for name, corrupt := range map[string]func(*PreKeyBundle){
		"signed prekey signature": func(p *PreKeyBundle) {
			p.SignedPreKey.Signature = append([]byte(nil), p.SignedPreKey.Signature...)
			p.SignedPreKey.Signature[5] ^= 1
		},
		"KEM prekey signature": func(p *PreKeyBundle) {
			p.KEMPreKey.Signature = append([]byte(nil), p.KEMPreKey.Signature...)
			p.KEMPreKey.Signature[60] ^= 1
		},
		"signed prekey swapped": func(p *PreKeyBundle) { p.SignedPreKey.Public = GenerateSignedPreKey(a.ik, 1).Public },
		"KEM prekey ID changed": func(p *PreKeyBundle) { p.KEMPreKey.ID++ },
		"last-resort flag flipped": func(p *PreKeyBundle) {
			p.KEMPreKey.LastResort = !p.KEMPreKey.LastResort
		},
	} {
		bundle := b.bundle(true, true)
		corrupt(bundle)
		if _, err := InitiateSession(a.ik, a.addr, bundle); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestPQXDHWithAndWithoutOneTimeKeys(t *testing.T) {
	for _, tc := range []struct{ oneTime, oneTimeKEM bool }{{false, false}, {true, false}, {false, true}, {true, true}} {
		a, b := newTestDevice(t, 1), newTestDevice(t, 2)
		alice, err := InitiateSession(a.ik, a.addr, b.bundle(tc.oneTime, tc.oneTimeKEM))
		if err != nil {
			t.Fatal(err)
		}
		bob, pt, used, err := AcceptSession(b.ik, b.addr, b, sessEncrypt(t, alice, "hi"))
		if err != nil || string(pt) != "hi" {
			t.Fatalf("%+v: %q %v", tc, pt, err)
		}
		if used.HasOneTimePreKey != tc.oneTime || used.KEMLastResort == tc.oneTimeKEM {
			t.Fatalf("%+v: used = %+v", tc, used)
		}
		sessDecrypt(t, alice, sessEncrypt(t, bob, "back"), "back")
	}
}

// TestPQXDHOneTimePreKeyMatters checks that DH4 is part of SK: a message
// built with one one-time prekey does not decrypt when the responder is
// given another key under the same ID.
func TestPQXDHOneTimePreKeyMatters(t *testing.T) {
	a, b := newTestDevice(t, 1), newTestDevice(t, 2)
	bundle := b.bundle(true, false)
	alice, _ := InitiateSession(a.ik, a.addr, bundle)
	msg := sessEncrypt(t, alice, "x")
	b.otk[bundle.OneTimePreKey.ID] = GenerateOneTimePreKey(bundle.OneTimePreKey.ID)
	if _, _, _, err := AcceptSession(b.ik, b.addr, b, msg); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("substituted one-time prekey: %v", err)
	}
}

// genPQXDHVectors writes testdata/vectors/pqxdh.txt: both sides of one
// PQXDH run with every private key, the initial message and the derived
// secrets (PROTOCOL.md §3).
func genPQXDHVectors(t *testing.T, w *vectorWriter) {
	w.comment("PQXDH (PROTOCOL.md §3): X25519, SHA-256, ML-KEM-768. Private X25519 keys are raw scalars")
	w.comment("(RFC 7748), identity keys are Ed25519 seeds, the KEM prekey is the 64-byte ML-KEM seed d || z,")
	w.comment("kem_encaps_random is the 32-byte m of ML-KEM.Encaps (FIPS 203 Algorithm 17).")
	w.end()
	for _, withOneTime := range []bool{true, false} {
		a, b := newTestDevice(t, 1), newTestDevice(t, 2)
		bundle := b.bundle(withOneTime, withOneTime)
		ek, ratchet := generateX25519(), generateX25519()
		m := make([]byte, 32)
		rand.Read(m)
		keys := initiatorKeys{ephemeral: keyPairFrom(ek), ratchet: keyPairFrom(ratchet), encapsulate: func(k *mlkem.EncapsulationKey768) ([]byte, []byte) {
			ss, ct, err := mlkemtest.Encapsulate768(k, m)
			if err != nil {
				t.Fatal(err)
			}
			return ss, ct
		}}
		alice, err := initiate(a.ik, a.addr, bundle, keys)
		if err != nil {
			t.Fatal(err)
		}
		msg := sessEncrypt(t, alice, "PQXDH initial message")
		bob, pt, used, err := AcceptSession(b.ik, b.addr, b, msg)
		if err != nil || string(pt) != "PQXDH initial message" {
			t.Fatalf("accept: %v", err)
		}

		// SK, recomputed from the private keys as another implementation would.
		dh := func(priv *ecdh.PrivateKey, pub *ecdh.PublicKey) []byte {
			out, err := x25519(priv, pub)
			if err != nil {
				t.Fatal(err)
			}
			return out
		}
		var dh4 []byte
		if withOneTime {
			dh4 = dh(ek, bundle.OneTimePreKey.Public)
		}
		ss, _, _ := mlkemtest.Encapsulate768(bundle.KEMPreKey.EncapsulationKey, m)
		sk := pqxdhSecret(dh(a.ik.x, bundle.SignedPreKey.Public), dh(ek, b.ik.Public().X25519()), dh(ek, bundle.SignedPreKey.Public), dh4, ss)

		w.text("case", map[bool]string{true: "with one-time prekey and one-time KEM prekey", false: "signed prekey and last-resort KEM prekey only"}[withOneTime])
		w.hex("alice_identity_seed", a.ik.Seed())
		w.hex("alice_identity_public", a.ik.Public().Bytes())
		w.hex("alice_account", a.addr.Account[:])
		w.num("alice_device", uint64(a.addr.Device))
		w.hex("bob_identity_seed", b.ik.Seed())
		w.hex("bob_identity_public", b.ik.Public().Bytes())
		w.hex("bob_account", b.addr.Account[:])
		w.num("bob_device", uint64(b.addr.Device))
		w.hex("bob_signed_prekey_private", b.spk[1].Private.Bytes())
		w.hex("bob_kem_prekey_seed", b.kem[bundle.KEMPreKey.ID].Private.Bytes())
		if withOneTime {
			w.hex("bob_one_time_prekey_private", b.otk[bundle.OneTimePreKey.ID].Private.Bytes())
		}
		bb, _ := bundle.MarshalBinary()
		w.hex("bundle", bb)
		w.hex("alice_ephemeral_private", ek.Bytes())
		w.hex("kem_encaps_random", m)
		w.hex("kem_shared_secret", ss)
		w.hex("session_ad", alice.ad)
		w.hex("sk", sk[:])
		w.hex("alice_ratchet_private", ratchet.Bytes())
		root, send := alice.rootKeyForTest(), func() [32]byte { k, _ := alice.sendChainForTest(); return k }()
		w.hex("alice_root_key", root[:])
		w.hex("alice_sending_chain_key", send[:])
		w.text("plaintext", "PQXDH initial message")
		w.hex("initial_message", msg)
		broot := bob.rootKeyForTest()
		if broot != root {
			t.Fatal("root keys differ after PQXDH")
		}
		w.comment("After the initial message Bob's root key equals Alice's; his DH ratchet step's sending half waits for his first message.")
		w.hex("bob_root_key", broot[:])
		brecv, _, _ := bob.recvChainForTest()
		w.hex("bob_receiving_chain_key", brecv[:])
		w.num("consumed_one_time_prekey", map[bool]uint64{true: uint64(used.OneTimePreKeyID), false: 0}[used.HasOneTimePreKey])
		w.text("expect", "success")
		w.end()
	}
}

// TestAcceptSessionHostile feeds AcceptSession prekey messages that are
// well formed but wrong in one field each, and checks the typed error.
func TestAcceptSessionHostile(t *testing.T) {
	a, b := newTestDevice(t, 1), newTestDevice(t, 2)
	alice, err := InitiateSession(a.ik, a.addr, b.bundle(true, true))
	if err != nil {
		t.Fatal(err)
	}
	good := sessEncrypt(t, alice, "x")
	edit := func(f func(m *message)) []byte {
		m, err := parseMessage(good)
		if err != nil {
			t.Fatal(err)
		}
		p := *m.preKey
		m.preKey = &p
		f(m)
		return m.marshal()
	}
	smallOrder := [32]byte{1} // the Ed25519 neutral element
	for _, tc := range []struct {
		name string
		msg  []byte
		want error
	}{
		// Unknown prekeys.
		{"unknown signed prekey", edit(func(m *message) { m.preKey.signedPreKeyID = 99 }), ErrUnknownPreKey},
		{"unknown KEM prekey", edit(func(m *message) { m.preKey.kemPreKeyID = 99 }), ErrUnknownPreKey},
		{"unknown one-time prekey", edit(func(m *message) { m.preKey.oneTimePreKeyID = 99 }), ErrUnknownPreKey},
		{"one-time prekey dropped", edit(func(m *message) { m.preKey.hasOneTime = false }), ErrDecrypt},
		// Invalid keys.
		{"small-order initiator identity", edit(func(m *message) { m.preKey.identity = smallOrder }), ErrInvalidKey},
		{"non-canonical initiator identity", edit(func(m *message) {
			m.preKey.identity = [32]byte{0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
				0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}
		}), ErrInvalidKey},
		// Wrong bindings: the AEAD's associated data covers them.
		{"other initiator address", edit(func(m *message) { m.preKey.initiator.Device = 9 }), ErrDecrypt},
		{"other initiator identity", edit(func(m *message) { m.preKey.identity = GenerateIdentityKey().pub.ed }), ErrDecrypt},
		{"other responder device", edit(func(m *message) { m.preKey.responder.Device = 9 }), ErrDecrypt},
		{"header counter", edit(func(m *message) { m.header.n = 1 }), ErrDecrypt},
		{"header counter beyond MaxSkip", edit(func(m *message) { m.header.n = MaxSkip + 1 }), ErrTooManySkipped},
		// Not a prekey message.
		{"ratchet message", func() []byte {
			m, _ := parseMessage(good)
			m.preKey = nil
			return m.marshal()
		}(), ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, pt, _, err := AcceptSession(b.ik, b.addr, b, tc.msg)
			if !errors.Is(err, tc.want) || s != nil || pt != nil {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "crypto: ") {
				t.Fatalf("error %q lacks the package prefix", err)
			}
		})
	}
	// A lookup that answers with a key under another ID is refused, so
	// that PreKeysUsed never names a key other than the one used.
	b.spk[99] = b.spk[1]
	if _, _, _, err := AcceptSession(b.ik, b.addr, b, edit(func(m *message) { m.preKey.signedPreKeyID = 99 })); !errors.Is(err, ErrUnknownPreKey) {
		t.Fatalf("key under another ID: %v", err)
	}
	if _, _, _, err := AcceptSession(b.ik, b.addr, b, good); err != nil {
		t.Fatalf("genuine message: %v", err)
	}
}

// TestBundleVerifiedOnce checks that a verified bundle is not verified
// again (no allocation: the signature check allocates), and that any
// change to a field the signatures cover, after verification, is caught
// by Verify and by InitiateSession.
func TestBundleVerifiedOnce(t *testing.T) {
	a, bd := newTestDevice(t, 1), newTestDevice(t, 2)
	fresh := func() *PreKeyBundle {
		t.Helper()
		enc, err := bd.bundle(true, true).MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		b, err := ParsePreKeyBundle(enc)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	b := fresh()
	if n := testing.AllocsPerRun(10, func() {
		if err := b.Verify(); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("Verify of a parsed bundle allocates %v times: verified again", n)
	}
	if _, err := InitiateSession(a.ik, a.addr, b); err != nil {
		t.Fatal(err)
	}

	other := GenerateIdentityKey()
	otherSPK := GenerateSignedPreKey(other, 1)
	otherKEM := GenerateKEMPreKey(other, 1, true)
	tampers := []struct {
		name string
		f    func(b *PreKeyBundle)
	}{
		{"identity", func(b *PreKeyBundle) { b.Identity = other.Public() }},
		{"signed prekey key", func(b *PreKeyBundle) { b.SignedPreKey.Public = otherSPK.Public }},
		{"signed prekey ID", func(b *PreKeyBundle) { b.SignedPreKey.ID++ }},
		{"signed prekey signature in place", func(b *PreKeyBundle) { b.SignedPreKey.Signature[3] ^= 1 }},
		{"signed prekey signature truncated", func(b *PreKeyBundle) { b.SignedPreKey.Signature = b.SignedPreKey.Signature[:63] }},
		{"KEM key", func(b *PreKeyBundle) { b.KEMPreKey.EncapsulationKey = otherKEM.EncapsulationKey }},
		{"KEM ID", func(b *PreKeyBundle) { b.KEMPreKey.ID++ }},
		{"KEM last resort", func(b *PreKeyBundle) { b.KEMPreKey.LastResort = !b.KEMPreKey.LastResort }},
		{"KEM signature in place", func(b *PreKeyBundle) { b.KEMPreKey.Signature[60] ^= 0x80 }},
		{"both keys and signatures from another identity", func(b *PreKeyBundle) {
			b.SignedPreKey = otherSPK.SignedPreKey
			b.KEMPreKey = otherKEM.KEMPreKey
		}},
	}
	for _, tc := range tampers {
		t.Run(tc.name, func(t *testing.T) {
			b := fresh()
			if err := b.Verify(); err != nil {
				t.Fatal(err)
			}
			tc.f(b)
			if err := b.Verify(); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("Verify after tampering: %v", err)
			}
			if _, err := InitiateSession(a.ik, a.addr, b); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("InitiateSession after tampering: %v", err)
			}
		})
	}
	t.Run("identity swap with its own signatures", func(t *testing.T) {
		// A bundle consistently re-signed by another identity verifies:
		// the device list check (VerifyAgainst) is what refuses it.
		b := fresh()
		b.Identity = other.Public()
		b.SignedPreKey = otherSPK.SignedPreKey
		b.KEMPreKey = otherKEM.KEMPreKey
		if err := b.Verify(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("concurrent", func(t *testing.T) {
		// Verify and InitiateSession only read the bundle's fields, so
		// concurrent use of one bundle stays race-free (CI runs -race).
		b := &PreKeyBundle{Address: bd.addr, Identity: bd.ik.Public(), SignedPreKey: bd.spk[1].SignedPreKey, KEMPreKey: bd.kem[1].KEMPreKey}
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				if _, err := InitiateSession(a.ik, a.addr, b); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	})
}
