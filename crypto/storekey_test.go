package crypto

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"filippo.io/age"
)

// testScryptLogN keeps the unit tests fast; the work factor is a
// parameter of age's format, recorded in the wrapped key.
const testScryptLogN = 10

// cheapScryptLogN is for tests that unwrap many times (truncation sweeps).
const cheapScryptLogN = 2

func TestStoreKeyWrapUnwrapRewrap(t *testing.T) {
	k := GenerateStoreKey()
	wrapped, err := wrapStoreKey(k, "correct horse", testScryptLogN)
	if err != nil {
		t.Fatal(err)
	}
	got, err := UnwrapStoreKey(wrapped, "correct horse")
	if err != nil || !got.Equal(k) {
		t.Fatalf("unwrap: %v", err)
	}
	if _, err := UnwrapStoreKey(wrapped, "wrong horse"); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("wrong passphrase: %v", err)
	} else if strings.Contains(err.Error(), "wrong horse") {
		t.Fatal("error quotes the passphrase")
	}
	rewrapped, err := rewrapStoreKey(wrapped, "correct horse", "battery staple", testScryptLogN)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := UnwrapStoreKey(rewrapped, "correct horse"); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("old passphrase after rewrap: %v", err)
	}
	got, err = UnwrapStoreKey(rewrapped, "battery staple")
	if err != nil || !got.Equal(k) {
		t.Fatalf("rewrap changed the key: %v", err)
	}
	if _, err := rewrapStoreKey(wrapped, "nope", "x", testScryptLogN); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("rewrap with wrong passphrase: %v", err)
	}
	if _, err := wrapStoreKey(k, "", testScryptLogN); err == nil {
		t.Fatal("empty passphrase accepted")
	}
	if s := k.String(); strings.Contains(s, string(k.key[:])) || !strings.Contains(s, "redacted") {
		t.Fatal("String prints the key")
	}
}

func TestStoreKeyHostile(t *testing.T) {
	k := GenerateStoreKey()
	wrapped, err := wrapStoreKey(k, "pw", cheapScryptLogN)
	if err != nil {
		t.Fatal(err)
	}
	// The work factor is checked before any scrypt work: raise it in the
	// header of a cheap file.
	tooHard := bytes.Replace(wrapped, []byte(" 2\n"), fmt.Appendf(nil, " %d\n", MaxStoreKeyScryptLogN+1), 1)
	if bytes.Equal(tooHard, wrapped) {
		t.Fatal("work factor not found in the header")
	}
	// A file for an X25519 recipient, not a passphrase.
	var x25519File bytes.Buffer
	if _, _, _, err := EncryptAttachment(&x25519File, strings.NewReader("not a key")); err != nil {
		t.Fatal(err)
	}
	cases := map[string][]byte{
		"empty":            nil,
		"garbage":          []byte("age-encryption.org/v1\n-> nonsense\n"),
		"work factor":      tooHard,
		"not a passphrase": x25519File.Bytes(),
		"truncated":        wrapped[:len(wrapped)-1],
		"trailing":         append(bytes.Clone(wrapped), 0),
		"flipped last":     func() []byte { b := bytes.Clone(wrapped); b[len(b)-1] ^= 1; return b }(),
	}
	for name, in := range cases {
		got, err := UnwrapStoreKey(in, "pw")
		if got != nil || !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
	for n := range len(wrapped) {
		if got, err := UnwrapStoreKey(wrapped[:n], "pw"); got != nil || err == nil {
			t.Fatalf("truncation to %d accepted", n)
		}
	}
	// Wrapped plaintext of the wrong length or version.
	for _, inner := range [][]byte{{storeKeyWrapVersion}, append([]byte{2}, make([]byte, 32)...), make([]byte, 34)} {
		b := ageScryptForTest(t, "pw", inner)
		if got, err := UnwrapStoreKey(b, "pw"); got != nil || !errors.Is(err, ErrMalformed) {
			t.Errorf("inner %x: %v", inner, err)
		}
	}
}

func TestStoreValues(t *testing.T) {
	k := GenerateStoreKey()
	for _, n := range []int{0, 1, 1000} {
		pt := bytes.Repeat([]byte{9}, n)
		sealed := k.Seal([]byte("sessions/abc"), pt)
		if len(sealed) != StoreValueOverhead+n {
			t.Fatalf("sealed length %d", len(sealed))
		}
		got, err := k.Open([]byte("sessions/abc"), sealed)
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatal(err)
		}
		if _, err := k.Open([]byte("sessions/abd"), sealed); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("wrong ad: %v", err)
		}
		if _, err := GenerateStoreKey().Open([]byte("sessions/abc"), sealed); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("wrong key: %v", err)
		}
		for i := range sealed {
			bad := bytes.Clone(sealed)
			bad[i] ^= 0x20
			if got, err := k.Open([]byte("sessions/abc"), bad); got != nil || !errors.Is(err, ErrDecrypt) {
				t.Fatalf("flipped byte %d: %v", i, err)
			}
		}
		for i := range len(sealed) {
			if got, err := k.Open([]byte("sessions/abc"), sealed[:i]); got != nil || !errors.Is(err, ErrDecrypt) {
				t.Fatalf("truncation %d: %v", i, err)
			}
		}
	}
	if bytes.Equal(k.Seal(nil, []byte("x")), k.Seal(nil, []byte("x"))) {
		t.Fatal("nonces repeat")
	}
}

