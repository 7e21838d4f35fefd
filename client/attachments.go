package client

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/sotto-im/sotto/crypto"
)

// MaxAttachmentSize bounds an attachment's plaintext (the relay refuses
// larger blobs anyway; this fails early).
const MaxAttachmentSize = 100 << 20

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// UploadAttachment encrypts r (to its end) with a fresh age identity and
// uploads the ciphertext to the relay as a blob. The file is streamed: the
// ciphertext goes to a temporary file (it is encrypted, so the temporary
// file reveals only its size) and from there to the relay, so memory use
// does not grow with the file. The returned Attachment, which holds the
// decryption key and must be kept secret, is then sent in a message with
// Draft.WithAttachment.
func (c *Client) UploadAttachment(ctx context.Context, r io.Reader, contentType, fileName string) (Attachment, error) {
	tmp, err := os.CreateTemp("", "sotto-attachment-*")
	if err != nil {
		return Attachment{}, wrap("attachment", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	src := &countingReader{r: io.LimitReader(r, MaxAttachmentSize+1)}
	key, digest, size, err := crypto.EncryptAttachment(tmp, src)
	if err != nil {
		return Attachment{}, wrap("attachment", err)
	}
	if src.n > MaxAttachmentSize {
		return Attachment{}, ErrTooLarge
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return Attachment{}, wrap("attachment", err)
	}
	tok, err := c.ks.token(ctx, c.Address(), c.id.ik, c.now)
	if err != nil {
		return Attachment{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(c.opts.RelayURL, "/")+"/v1/blobs", tmp)
	if err != nil {
		return Attachment{}, err
	}
	req.ContentLength = size
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.opts.HTTPClient.Do(req)
	if err != nil {
		return Attachment{}, wrap("upload attachment", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return Attachment{}, &APIError{Status: resp.StatusCode, Code: "upload"}
	}
	var res struct {
		ID string `json:"id"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&res); err != nil {
		return Attachment{}, wrap("upload attachment", err)
	}
	id, err := base64.RawURLEncoding.DecodeString(res.ID)
	if err != nil || len(id) != 16 {
		return Attachment{}, errors.New("client: upload attachment: bad blob ID")
	}
	a := Attachment{Identity: string(key.Bytes()), Size: uint64(src.n), Digest: digest, ContentType: contentType, FileName: fileName}
	copy(a.BlobID[:], id)
	return a, nil
}

// DownloadAttachment downloads an attachment and writes its plaintext to w,
// streaming. Every chunk written has been authenticated, but the digest of
// the whole blob is checked only at the end: if DownloadAttachment returns
// an error (crypto.ErrDecrypt for a wrong or tampered blob), the caller
// must discard what was written (write to a temporary file and rename it
// on success).
func (c *Client) DownloadAttachment(ctx context.Context, a Attachment, w io.Writer) error {
	key, err := crypto.ParseAttachmentKey([]byte(a.Identity))
	if err != nil {
		return wrap("attachment key", err)
	}
	u := strings.TrimRight(c.opts.RelayURL, "/") + "/v1/blobs/" + base64.RawURLEncoding.EncodeToString(a.BlobID[:])
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.opts.HTTPClient.Do(req)
	if err != nil {
		return wrap("download attachment", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return &APIError{Status: resp.StatusCode, Code: "download"}
	}
	n, err := crypto.DecryptAttachment(w, resp.Body, key, a.Digest)
	if err != nil {
		return wrap("download attachment", err)
	}
	if uint64(n) != a.Size {
		return fmt.Errorf("client: attachment is %d bytes, the message said %d: %w", n, a.Size, crypto.ErrDecrypt)
	}
	return nil
}
