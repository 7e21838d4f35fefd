package wycheproof

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/sha256"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"
)

// TestX25519 runs the X25519 vectors against crypto/ecdh, which Sotto uses
// to parse and hold X25519 keys (the crypto package runs them against its
// own scalar multiplication too). Sotto rejects an all-zero shared secret
// (PROTOCOL.md §2.2), and crypto/ecdh returns an error for it; points on
// the twist and non-canonical encodings are accepted as RFC 7748 says.
func TestX25519(t *testing.T) {
	for _, tc := range X25519Cases(t, Dir) {
		t.Run(Name(tc.Case), func(t *testing.T) {
			priv, err := ecdh.X25519().NewPrivateKey(tc.Private)
			if err != nil {
				t.Fatal(err)
			}
			pub, err := ecdh.X25519().NewPublicKey(tc.Public)
			if err != nil {
				t.Fatal(err) // crypto/ecdh accepts any 32 bytes as a public key
			}
			shared, err := priv.ECDH(pub)
			switch {
			case tc.Accept && err != nil:
				t.Fatalf("rejected: %v", err)
			case tc.Accept && !bytes.Equal(shared, tc.Shared):
				t.Fatalf("shared secret %x, want %x", shared, tc.Shared)
			case !tc.Accept && err == nil:
				t.Fatalf("accepted with shared secret %x", shared)
			}
		})
	}
}

// TestEd25519 runs the Ed25519 verification vectors against crypto/ed25519,
// which verifies every Sotto signature.
func TestEd25519(t *testing.T) {
	var groups []struct {
		PublicKey struct {
			PK string `json:"pk"`
		} `json:"publicKey"`
		Tests []struct {
			Case
			Msg string `json:"msg"`
			Sig string `json:"sig"`
		} `json:"tests"`
	}
	f := Load(t, "ed25519_test.json", &groups)
	n := 0
	for _, g := range groups {
		pk := ed25519.PublicKey(Hex(t, g.PublicKey.PK))
		for _, tc := range g.Tests {
			n++
			t.Run(Name(tc.Case), func(t *testing.T) {
				want := ShouldPass(t, tc.Case, nil)
				if got := ed25519.Verify(pk, Hex(t, tc.Msg), Hex(t, tc.Sig)); got != want {
					t.Fatalf("Verify = %v, want %v", got, want)
				}
			})
		}
	}
	CheckCount(t, f, n)
}

type aeadGroup struct {
	IVSize int `json:"ivSize"`
	Tests  []struct {
		Case
		Key string `json:"key"`
		IV  string `json:"iv"`
		AAD string `json:"aad"`
		Msg string `json:"msg"`
		CT  string `json:"ct"`
		Tag string `json:"tag"`
	} `json:"tests"`
}

// runAEAD checks sealing for valid cases and opening for all of them.
func runAEAD(t *testing.T, name string, newAEAD func(t *testing.T, key []byte, ivSize int) cipher.AEAD) {
	var groups []aeadGroup
	f := Load(t, name, &groups)
	n := 0
	for _, g := range groups {
		for _, tc := range g.Tests {
			n++
			t.Run(Name(tc.Case), func(t *testing.T) {
				want := ShouldPass(t, tc.Case, nil)
				aead := newAEAD(t, Hex(t, tc.Key), g.IVSize/8)
				iv, aad, msg := Hex(t, tc.IV), Hex(t, tc.AAD), Hex(t, tc.Msg)
				sealed := append(Hex(t, tc.CT), Hex(t, tc.Tag)...)
				if want {
					if got := aead.Seal(nil, iv, msg, aad); !bytes.Equal(got, sealed) {
						t.Fatalf("Seal = %x, want %x", got, sealed)
					}
				}
				pt, err := aead.Open(nil, iv, sealed, aad)
				switch {
				case want && (err != nil || !bytes.Equal(pt, msg)):
					t.Fatalf("Open = %x, %v", pt, err)
				case !want && err == nil:
					t.Fatal("Open accepted an invalid ciphertext")
				}
			})
		}
	}
	CheckCount(t, f, n)
}

// TestAESGCM runs the AES-GCM vectors against crypto/cipher, which seals
// ratchet messages, envelopes and group messages (AES-256, 96-bit nonces).
func TestAESGCM(t *testing.T) {
	runAEAD(t, "aes_gcm_test.json", func(t *testing.T, key []byte, ivSize int) cipher.AEAD {
		block, err := aes.NewCipher(key)
		if err != nil {
			t.Fatal(err)
		}
		var aead cipher.AEAD
		if ivSize == 12 {
			aead, err = cipher.NewGCM(block)
		} else {
			aead, err = cipher.NewGCMWithNonceSize(block, ivSize)
		}
		if err != nil {
			t.Fatal(err)
		}
		return aead
	})
}

// TestXChaCha20Poly1305 runs the XChaCha20-Poly1305 vectors, which seal
// store values (PROTOCOL.md §10).
func TestXChaCha20Poly1305(t *testing.T) {
	runAEAD(t, "xchacha20_poly1305_test.json", func(t *testing.T, key []byte, ivSize int) cipher.AEAD {
		if ivSize != chacha20poly1305.NonceSizeX {
			t.Fatalf("unexpected nonce size %d", ivSize)
		}
		aead, err := chacha20poly1305.NewX(key)
		if err != nil {
			t.Fatal(err)
		}
		return aead
	})
}

// TestHKDFSHA256 runs the HKDF vectors against crypto/hkdf, Sotto's KDF.
func TestHKDFSHA256(t *testing.T) {
	var groups []struct {
		Tests []struct {
			Case
			IKM  string `json:"ikm"`
			Salt string `json:"salt"`
			Info string `json:"info"`
			Size int    `json:"size"`
			OKM  string `json:"okm"`
		} `json:"tests"`
	}
	f := Load(t, "hkdf_sha256_test.json", &groups)
	n := 0
	for _, g := range groups {
		for _, tc := range g.Tests {
			n++
			t.Run(Name(tc.Case), func(t *testing.T) {
				want := ShouldPass(t, tc.Case, nil)
				okm, err := hkdf.Key(sha256.New, Hex(t, tc.IKM), Hex(t, tc.Salt), string(Hex(t, tc.Info)), tc.Size)
				switch {
				case want && (err != nil || !bytes.Equal(okm, Hex(t, tc.OKM))):
					t.Fatalf("okm = %x, %v", okm, err)
				case !want && err == nil:
					t.Fatal("accepted an invalid size")
				}
			})
		}
	}
	CheckCount(t, f, n)
}

// fakeTB records Fatalf instead of stopping, to test ShouldPass itself.
type fakeTB struct{ failed bool }

func (*fakeTB) Helper()                 {}
func (f *fakeTB) Fatalf(string, ...any) { f.failed = true }

func TestShouldPassRejectsUnknownFlags(t *testing.T) {
	tb := &fakeTB{}
	ShouldPass(tb, Case{TcID: 1, Result: "acceptable", Flags: []string{"SomethingNew"}}, map[string]bool{"Twist": true})
	if !tb.failed {
		t.Fatal("an unknown acceptable flag did not fail the test")
	}
	tb = &fakeTB{}
	if ShouldPass(tb, Case{Result: "acceptable", Flags: []string{"Twist", "LowOrderPublic"}}, map[string]bool{"Twist": true, "LowOrderPublic": false}) || tb.failed {
		t.Fatal("mixed flags must mean reject")
	}
	tb = &fakeTB{}
	if ShouldPass(tb, Case{Result: "bogus"}, nil); !tb.failed {
		t.Fatal("an unknown result did not fail the test")
	}
}
