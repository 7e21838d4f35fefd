package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/sotto-im/sotto/client/internal/content"
	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/relay/wire"
)

// The outbox (PROTOCOL of the client, not of the wire):
//
//	Send ──► history (pending) + outbox record ──► runOutbox ──► deliver ──► relay
//	                                                   ▲   │ failure: backoff with jitter
//	                                                   └───┘
//
// A message is in the outbox from before Send returns until the relay has
// accepted it for every recipient device; then the record is deleted and
// the history status moves to Sent. The relay de-duplicates by message ID,
// so a retry after an answer was lost stores nothing twice. Each attempt
// encrypts afresh (a ratchet message that was never delivered only leaves
// a skipped key at the recipient).

// outboxRecord is one message waiting to be sent.
type outboxRecord struct {
	V       int                `json:"v"`
	ID      [16]byte           `json:"id"`
	Conv    ConversationID     `json:"conv"`
	To      []crypto.AccountID `json:"to"`
	Content []byte             `json:"content"`         // encoded content.Message
	Track   bool               `json:"track,omitempty"` // update the history status
	Sync    bool               `json:"sync,omitempty"`  // send a transcript to own devices
	Group   bool               `json:"group,omitempty"` // a group message: sender key, multi-recipient
	// RelayID, if set, is the relay-level message ID (a resent message
	// keeps its ID but needs a new one at the relay, which remembers
	// acknowledged IDs for de-duplication).
	RelayID   [16]byte `json:"relay_id,omitzero"`
	Attempts  int      `json:"attempts,omitempty"`
	Ephemeral bool     `json:"-"`
}

func (c *Client) recipients(ctx context.Context, cr *convRecord) ([]crypto.AccountID, error) {
	if !cr.IsGroup {
		r, err := c.loadContact(ctx, cr.Peer)
		if err != nil {
			return nil, err
		}
		if r.Blocked {
			return nil, ErrBlocked
		}
		return []crypto.AccountID{cr.Peer}, nil
	}
	g, err := c.loadGroup(ctx, cr.Group)
	if err != nil {
		return nil, err
	}
	var out []crypto.AccountID
	for _, m := range g.Members {
		if m.Account != c.id.account {
			out = append(out, m.Account)
		}
	}
	return out, nil
}

// enqueue places a message for a conversation in the outbox.
func (c *Client) enqueue(ctx context.Context, conv ConversationID, cr *convRecord, m *content.Message, track bool) error {
	to, err := c.recipients(ctx, cr)
	if err != nil {
		return err
	}
	return c.enqueueRec(ctx, conv, to, m, track, true, [16]byte{}, cr.IsGroup)
}

func (c *Client) enqueueTo(ctx context.Context, conv ConversationID, to []crypto.AccountID, m *content.Message, track, sync bool) error {
	return c.enqueueRelay(ctx, conv, to, m, track, sync, [16]byte{})
}

func (c *Client) enqueueRelay(ctx context.Context, conv ConversationID, to []crypto.AccountID, m *content.Message, track, sync bool, relayID [16]byte) error {
	return c.enqueueRec(ctx, conv, to, m, track, sync, relayID, false)
}

func (c *Client) enqueueRec(ctx context.Context, conv ConversationID, to []crypto.AccountID, m *content.Message, track, sync bool, relayID [16]byte, group bool) error {
	if m.Kind != content.KindReceipt && m.Kind != content.KindResendRequest && m.Kind != content.KindProfile {
		m.AccessKey = c.id.accessKey
	}
	if m.Kind == content.KindReceipt {
		m.AccessKey = c.id.accessKey
	}
	b, err := m.Marshal()
	if err != nil {
		return wrap("encode message", err)
	}
	if crypto.PaddedSize(len(b)) > maxPlaintext {
		return ErrTooLarge
	}
	rec := &outboxRecord{V: recordVersion, ID: m.ID, Conv: conv, To: to, Content: b, Track: track, Sync: sync, RelayID: relayID, Group: group}
	raw, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	key := m.ID
	if relayID != ([16]byte{}) {
		key = relayID
	}
	if err := c.st.PutOutbox(ctx, key, raw); err != nil {
		return wrap("outbox", err)
	}
	select {
	case c.kick <- struct{}{}:
	default:
	}
	return nil
}

