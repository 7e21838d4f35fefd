package crypto

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/hex"
	"math/big"
	"testing"

	"github.com/sotto-im/sotto/crypto/internal/wycheproof"
)

// TestX25519MatchesECDH checks the CIRCL-backed x25519 against
// crypto/ecdh: the same shared secrets for random keys and random (also
// non-canonical) u-coordinates, and the same refusals for the points of
// small order, canonical or not.
func TestX25519MatchesECDH(t *testing.T) {
	p := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 255), big.NewInt(19))
	le := func(n *big.Int) []byte {
		b := make([]byte, 32)
		n.FillBytes(b)
		for i, j := 0, 31; i < j; i, j = i+1, j-1 {
			b[i], b[j] = b[j], b[i]
		}
		return b
	}
	dec := func(s string) *big.Int { n, _ := new(big.Int).SetString(s, 10); return n }
	// The u-coordinates of small order (RFC 7748 §7 and the curve's
	// twist), also written as u + p where that still fits in 255 bits.
	small := []*big.Int{big.NewInt(0), big.NewInt(1),
		dec("325606250916557431795983626356110631294008115727848805560023387167927233504"),
		dec("39382357235489614581723060781553021112529911719440698176882885853963445705823"),
		new(big.Int).Sub(p, big.NewInt(1))}
	var points [][]byte
	for _, u := range small {
		points = append(points, le(u))
		if v := new(big.Int).Add(u, p); v.BitLen() <= 255 {
			points = append(points, le(v))
		}
	}
	for range 64 {
		b := make([]byte, 32)
		rand.Read(b)
		points = append(points, b) // top bit set half the time: ignored by both
	}
	for i, pt := range points {
		priv, err := ecdh.X25519().GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		pub, err := ecdh.X25519().NewPublicKey(pt)
		if err != nil {
			t.Fatal(err)
		}
		want, wantErr := priv.ECDH(pub)
		got, gotErr := x25519(priv, pub)
		if (wantErr != nil) != (gotErr != nil) || !bytes.Equal(got, want) {
			t.Errorf("point %d (%x): crypto/ecdh %x, %v; x25519 %x, %v", i, pt, want, wantErr, got, gotErr)
		}
		e := keyPairFrom(priv)
		got, gotErr = e.dh(pub)
		if (wantErr != nil) != (gotErr != nil) || !bytes.Equal(got, want) {
			t.Errorf("point %d (%x): ephemeral dh %x, %v", i, pt, got, gotErr)
		}
	}
}

// TestX25519RFC7748 is the first test vector of RFC 7748 §5.2.
func TestX25519RFC7748(t *testing.T) {
	h := func(s string) []byte { b, _ := hex.DecodeString(s); return b }
	priv, err := ecdh.X25519().NewPrivateKey(h("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4"))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ecdh.X25519().NewPublicKey(h("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := x25519(priv, pub)
	if want := h("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("got %x, %v; want %x", got, err, want)
	}
}

// TestEphemeralKeyPair checks that newKeyPair's public key is the one
// crypto/ecdh derives from the same scalar.
func TestEphemeralKeyPair(t *testing.T) {
	for range 16 {
		e, err := newKeyPair()
		if err != nil {
			t.Fatal(err)
		}
		k, err := ecdh.X25519().NewPrivateKey(e.priv[:])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(e.public(), k.PublicKey().Bytes()) {
			t.Fatalf("public key %x, crypto/ecdh says %x", e.public(), k.PublicKey().Bytes())
		}
		e.forget()
		if e.priv != ([32]byte{}) {
			t.Fatal("forget left the scalar")
		}
	}
}

// TestX25519Wycheproof runs Project Wycheproof's X25519 vectors (the same
// cases and verdicts as crypto/internal/wycheproof's TestX25519, which
// checks crypto/ecdh) against the package's own x25519 and the ephemeral
// keys' dh.
func TestX25519Wycheproof(t *testing.T) {
	for _, tc := range wycheproof.X25519Cases(t, "testdata/wycheproof") {
		priv, err := ecdh.X25519().NewPrivateKey(tc.Private)
		if err != nil {
			t.Fatal(err)
		}
		pub, err := ecdh.X25519().NewPublicKey(tc.Public)
		if err != nil {
			t.Fatal(err)
		}
		for name, dh := range map[string]func() ([]byte, error){
			"x25519":       func() ([]byte, error) { return x25519(priv, pub) },
			"ephemeral dh": func() ([]byte, error) { return keyPairFrom(priv).dh(pub) },
		} {
			shared, err := dh()
			switch {
			case tc.Accept && err != nil:
				t.Errorf("%s %s: rejected: %v", wycheproof.Name(tc.Case), name, err)
			case tc.Accept && !bytes.Equal(shared, tc.Shared):
				t.Errorf("%s %s: shared secret %x, want %x", wycheproof.Name(tc.Case), name, shared, tc.Shared)
			case !tc.Accept && err == nil:
				t.Errorf("%s %s: accepted with shared secret %x", wycheproof.Name(tc.Case), name, shared)
			}
		}
	}
}
