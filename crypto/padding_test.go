package crypto

import (
	"bytes"
	"errors"
	"testing"
)

func TestPaddedSizeBuckets(t *testing.T) {
	cases := []struct{ n, want int }{
		{0, 64}, {1, 64}, {63, 64}, {64, 128}, {127, 128}, {128, 256},
		{1000, 1024}, {8191, 8192}, {8192, 16384}, {16383, 16384},
		{16384, 32768}, {32767, 32768}, {32768, 49152}, {100000, 114688},
	}
	for _, c := range cases {
		if got := PaddedSize(c.n); got != c.want {
			t.Errorf("PaddedSize(%d) = %d, want %d", c.n, got, c.want)
		}
	}
}

func TestPadRoundTripSweep(t *testing.T) {
	for n := 0; n <= 40000; n += 1 + n/64 {
		pt := bytes.Repeat([]byte{0x80}, n) // marker-like content must survive
		p := Pad(pt)
		if len(p) != PaddedSize(n) || len(p) <= n {
			t.Fatalf("n=%d: padded length %d", n, len(p))
		}
		got, err := Unpad(p)
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("n=%d: Unpad = %v", n, err)
		}
	}
}

func TestUnpadRejectsNonCanonical(t *testing.T) {
	valid := Pad([]byte("hello"))
	cases := map[string][]byte{
		// bad lengths
		"empty":        {},
		"not a bucket": append(bytes.Clone(valid), 0),
		"short bucket": valid[:63],
		// missing or wrong marker
		"all zero":         make([]byte, 64),
		"marker 0x01":      append(append([]byte("hello"), 1), make([]byte, 58)...),
		"trailing nonzero": func() []byte { b := bytes.Clone(valid); b[63] = 1; return b }(),
		// a bucket too large for its plaintext
		"oversized bucket": append(append([]byte("hello"), 0x80), make([]byte, 122)...),
	}
	for name, in := range cases {
		got, err := Unpad(in)
		if got != nil || !errors.Is(err, ErrBadPadding) || !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Unpad = %x, %v", name, got, err)
		}
	}
}

func FuzzUnpad(f *testing.F) {
	for _, seed := range envVectorHex(f, "padding.txt", "padded") {
		f.Add(seed)
	}
	f.Add(Pad(nil))
	f.Add(Pad([]byte("hello")))
	f.Add(make([]byte, 64))
	f.Fuzz(func(t *testing.T, in []byte) {
		pt, err := Unpad(in)
		if err != nil {
			if pt != nil {
				t.Fatal("non-nil plaintext on error")
			}
			return
		}
		if !bytes.Equal(Pad(pt), in) {
			t.Fatal("Unpad accepted a non-canonical padding")
		}
	})
}

func genPaddingVectors(t *testing.T, w *vectorWriter) {
	w.comment("Padding (PROTOCOL.md §8): plaintext || 0x80 || zeros up to the bucket size.")
	w.comment("Buckets: powers of two from 64 to 16384, then multiples of 16384.")
	w.end()
	for _, n := range []int{0, 5, 63, 64, 200, 16383, 16384} {
		pt := make([]byte, n)
		for i := range pt {
			pt[i] = byte(i*7 + 1)
		}
		p := Pad(pt)
		w.num("plaintext_length", uint64(n))
		w.hex("plaintext", pt)
		w.num("padded_length", uint64(len(p)))
		w.hex("padded", p)
		w.text("expect", "success")
		w.end()
	}
	for _, bad := range [][]byte{make([]byte, 64), append(append([]byte("hi"), 0x80), make([]byte, 125)...)} {
		if _, err := Unpad(bad); err == nil {
			t.Fatal("bad padding accepted")
		}
		w.hex("padded", bad)
		w.text("expect", "bad padding")
		w.end()
	}
}