// maxPlaintext bounds a padded plaintext so that its sealed prekey message
// fits a relay header (wire.MaxHeaderSize): 4096 minus the KEM ciphertext,
// the ratchet and sealed-sender overheads and the sender certificate.
const maxPlaintext = 2048

// runOutbox sends the outbox in order, forever, backing off after failures.
func (c *Client) runOutbox() {
	defer c.wg.Done()
	backoff := time.Duration(0)
	for {
		if backoff > 0 {
			// Full jitter: a random wait in [backoff/2, backoff).
			wait := backoff/2 + rand.N(backoff/2+1)
			select {
			case <-c.ctx.Done():
				return
			case <-time.After(wait):
			case <-c.kick:
				// A new message or a new relay connection: try now.
			}
		}
		err := c.flushOutbox(c.ctx)
		if c.ctx.Err() != nil {
			return
		}
		if err != nil {
			c.log.Debug("client: outbox attempt failed", "err", err)
			backoff = min(max(2*backoff, outboxMinBackoff), outboxMaxBackoff)
			continue
		}
		backoff = 0
		select {
		case <-c.ctx.Done():
			return
		case <-c.kick:
		case <-c.refill:
			if err := c.maintainPreKeys(c.ctx); err != nil {
				c.log.Debug("client: prekey maintenance failed", "err", err)
			}
		}
	}
}

// flushOutbox sends every outbox entry in order; it stops at the first
// failure so that messages are accepted in the order they were sent.
func (c *Client) flushOutbox(ctx context.Context) error {
	type entry struct {
		id  [16]byte
		raw []byte
	}
	var entries []entry
	if err := c.st.ListOutbox(ctx, func(id [16]byte, rec []byte) error {
		entries = append(entries, entry{id, rec})
		return nil
	}); err != nil {
		return wrap("list outbox", err)
	}
	for _, e := range entries {
		if _, busy := c.finalizing.Load(e.id); busy {
			continue
		}
		var rec outboxRecord
		if err := json.Unmarshal(e.raw, &rec); err != nil {
			c.log.Error("client: dropping unreadable outbox entry", "err", err)
			c.st.DeleteOutbox(ctx, e.id)
			continue
		}
		m, err := content.Parse(rec.Content)
		if err != nil {
			c.st.DeleteOutbox(ctx, e.id)
			continue
		}
		err = c.deliver(ctx, &rec, m)
		var perm *permanentError
		if errors.As(err, &perm) {
			c.log.Warn("client: message refused for good", "err", err)
		} else if err != nil {
			return err
		}
		c.finalize(ctx, e.id, rec, perm == nil)
	}
	return nil
}

// maxFinalizing bounds the accepted messages whose outbox entry and status
// are being written in the background.
const maxFinalizing = 64

// finalize deletes an accepted message's outbox entry and marks it sent,
// in the background: these writes need not delay the next send (and
// concurrent synced writes share a commit). Until it is done the entry is
// skipped by flushOutbox; a crash before it is done only resends the
// message under the same ID, which the relay drops as a duplicate.
func (c *Client) finalize(ctx context.Context, id [16]byte, rec outboxRecord, sent bool) {
	c.finalizing.Store(id, true)
	c.finalSem <- struct{}{}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer func() { <-c.finalSem }()
		defer c.finalizing.Delete(id)
		if err := c.st.DeleteOutbox(ctx, id); err != nil {
			c.log.Debug("client: outbox entry not deleted", "err", err)
			return
		}
		if rec.Track && sent {
			c.setStatus(ctx, rec.Conv, rec.ID, StatusSent)
		}
	}()
}

// permanentError is a refusal that retrying cannot fix (410, 400, 413).
type permanentError struct{ status int }

func (e *permanentError) Error() string {
	return fmt.Sprintf("client: relay refused the message (%d)", e.status)
}

// setStatus moves an outgoing message's status forward and reports it.
func (c *Client) setStatus(ctx context.Context, conv ConversationID, id [16]byte, s Status) {
	sm, err := c.getMessage(ctx, conv, id)
	if err != nil || !sm.Outgoing || sm.Status >= s {
		return
	}
	sm.Status = s
	if c.putMessage(ctx, conv, id, sm) == nil {
		c.emit(UpdateEvent{Message: sm.public(conv, id)})
	}
}

