package client

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/sotto-im/sotto/client/internal/content"
	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/crypto"
)

const (
	storeOneTimeEC = store.OneTimeEC
	storeKEM       = store.KEM
	// receiptDelay is how long delivery receipts are gathered before they
	// are sent, so that a burst of messages is acknowledged by one receipt.
	receiptDelay = 250 * time.Millisecond
)

func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }

// receipts gathers delivery receipts per author.
type receipts struct {
	mu      sync.Mutex
	pending map[crypto.AccountID][][16]byte
	timer   *time.Timer
}

// queueReceipt schedules a delivery receipt for message id from author.
func (c *Client) queueReceipt(author crypto.AccountID, id [16]byte) {
	r := &c.receipts
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending == nil {
		r.pending = map[crypto.AccountID][][16]byte{}
	}
	r.pending[author] = append(r.pending[author], id)
	if r.timer == nil {
		r.timer = time.AfterFunc(receiptDelay, c.flushReceipts)
	}
}

// flushReceipts sends the gathered delivery receipts through the outbox.
func (c *Client) flushReceipts() {
	r := &c.receipts
	r.mu.Lock()
	pending := r.pending
	r.pending, r.timer = nil, nil
	r.mu.Unlock()
	if c.ctx.Err() != nil {
		return
	}
	for author, ids := range pending {
		for len(ids) > 0 {
			n := min(len(ids), receiptBatch)
			m := &content.Message{Kind: content.KindReceipt, Receipt: &content.Receipt{Type: content.ReceiptDelivered, IDs: ids[:n]}}
			ids = ids[n:]
			if err := c.sendTo(c.ctx, directConversation(author), author, m); err != nil {
				c.log.Debug("client: delivery receipt not queued", "err", err)
			}
		}
	}
}

// receiptBatch bounds the IDs of one receipt so that it fits one padded
// plaintext (16 bytes per ID, maxPlaintext 2 KiB).
const receiptBatch = 100

// senderCert returns a sender certificate valid for a while, fetching a new
// one from the key server when the cached one is close to expiry.
func (c *Client) senderCert(ctx context.Context) (*crypto.SenderCertificate, error) {
	c.certMu.Lock()
	defer c.certMu.Unlock()
	if c.cert != nil && c.cert.Expires.Sub(c.now()) > time.Hour {
		return c.cert, nil
	}
	raw, err := c.ks.senderCertificate(ctx, c.Address(), c.id.ik, c.now)
	if err != nil {
		return nil, err
	}
	cert, err := crypto.ParseSenderCertificate(raw, c.opts.TrustRoots, c.now())
	if err != nil {
		return nil, wrap("sender certificate", err)
	}
	if cert.Sender != c.Address() || !cert.Identity.Equal(c.id.ik.Public()) {
		return nil, errors.New("client: the key server issued a certificate for another device")
	}
	c.cert = cert
	return cert, nil
}
