package crypto

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"hash"
	"io"

	"filippo.io/age"
	"golang.org/x/crypto/blake2b"
)

// Attachments (PROTOCOL.md §9).
//
// An attachment is encrypted on the sending device with age to a fresh
// X25519 identity made for that one file, and uploaded as an opaque blob.
// The message that refers to it carries the blob ID, the identity (the
// AttachmentKey), the ciphertext size and the BLAKE2b-256 digest of the
// ciphertext. age's STREAM construction authenticates every 64 KiB chunk
// under the file key, so the decryptor never releases unauthenticated
// plaintext; the digest additionally binds the exact ciphertext the message
// named, so that no one else who learns the key (for example another group
// member) can substitute a different file under the same blob ID.
//
// Data flows through io.Reader and io.Writer in chunks; a file is never
// held whole in memory. Attachments are not padded: the blob size shows
// the file size to within a few bytes (a non-goal, §11).

// Specification constants of attachments (PROTOCOL.md §9).
const (
	// AttachmentDigestSize is the size of an attachment digest
	// (BLAKE2b-256).
	AttachmentDigestSize = blake2b.Size256
)

// AttachmentKey is the age X25519 identity of one attachment. It is
// secret: it travels only inside end-to-end encrypted messages.
type AttachmentKey struct {
	_  [0]func()
	id *age.X25519Identity
}

// ParseAttachmentKey parses the text form returned by
// [AttachmentKey.Bytes]: an age identity, "AGE-SECRET-KEY-1" followed by
// Bech32 data. The error never quotes the input.
func ParseAttachmentKey(b []byte) (*AttachmentKey, error) {
	id, err := age.ParseX25519Identity(string(b))
	if err != nil {
		return nil, malformed("attachment key")
	}
	return &AttachmentKey{id: id}, nil
}

// Bytes returns the key's text form (an age identity string). It must be
// kept secret.
func (k *AttachmentKey) Bytes() []byte { return []byte(k.id.String()) }

// String never prints key material.
func (k *AttachmentKey) String() string { return "AttachmentKey(<redacted>)" }

// attachmentHashing is how the attachment digest is computed: the hash
// function, and whether it runs on a goroutine of its own. Only
// benchmarks choose anything but defaultAttachmentHashing, to compare.
type attachmentHashing struct {
	newHash func() hash.Hash
	async   bool
}

// defaultAttachmentHashing is PROTOCOL.md §9's digest, BLAKE2b-256,
// hashed alongside the encryption on a second goroutine.
var defaultAttachmentHashing = attachmentHashing{newHash: newAttachmentHash, async: true}

// newAttachmentHash returns unkeyed BLAKE2b-256 (RFC 7693). BLAKE2b is
// used instead of SHA-256 because x/crypto has vector assembly for it:
// on CPUs without SHA extensions it hashes 2.5 times faster, and the
// digest of the ciphertext dominated the cost of an attachment.
func newAttachmentHash() hash.Hash {
	h, err := blake2b.New256(nil)
	if err != nil {
		panic("crypto: BLAKE2b: " + err.Error()) // only for keys over 64 bytes
	}
	return h
}

// Buffers of the asynchronous digest: up to streamHashInline bytes are
// hashed on the caller's goroutine (a small file is not worth a second
// one); after that, writes are copied into streamHashBuffers buffers of
// streamHashBufferSize bytes each, which a goroutine hashes while the
// caller encrypts or decrypts the next chunks.
const (
	streamHashInline     = 128 << 10
	streamHashBufferSize = 64 << 10
	streamHashBuffers    = 4
)

// streamHash hashes and counts what is written to it, on the caller's
// goroutine or (async, beyond streamHashInline bytes) on a goroutine of
// its own. Write copies the bytes, so the caller may reuse them at once.
// The owner must call finish (it is idempotent), also on error paths, so
// that the goroutine ends.
type streamHash struct {
	h     hash.Hash
	async bool
	n     int64

	buf      []byte      // being filled
	made     int         // buffers allocated
	work     chan []byte // full buffers to the hashing goroutine; nil until it starts
	free     chan []byte // hashed buffers back
	done     chan struct{}
	finished bool
}

func newStreamHash(o attachmentHashing) *streamHash {
	return &streamHash{h: o.newHash(), async: o.async}
}

func (s *streamHash) Write(p []byte) (int, error) {
	n := len(p)
	s.n += int64(n)
	if s.work == nil {
		if !s.async || s.n <= streamHashInline {
			return s.h.Write(p)
		}
		s.start()
	}
	for len(p) > 0 {
		if s.buf == nil {
			s.buf = s.freeBuffer()
		}
		k := copy(s.buf[len(s.buf):cap(s.buf)], p)
		s.buf = s.buf[:len(s.buf)+k]
		p = p[k:]
		if len(s.buf) == cap(s.buf) {
			s.work <- s.buf
			s.buf = nil
		}
	}
	return n, nil
}