// maxDeviceRetries bounds the 409 refresh-and-retry rounds of one attempt.
const maxDeviceRetries = 3

// deliver encrypts m for every device of the recipients (and a transcript
// for this account's other devices) and sends it to the relay. On 409 it
// refreshes the device lists named and tries again.
func (c *Client) deliver(ctx context.Context, rec *outboxRecord, m *content.Message) error {
	cert, err := c.senderCert(ctx)
	if err != nil {
		return err
	}
	if rec.Group {
		if err := c.deliverGroup(ctx, rec, cert); err != nil {
			return err
		}
		return c.deliverTranscript(ctx, rec, m, cert)
	}
	for round := 0; ; round++ {
		send, err := c.buildSend(ctx, rec, m, cert, false)
		if err != nil {
			return err
		}
		res, err := c.postSend(ctx, send)
		if err != nil {
			return err
		}
		switch {
		case res.Status == http.StatusOK:
		case res.Status == http.StatusConflict && round < maxDeviceRetries:
			if err := c.refreshNamed(ctx, res); err != nil {
				return err
			}
			continue
		case res.Status == http.StatusUnauthorized && send.Sealed && round < maxDeviceRetries:
			// A stale access key: forget it and send identified.
			for _, a := range rec.To {
				if r, err := c.loadContact(ctx, a); err == nil {
					r.AccessKey = nil
					c.saveContact(ctx, r)
				}
			}
			continue
		case res.Status == http.StatusGone || res.Status == http.StatusBadRequest || res.Status == http.StatusRequestEntityTooLarge:
			return &permanentError{int(res.Status)}
		default:
			return fmt.Errorf("client: relay answered %d %s", res.Status, res.Code)
		}
		break
	}
	return c.deliverTranscript(ctx, rec, m, cert)
}

// deliverTranscript sends this account's other devices a transcript of a
// message it sent.
func (c *Client) deliverTranscript(ctx context.Context, rec *outboxRecord, m *content.Message, cert *crypto.SenderCertificate) error {
	if !rec.Sync || rec.Ephemeral {
		return nil
	}
	// The transcript for this account's other devices goes as an
	// identified send: the relay lets an identified sender leave out its
	// own sending device, which a sealed send cannot.
	for round := 0; ; round++ {
		send, err := c.buildSend(ctx, rec, m, cert, true)
		if err != nil || send == nil {
			return err
		}
		res, err := c.postSend(ctx, send)
		if err != nil {
			return err
		}
		switch {
		case res.Status == http.StatusOK:
			return nil
		case res.Status == http.StatusConflict && round < maxDeviceRetries:
			if err := c.refreshOwnDevices(ctx); err != nil {
				return err
			}
		default:
			return fmt.Errorf("client: relay answered %d %s to a transcript", res.Status, res.Code)
		}
	}
}

