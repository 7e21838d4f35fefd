package crypto

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"hash"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"golang.org/x/crypto/blake2b"
)

func encryptForTest(t testing.TB, pt []byte) (*AttachmentKey, [AttachmentDigestSize]byte, []byte) {
	t.Helper()
	var ct bytes.Buffer
	key, digest, size, err := EncryptAttachment(&ct, bytes.NewReader(pt))
	if err != nil {
		t.Fatal(err)
	}
	if size != int64(ct.Len()) || digest != blake2b.Sum256(ct.Bytes()) {
		t.Fatal("size or digest does not describe the ciphertext")
	}
	return key, digest, ct.Bytes()
}

func TestAttachmentRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 64<<10 - 1, 64 << 10, 64<<10 + 1, 200 << 10} {
		pt := bytes.Repeat([]byte{byte(n)}, n)
		key, digest, ct := encryptForTest(t, pt)
		var out bytes.Buffer
		written, err := DecryptAttachment(&out, bytes.NewReader(ct), key, digest)
		if err != nil || written != int64(n) || !bytes.Equal(out.Bytes(), pt) {
			t.Fatalf("n=%d: %v", n, err)
		}
		k2, err := ParseAttachmentKey(key.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		out.Reset()
		if _, err := DecryptAttachment(&out, bytes.NewReader(ct), k2, digest); err != nil {
			t.Fatalf("n=%d with parsed key: %v", n, err)
		}
	}
}

func TestAttachmentTamper(t *testing.T) {
	pt := []byte("attachment bytes")
	key, digest, ct := encryptForTest(t, pt)
	for i := range ct {
		bad := bytes.Clone(ct)
		bad[i] ^= 0x01
		if _, err := DecryptAttachment(io.Discard, bytes.NewReader(bad), key, digest); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("flipped byte %d: %v", i, err)
		}
	}
	for n := range len(ct) {
		if _, err := DecryptAttachment(io.Discard, bytes.NewReader(ct[:n]), key, digest); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
	if _, err := DecryptAttachment(io.Discard, bytes.NewReader(append(bytes.Clone(ct), 0)), key, digest); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("trailing byte: %v", err)
	}
	otherKey, _, _ := encryptForTest(t, nil)
	if _, err := DecryptAttachment(io.Discard, bytes.NewReader(ct), otherKey, digest); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("wrong key: %v", err)
	}
	// A different, valid ciphertext under the same key (made by someone who
	// knows the key) does not match the digest the message named.
	var other bytes.Buffer
	w, _ := ageEncryptToKey(&other, key)
	w.Write([]byte("substituted"))
	w.Close()
	if _, err := DecryptAttachment(io.Discard, bytes.NewReader(other.Bytes()), key, digest); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("substituted file: %v", err)
	}
}

type failingIO struct{ err error }

func (f failingIO) Read([]byte) (int, error)  { return 0, f.err }
func (f failingIO) Write([]byte) (int, error) { return 0, f.err }

func TestAttachmentIOErrors(t *testing.T) {
	boom := errors.New("disk on fire")
	key, digest, ct := encryptForTest(t, []byte("x"))
	if _, err := DecryptAttachment(io.Discard, io.MultiReader(bytes.NewReader(ct[:40]), failingIO{boom}), key, digest); !errors.Is(err, boom) || errors.Is(err, ErrDecrypt) {
		t.Fatalf("read error: %v", err)
	}
	if _, err := DecryptAttachment(failingIO{boom}, bytes.NewReader(ct), key, digest); !errors.Is(err, boom) {
		t.Fatalf("write error: %v", err)
	}
	if _, _, _, err := EncryptAttachment(io.Discard, failingIO{boom}); !errors.Is(err, boom) {
		t.Fatalf("encrypt read error: %v", err)
	}
}

