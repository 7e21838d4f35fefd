package crypto

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"hash"
	"io"

	"filippo.io/age"
)

// Attachments (PROTOCOL.md §9).
//
// An attachment is encrypted on the sending device with age to a fresh
// X25519 identity made for that one file, and uploaded as an opaque blob.
// The message that refers to it carries the blob ID, the identity (the
// AttachmentKey), the ciphertext size and the SHA-256 digest of the
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
	// AttachmentDigestSize is the size of an attachment digest.
	AttachmentDigestSize = sha256.Size
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

// countingHash hashes and counts what is written to it.
type countingHash struct {
	h hash.Hash
	n int64
}

func (c *countingHash) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.h.Write(p)
}

// EncryptAttachment reads src to its end and writes its age encryption to a
// fresh X25519 identity into dst (PROTOCOL.md §9). It returns the new key,
// the SHA-256 of the ciphertext and the ciphertext size, all computed
// while streaming. The key must be kept secret; the digest and size are
// sent beside it in the message.
func EncryptAttachment(dst io.Writer, src io.Reader) (*AttachmentKey, [AttachmentDigestSize]byte, int64, error) {
	var digest [AttachmentDigestSize]byte
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return nil, digest, 0, fmt.Errorf("crypto: attachment: %w", err)
	}
	sum := &countingHash{h: sha256.New()}
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
	sum.h.Sum(digest[:0])
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
	if key == nil {
		return 0, errors.New("crypto: attachment: missing key")
	}
	sum := &countingHash{h: sha256.New()}
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
	sum.h.Sum(got[:0])
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
