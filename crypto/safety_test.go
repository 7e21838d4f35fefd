package crypto

import (
	"bytes"
	"errors"
	"regexp"
	"testing"
)

func TestSafetyNumber(t *testing.T) {
	a, b, m := GenerateAccountKey().Public(), GenerateAccountKey().Public(), GenerateAccountKey().Public()
	ab, ba := NewSafetyNumber(a, b), NewSafetyNumber(b, a)
	if ab.Digits() != ba.Digits() || ab.String() != ba.String() {
		t.Fatal("the two sides see different numbers")
	}
	if !regexp.MustCompile(`^[0-9]{60}$`).MatchString(ab.Digits()) {
		t.Fatalf("digits %q", ab.Digits())
	}
	if !regexp.MustCompile(`^([0-9]{5} ){11}[0-9]{5}$`).MatchString(ab.String()) {
		t.Fatalf("display %q", ab.String())
	}
	if err := ab.VerifyScanned(ba.QRPayload()); err != nil {
		t.Fatal(err)
	}
	if err := ba.VerifyScanned(ab.QRPayload()); err != nil {
		t.Fatal(err)
	}
	// A key server that gave Alice Mallory's key instead of Bob's.
	am := NewSafetyNumber(a, m)
	if am.Digits() == ab.Digits() {
		t.Fatal("different keys, same digits")
	}
	if err := am.VerifyScanned(ba.QRPayload()); !errors.Is(err, ErrSafetyNumberMismatch) {
		t.Fatalf("substituted key: %v", err)
	}
	// Scanning one's own code is a mismatch, not a success.
	if err := ab.VerifyScanned(ab.QRPayload()); !errors.Is(err, ErrSafetyNumberMismatch) {
		t.Fatalf("own code: %v", err)
	}
	valid := ba.QRPayload()
	for n := range len(valid) + 2 {
		in := append(bytes.Clone(valid), 0, 0)[:n]
		if n == len(valid) {
			continue
		}
		if err := ab.VerifyScanned(in); !errors.Is(err, ErrMalformed) {
			t.Fatalf("length %d: %v", n, err)
		}
	}
	bad := bytes.Clone(valid)
	bad[0] = 2
	if err := ab.VerifyScanned(bad); !errors.Is(err, ErrMalformed) {
		t.Fatalf("version: %v", err)
	}
}

func FuzzSafetyScan(f *testing.F) {
	for _, seed := range envVectorHex(f, "safety.txt", "qr_payload_b") {
		f.Add(seed)
	}
	a, b := GenerateAccountKey().Public(), GenerateAccountKey().Public()
	ab, ba := NewSafetyNumber(a, b), NewSafetyNumber(b, a)
	f.Add(ba.QRPayload())
	f.Fuzz(func(t *testing.T, in []byte) {
		if ab.VerifyScanned(in) == nil && !bytes.Equal(in, ba.QRPayload()) {
			t.Fatal("accepted a payload other than the peer's")
		}
	})
}

func genSafetyVectors(t *testing.T, w *vectorWriter) {
	w.comment("Safety number (PROTOCOL.md §2.4) of two account keys, and the QR payload each side shows.")
	a, b := GenerateAccountKey().Public(), GenerateAccountKey().Public()
	ab, ba := NewSafetyNumber(a, b), NewSafetyNumber(b, a)
	if ab.VerifyScanned(ba.QRPayload()) != nil {
		t.Fatal("vector does not verify")
	}
	w.hex("account_key_a", a.Bytes())
	w.hex("account_key_b", b.Bytes())
	w.text("digits", ab.Digits())
	w.text("display", ab.String())
	w.hex("qr_payload_a", ab.QRPayload())
	w.hex("qr_payload_b", ba.QRPayload())
	w.text("expect", "success")
	w.end()
}