func FuzzStoreValueOpen(f *testing.F) {
	for _, seed := range envVectorHex(f, "storekey.txt", "sealed") {
		f.Add(seed)
	}
	k := newStoreKey([StoreKeySize]byte{1})
	f.Add(k.Seal([]byte("ad"), []byte("value")))
	f.Fuzz(func(t *testing.T, in []byte) {
		pt, err := k.Open([]byte("ad"), in)
		if err != nil && pt != nil {
			t.Fatal("non-nil plaintext on error")
		}
	})
}

func FuzzUnwrapStoreKey(f *testing.F) {
	for _, seed := range envVectorHex(f, "storekey.txt", "wrapped") {
		f.Add(seed)
	}
	b, err := wrapStoreKey(newStoreKey([StoreKeySize]byte{1}), "pw", testScryptLogN)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Fuzz(func(t *testing.T, in []byte) {
		// Keep fuzzing cheap: skip inputs that ask for an expensive scrypt.
		if bytes.Contains(in, []byte("scrypt")) && !bytes.Contains(in, []byte(" 10\n")) {
			return
		}
		k, err := UnwrapStoreKey(in, "pw")
		if err != nil && k != nil {
			t.Fatal("non-nil key on error")
		}
	})
}

func genStoreKeyVectors(t *testing.T, w *vectorWriter) {
	w.comment("Store key (PROTOCOL.md §10): an age file (scrypt recipient) holding 0x01 || store key.")
	w.comment("The vector uses work factor 10 to stay cheap; clients use StoreKeyScryptLogN (18).")
	k := GenerateStoreKey()
	wrapped, err := wrapStoreKey(k, "correct horse battery staple", testScryptLogN)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := UnwrapStoreKey(wrapped, "correct horse battery staple"); err != nil || !got.Equal(k) {
		t.Fatal("vector does not unwrap", err)
	}
	w.text("passphrase", "correct horse battery staple")
	w.num("scrypt_log_n", testScryptLogN)
	w.hex("store_key", k.key[:])
	w.hex("wrapped", wrapped)
	w.text("expect", "success")
	w.end()
	w.text("passphrase", "Tr0ub4dor&3")
	w.hex("wrapped", wrapped)
	w.text("expect", "wrong passphrase")
	w.end()
	sealed := k.Seal([]byte("record/1"), []byte("a store value"))
	w.comment("A store value sealed under the key above.")
	w.hex("ad", []byte("record/1"))
	w.hex("plaintext", []byte("a store value"))
	w.hex("sealed", sealed)
	w.text("expect", "success")
	w.end()
}

// ageScryptForTest wraps arbitrary bytes with age's scrypt recipient.
func ageScryptForTest(t *testing.T, pass string, inner []byte) []byte {
	t.Helper()
	r, err := age.NewScryptRecipient(pass)
	if err != nil {
		t.Fatal(err)
	}
	r.SetWorkFactor(testScryptLogN)
	var out bytes.Buffer
	w, err := age.Encrypt(&out, r)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(inner)
	w.Close()
	return out.Bytes()
}

func TestWrapStoreKeyWithWorkFactor(t *testing.T) {
	k := GenerateStoreKey()
	for _, logN := range []int{MinStoreKeyScryptLogN - 1, MaxStoreKeyScryptLogN + 1} {
		if _, err := WrapStoreKeyWithWorkFactor(k, "pass", logN); err == nil {
			t.Errorf("work factor %d accepted", logN)
		}
	}
	wrapped, err := WrapStoreKeyWithWorkFactor(k, "pass", MinStoreKeyScryptLogN)
	if err != nil {
		t.Fatal(err)
	}
	got, err := UnwrapStoreKey(wrapped, "pass")
	if err != nil || !got.Equal(k) {
		t.Fatalf("unwrap: %v", err)
	}
}