// TestAttachmentStreams checks that a file is never held whole in memory:
// in both directions, output starts long before the input is consumed.
func TestAttachmentStreams(t *testing.T) {
	const size = 8 << 20
	src := &countingReader{r: io.LimitReader(zeroReader{}, size)}
	ctFile, err := os.Create(filepath.Join(t.TempDir(), "blob"))
	if err != nil {
		t.Fatal(err)
	}
	defer ctFile.Close()
	dst := &firstWriteProbe{w: ctFile, src: src}
	key, digest, _, err := EncryptAttachment(dst, src)
	if err != nil {
		t.Fatal(err)
	}
	if dst.readAtFirstWrite > 1<<20 {
		t.Fatalf("encryption read %d bytes before its first write", dst.readAtFirstWrite)
	}
	if _, err := ctFile.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	src = &countingReader{r: ctFile}
	dst = &firstWriteProbe{w: io.Discard, src: src}
	if n, err := DecryptAttachment(dst, src, key, digest); err != nil || n != size {
		t.Fatal(n, err)
	}
	if dst.readAtFirstWrite > 1<<20 {
		t.Fatalf("decryption read %d bytes before its first write", dst.readAtFirstWrite)
	}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

type firstWriteProbe struct {
	w                io.Writer
	src              *countingReader
	wrote            bool
	readAtFirstWrite int64
}

func (f *firstWriteProbe) Write(p []byte) (int, error) {
	if !f.wrote {
		f.wrote, f.readAtFirstWrite = true, f.src.n
	}
	return f.w.Write(p)
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestParseAttachmentKeyHostile(t *testing.T) {
	key, _, _ := encryptForTest(t, nil)
	valid := string(key.Bytes())
	for name, in := range map[string]string{
		"empty":      "",
		"public key": "age1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq",
		"truncated":  valid[:len(valid)-1],
		"bad char":   valid[:len(valid)-1] + "!",
		"trailing":   valid + "Q",
	} {
		k, err := ParseAttachmentKey([]byte(in))
		if k != nil || !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
		if err != nil && len(in) > 20 && strings.Contains(err.Error(), in[16:]) {
			t.Errorf("%s: error quotes the secret input", name)
		}
	}
	if s := key.String(); strings.Contains(valid, s) || strings.Contains(s, "AGE-SECRET") {
		t.Fatal("String prints the key")
	}
}

func FuzzParseAttachmentKey(f *testing.F) {
	key, _, _ := encryptForTest(f, nil)
	f.Add(key.Bytes())
	f.Fuzz(func(t *testing.T, in []byte) {
		k, err := ParseAttachmentKey(in)
		if err != nil {
			if k != nil {
				t.Fatal("non-nil key on error")
			}
			return
		}
		k2, err := ParseAttachmentKey(k.Bytes())
		if err != nil || !bytes.Equal(k2.Bytes(), k.Bytes()) {
			t.Fatal("key does not round trip")
		}
	})
}

func FuzzDecryptAttachment(f *testing.F) {
	for _, seed := range envVectorHex(f, "attachment.txt", "ciphertext") {
		f.Add(seed)
	}
	key, digest, ct := encryptForTest(f, []byte("fuzz"))
	f.Add(ct)
	f.Fuzz(func(t *testing.T, in []byte) {
		var out bytes.Buffer
		_, err := DecryptAttachment(&out, bytes.NewReader(in), key, digest)
		if err == nil && !bytes.Equal(in, ct) {
			t.Fatal("accepted a ciphertext other than the named one")
		}
	})
}

func genAttachmentVectors(t *testing.T, w *vectorWriter) {
	w.comment("Attachment (PROTOCOL.md §9): age encryption to a fresh X25519 identity;")
	w.comment("digest = BLAKE2b-256(ciphertext); size = ciphertext length.")
	pt := []byte(strings.Repeat("attachment bytes ", 8))
	key, digest, ct := encryptForTest(t, pt)
	if _, err := DecryptAttachment(io.Discard, bytes.NewReader(ct), key, digest); err != nil {
		t.Fatal(err)
	}
	w.text("key", string(key.Bytes()))
	w.hex("plaintext", pt)
	w.hex("ciphertext", ct)
	w.hex("digest", digest[:])
	w.num("size", uint64(len(ct)))
	w.text("expect", "success")
	w.end()
}

// ageEncryptToKey encrypts a new file to an attachment key, as someone who
// learned the key could.
func ageEncryptToKey(dst io.Writer, k *AttachmentKey) (io.WriteCloser, error) {
	return age.Encrypt(dst, k.id.Recipient())
}

// TestStreamHash checks that the asynchronous digest equals the one-shot
// hash for sizes around its thresholds and for any write sizes, and that
// finish may be called again.
func TestStreamHash(t *testing.T) {
	data := make([]byte, 3*streamHashBufferSize*streamHashBuffers+streamHashInline+99)
	for i := range data {
		data[i] = byte(i * 7)
	}
	sizes := []int{0, 1, streamHashInline - 1, streamHashInline, streamHashInline + 1,
		streamHashInline + streamHashBufferSize, streamHashInline + streamHashBufferSize + 1,
		streamHashInline + streamHashBuffers*streamHashBufferSize*2 + 5, len(data)}
	for _, n := range sizes {
		want := blake2b.Sum256(data[:n])
		for _, step := range []int{1 << 20, 65552, 4096, 333} {
			for _, async := range []bool{false, true} {
				if step < 4096 && n > 2*streamHashInline {
					continue // slow and adds nothing
				}
				s := newStreamHash(attachmentHashing{newHash: newAttachmentHash, async: async})
				for p := data[:n]; len(p) > 0; {
					k := min(step, len(p))
					chunk := bytes.Clone(p[:k])
					if _, err := s.Write(chunk); err != nil {
						t.Fatal(err)
					}
					clear(chunk) // the caller may reuse its buffer at once
					p = p[k:]
				}
				var got [AttachmentDigestSize]byte
				s.sum(&got)
				s.finish()
				if got != want || s.n != int64(n) {
					t.Fatalf("n=%d step=%d async=%v: wrong digest or count", n, step, async)
				}
			}
		}
	}
}

// TestAttachmentNoGoroutineLeak checks that the hashing goroutine ends on
// the error paths of both directions.
func TestAttachmentNoGoroutineLeak(t *testing.T) {
	boom := errors.New("disk on fire")
	before := runtime.NumGoroutine()
	big := io.LimitReader(zeroReader{}, 4*streamHashInline)
	if _, _, _, err := EncryptAttachment(io.Discard, io.MultiReader(big, failingIO{boom})); !errors.Is(err, boom) {
		t.Fatal(err)
	}
	key, digest, ct := encryptForTest(t, make([]byte, 4*streamHashInline))
	if _, err := DecryptAttachment(io.Discard, io.MultiReader(bytes.NewReader(ct[:len(ct)/2]), failingIO{boom}), key, digest); !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if _, err := DecryptAttachment(failingIO{boom}, bytes.NewReader(ct), key, digest); !errors.Is(err, boom) {
		t.Fatal(err)
	}
	for range 100 {
		if runtime.NumGoroutine() <= before {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%d goroutines before, %d after", before, runtime.NumGoroutine())
}

// BenchmarkAttachmentDigest compares the ways of computing the digest
// that were considered (PROTOCOL.md §9 chose BLAKE2b-256, asynchronous):
// SHA-256 or BLAKE2b-256, on the caller's goroutine (inline) or on a
// second one (async). Same workload as BenchmarkAttachment.
func BenchmarkAttachmentDigest(b *testing.B) {
	pt := bytes.Repeat([]byte{3}, 1<<20)
	newSHA256 := func() hash.Hash { return sha256.New() }
	for _, v := range []struct {
		name string
		o    attachmentHashing
	}{
		{"sha256-inline", attachmentHashing{newHash: newSHA256}},
		{"sha256-async", attachmentHashing{newHash: newSHA256, async: true}},
		{"blake2b-inline", attachmentHashing{newHash: newAttachmentHash}},
		{"blake2b-async", attachmentHashing{newHash: newAttachmentHash, async: true}},
	} {
		b.Run(v.name+"/1MiB", func(b *testing.B) {
			var ct bytes.Buffer
			ct.Grow(len(pt) + 1<<10)
			b.ReportAllocs()
			b.SetBytes(int64(len(pt)))
			defer cpuMeter(b)()
			for b.Loop() {
				ct.Reset()
				key, digest, _, err := encryptAttachment(&ct, bytes.NewReader(pt), v.o)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := decryptAttachment(io.Discard, bytes.NewReader(ct.Bytes()), key, digest, v.o); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