// start starts the hashing goroutine. Everything written so far went into
// s.h on this goroutine, before the go statement: the goroutine sees it.
func (s *streamHash) start() {
	s.work = make(chan []byte, streamHashBuffers)
	s.free = make(chan []byte, streamHashBuffers)
	s.done = make(chan struct{})
	go func(h hash.Hash, work <-chan []byte, free chan<- []byte, done chan<- struct{}) {
		defer close(done)
		for b := range work {
			h.Write(b)
			free <- b[:0]
		}
	}(s.h, s.work, s.free, s.done)
}

func (s *streamHash) freeBuffer() []byte {
	if s.made < streamHashBuffers {
		s.made++
		return make([]byte, 0, streamHashBufferSize)
	}
	return <-s.free
}

// finish hashes what is buffered and waits for the hashing goroutine to
// end. After it, s.h holds the digest of everything written.
func (s *streamHash) finish() {
	if s.finished {
		return
	}
	s.finished = true
	if s.work == nil {
		return
	}
	if len(s.buf) > 0 {
		s.work <- s.buf
		s.buf = nil
	}
	close(s.work)
	<-s.done
}

// sum finishes and writes the digest into out.
func (s *streamHash) sum(out *[AttachmentDigestSize]byte) {
	s.finish()
	s.h.Sum(out[:0])
}

// EncryptAttachment reads src to its end and writes its age encryption to a
// fresh X25519 identity into dst (PROTOCOL.md §9). It returns the new key,
// the BLAKE2b-256 digest of the ciphertext and the ciphertext size, all
// computed while streaming. The key must be kept secret; the digest and
// size are sent beside it in the message.
func EncryptAttachment(dst io.Writer, src io.Reader) (*AttachmentKey, [AttachmentDigestSize]byte, int64, error) {
	return encryptAttachment(dst, src, defaultAttachmentHashing)
}

func encryptAttachment(dst io.Writer, src io.Reader, o attachmentHashing) (*AttachmentKey, [AttachmentDigestSize]byte, int64, error) {
	var digest [AttachmentDigestSize]byte
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return nil, digest, 0, fmt.Errorf("crypto: attachment: %w", err)
	}
	sum := newStreamHash(o)
	defer sum.finish()
	w, err := age.Encrypt(io.MultiWriter(dst, sum), id.Recipient())
	if err != nil {
		return nil, digest, 0, fmt.Errorf("crypto: attachment: %w", err)
	}
	if _, err := io.Copy(w, src); err != nil {
		return nil, digest, 0, fmt.Errorf("crypto: attachment: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, digest, 0, fmt.Errorf("crypto: attachment: %w", err)
	}
	sum.sum(&digest)
	return &AttachmentKey{id: id}, digest, sum.n, nil
}

// DecryptAttachment reads an encrypted attachment from src to its end and
// writes the plaintext into dst (PROTOCOL.md §9). It returns the number of
// plaintext bytes written.
//
// Every chunk written to dst has been authenticated by age under key, but
// the digest of the whole ciphertext can only be checked at the end: if it
// differs from digest, or the ciphertext fails to authenticate at any
// point, DecryptAttachment returns [ErrDecrypt] and the caller MUST
// discard everything written to dst (write to a temporary file and rename
// it into place only on success). A key that is not the file's also gives
// [ErrDecrypt]. Read errors from src are returned wrapped.
func DecryptAttachment(dst io.Writer, src io.Reader, key *AttachmentKey, digest [AttachmentDigestSize]byte) (int64, error) {
	return decryptAttachment(dst, src, key, digest, defaultAttachmentHashing)
}

func decryptAttachment(dst io.Writer, src io.Reader, key *AttachmentKey, digest [AttachmentDigestSize]byte, o attachmentHashing) (int64, error) {
	if key == nil {
		return 0, errors.New("crypto: attachment: missing key")
	}
	sum := newStreamHash(o)
	defer sum.finish()
	tee := &ioErrTracker{r: io.TeeReader(src, sum)}
	out := &ioErrTracker{w: dst}
	r, err := age.Decrypt(tee, key.id)
	if err != nil {
		return 0, attachmentError(tee, out)
	}
	n, err := io.Copy(out, r)
	if err != nil {
		return n, attachmentError(tee, out)
	}
	// age stops at the final chunk; hash anything after it so that trailing
	// bytes also change the digest.
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return n, attachmentError(tee, out)
	}
	var got [AttachmentDigestSize]byte
	sum.sum(&got)
	if subtle.ConstantTimeCompare(got[:], digest[:]) != 1 {
		return n, ErrDecrypt
	}
	return n, nil
}

// ioErrTracker remembers an error of the underlying reader or writer, so
// that I/O failures are reported as such and not as ErrDecrypt.
type ioErrTracker struct {
	r   io.Reader
	w   io.Writer
	err error
}

func (t *ioErrTracker) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF {
		t.err = err
	}
	return n, err
}

func (t *ioErrTracker) Write(p []byte) (int, error) {
	n, err := t.w.Write(p)
	if err != nil {
		t.err = err
	}
	return n, err
}

func attachmentError(src, dst *ioErrTracker) error {
	if src.err != nil {
		return fmt.Errorf("crypto: attachment: reading ciphertext: %w", src.err)
	}
	if dst.err != nil {
		return fmt.Errorf("crypto: attachment: writing plaintext: %w", dst.err)
	}
	return ErrDecrypt
}