// buildSend builds the relay request: one sealed envelope per device.
// With own set it builds the transcript for this account's other devices
// (nil if there are none).
func (c *Client) buildSend(ctx context.Context, rec *outboxRecord, m *content.Message, cert *crypto.SenderCertificate, own bool) (*wire.Send, error) {
	send := &wire.Send{ID: rec.ID, Ephemeral: rec.Ephemeral}
	if rec.RelayID != ([16]byte{}) {
		send.ID = rec.RelayID
	}
	if own {
		nested, _ := m.Marshal()
		dest := &content.Destination{Account: rec.To[0]}
		if m.Group != ([16]byte{}) {
			dest = &content.Destination{Group: m.Group}
		}
		t := &content.Message{Kind: content.KindTranscript, ID: m.ID, Sent: m.Sent, Destination: dest, Nested: nested}
		pt, err := t.Marshal()
		if err != nil {
			return nil, wrap("encode transcript", err)
		}
		c.idMu.Lock()
		signed := c.id.deviceList
		c.idMu.Unlock()
		l, err := crypto.VerifyDeviceList(signed, c.id.account)
		if err != nil {
			return nil, wrap("own device list", err)
		}
		acct := wire.SendAccount{Account: c.id.account}
		for _, d := range l.Devices {
			if d.ID == c.id.device {
				continue
			}
			env, err := c.encryptDevice(ctx, crypto.Address{Account: c.id.account, Device: d.ID}, d.Identity, l, crypto.Pad(pt), cert)
			if err != nil {
				return nil, err
			}
			acct.Devices = append(acct.Devices, wire.SendDevice{Device: uint32(d.ID), Header: env})
		}
		if len(acct.Devices) == 0 {
			return nil, nil
		}
		send.Accounts = []wire.SendAccount{acct}
		return send, nil
	}
	padded := crypto.Pad(rec.Content)
	send.Sealed = true
	for _, a := range rec.To {
		r, err := c.loadContact(ctx, a)
		if errors.Is(err, ErrUnknownContact) {
			// A fellow group member this account has not talked to.
			r, err = c.addAccount(ctx, a)
		}
		if err != nil {
			return nil, err
		}
		l, err := r.list()
		if err != nil {
			return nil, err
		}
		if l == nil {
			if l, err = c.refreshDevices(ctx, r); err != nil {
				return nil, err
			}
		}
		acct := wire.SendAccount{Account: a}
		if len(r.AccessKey) == 32 {
			copy(acct.AccessKey[:], r.AccessKey)
		} else {
			send.Sealed = false
		}
		for _, d := range l.Devices {
			env, err := c.encryptDevice(ctx, crypto.Address{Account: a, Device: d.ID}, d.Identity, l, padded, cert)
			if err != nil {
				return nil, err
			}
			acct.Devices = append(acct.Devices, wire.SendDevice{Device: uint32(d.ID), Header: env})
		}
		send.Accounts = append(send.Accounts, acct)
	}
	return send, nil
}

// encryptDevice encrypts for one device, fetching its bundle and starting a
// session when there is none.
func (c *Client) encryptDevice(ctx context.Context, addr crypto.Address, ik crypto.IdentityKey, l *crypto.DeviceList, padded []byte, cert *crypto.SenderCertificate) ([]byte, error) {
	env, err := c.encryptTo(ctx, addr, ik, nil, padded, cert)
	if !errors.Is(err, errNeedBundle) {
		return env, err
	}
	bundle, err := c.ks.bundle(ctx, addr)
	if err != nil {
		return nil, err
	}
	if err := bundle.VerifyAgainst(l); err != nil {
		return nil, wrap("bundle of "+addr.String(), err)
	}
	return c.encryptTo(ctx, addr, ik, bundle, padded, cert)
}

// refreshNamed refreshes the device lists of the accounts a 409 names.
func (c *Client) refreshNamed(ctx context.Context, res *wire.SendResult) error {
	done := map[crypto.AccountID]bool{}
	for _, d := range append(res.Missing, res.Extra...) {
		a := crypto.AccountID(d.Account)
		if done[a] {
			continue
		}
		done[a] = true
		if a == c.id.account {
			if err := c.refreshOwnDevices(ctx); err != nil {
				return err
			}
			continue
		}
		r, err := c.loadContact(ctx, a)
		if err != nil {
			return err
		}
		if _, err := c.refreshDevices(ctx, r); err != nil {
			return err
		}
	}
	return nil
}

// refreshOwnDevices fetches this account's device list.
func (c *Client) refreshOwnDevices(ctx context.Context) error {
	signed, err := c.ks.deviceList(ctx, c.id.account)
	if err != nil {
		return err
	}
	l, err := crypto.VerifyDeviceList(signed, c.id.account)
	if err != nil {
		return wrap("own device list", err)
	}
	c.idMu.Lock()
	defer c.idMu.Unlock()
	old, err := crypto.VerifyDeviceList(c.id.deviceList, c.id.account)
	if err == nil && old.Version >= l.Version {
		return nil
	}
	c.id.deviceList = signed
	if err := c.saveIdentity(ctx); err != nil {
		return err
	}
	var ids []crypto.DeviceID
	for _, d := range l.Devices {
		ids = append(ids, d.ID)
	}
	go c.emit(DeviceEvent{Devices: ids})
	return nil
}
