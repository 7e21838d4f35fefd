package client

import (
	"context"
	"errors"

	"github.com/sotto-im/sotto/client/internal/content"
	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/crypto"
)

// handleDelivery processes one message from the relay and emits its
// events. It returns an error only for a local failure (the store), in
// which case the message must not be acknowledged; anything wrong with the
// message itself is logged and the message dropped, so that a hostile
// sender cannot wedge the queue. Its writes are durable when it returns
// unless ctx came from store.Deferred (then the caller syncs).
func (c *Client) handleDelivery(ctx context.Context, relayID [16]byte, header, body []byte, ephemeral bool) error {
	evs, err := c.receive(ctx, relayID, header, body, ephemeral)
	for _, ev := range evs {
		c.emit(ev)
	}
	return err
}

// sync makes the writes made under a store.Deferred context durable: one
// Sync of the store, or nothing for a store that does not implement
// store.Syncer (its writes are durable on return). Callers sync before
// anything leaves the device that depends on those writes: an Ack to the
// relay, a ciphertext from an advanced session.
func (c *Client) sync(ctx context.Context) error {
	s, ok := c.st.(store.Syncer)
	if !ok {
		return nil
	}
	return wrap("sync store", s.Sync(ctx))
}

// receive is handleDelivery without the emitting: it returns the events
// for the caller to emit once the writes are durable. With a local error
// it may return events too: those of the members of a batch (PROTOCOL.md
// §13.4) stored and marked seen before the failure, which the redelivery of
// the batch skips as seen; the caller emits them all the same.
func (c *Client) receive(ctx context.Context, relayID [16]byte, header, body []byte, ephemeral bool) ([]Event, error) {
	var (
		cert  *crypto.SenderCertificate
		inner []byte
		err   error
	)
	group := len(body) != 0
	cert, inner, err = c.openSealed(header, body)
	if err != nil {
		c.log.Debug("client: dropping envelope that does not open", "err", err)
		return nil, nil
	}
	sender := cert.Sender
	own := sender.Account == c.id.account
	if own && sender.Device == c.id.device {
		return nil, nil
	}
	// Check that the device belongs to the sender's verified device list
	// before decrypting anything (network calls happen here, outside the
	// session lock).
	var contact *contactRecord
	if !own {
		contact, err = c.trustedSender(ctx, sender, cert.Identity)
		if err != nil {
			c.log.Debug("client: dropping message from an unverified device", "sender", sender.String(), "err", err)
			return nil, nil
		}
		if contact.Blocked {
			return nil, nil
		}
	} else if !c.ownDeviceKnown(ctx, sender, cert.Identity) {
		c.log.Debug("client: dropping message from an unknown own device", "device", sender.Device)
		return nil, nil
	}

	var evs []Event
	c.cryptoMu.Lock()
	var (
		sess        *crypto.Session
		padded      []byte
		used        *crypto.PreKeysUsed
		groupCommit func() error
	)
	if group {
		padded, groupCommit, err = c.openGroup(ctx, sender, inner)
	} else {
		sess, padded, used, err = c.decryptLocked(ctx, sender, cert.Identity, inner)
	}
	if err != nil {
		c.cryptoMu.Unlock()
		if errors.Is(err, crypto.ErrDuplicateMessage) {
			return nil, nil
		}
		if isLocal(err) {
			return nil, err
		}
		c.log.Debug("client: message does not decrypt; asking for a resend", "sender", sender.String(), "err", err)
		if !ephemeral && !group {
			c.requestResend(ctx, sender, relayID)
		}
		if !ephemeral && group {
			c.groupDecryptFailed(ctx, sender, relayID, inner)
		}
		return nil, nil
	}
	pt, err := crypto.Unpad(padded)
	var m *content.Message
	if err == nil {
		m, err = content.Parse(pt)
	}
	if err == nil && group && (m.Group == [16]byte{} || !groupKinds[m.Kind]) {
		err = errors.New("client: not a group message")
	}
	msgs := []*content.Message{m}
	if err == nil && m.Kind == content.KindBatch {
		// Several messages sent together: each is handled as if it had
		// come alone (PROTOCOL.md §13.4).
		msgs, err = m.Members()
	}
	for i := 0; err == nil && i < len(msgs); i++ {
		// Check, store, then record as seen (deliveries are serialised by
		// cryptoMu): if storing fails, the relay delivers the message again
		// and it is not mistaken for a duplicate.
		m := msgs[i]
		if seen, serr := c.st.Seen(ctx, sender.Account, m.ID); serr != nil {
			c.cryptoMu.Unlock()
			return evs, wrap("seen", serr)
		} else if seen {
			continue
		}
		mevs, aerr := c.apply(ctx, sender, contact, m, ephemeral)
		if aerr != nil && isLocal(aerr) {
			c.cryptoMu.Unlock()
			return evs, aerr
		}
		if aerr != nil {
			c.log.Debug("client: dropping malformed content", "sender", sender.String(), "err", aerr)
		}
		evs = append(evs, mevs...)
		if _, serr := c.st.MarkSeen(ctx, sender.Account, m.ID, c.now()); serr != nil {
			// The message is stored: its redelivery will not show it
			// again (its ID is taken), so its events go out now.
			c.cryptoMu.Unlock()
			return evs, wrap("mark seen", serr)
		}
	}
	if err != nil {
		c.log.Debug("client: dropping malformed content", "sender", sender.String(), "err", err)
	}
	// The message is stored; now the session advances (and consumed
	// prekeys go). A crash before this point replays the message into the
	// old session state, and MarkSeen drops the copy.
	var cerr error
	if group {
		cerr = groupCommit()
	} else {
		cerr = c.commitSession(ctx, sender, sess, used)
	}
	c.cryptoMu.Unlock()
	if cerr != nil {
		return nil, cerr
	}
	return evs, nil
}

// groupKinds are the kinds sent to a group as multi-recipient messages.
var groupKinds = map[content.Kind]bool{content.KindText: true, content.KindReaction: true, content.KindEdit: true,
	content.KindDelete: true, content.KindTimer: true}

// localError marks failures of this device (the store), as opposed to bad
// input from the network.
type localError struct{ err error }

func (e *localError) Error() string { return e.err.Error() }
func (e *localError) Unwrap() error { return e.err }

func local(err error) error {
	if err == nil {
		return nil
	}
	return &localError{err}
}

func isLocal(err error) bool {
	var l *localError
	return errors.As(err, &l)
}

// trustedSender returns the contact record of the sender, creating it for a
// first contact, after checking that the sender's verified device list
// names this device with this identity key (refreshing the list once if
// not).
func (c *Client) trustedSender(ctx context.Context, sender crypto.Address, ik crypto.IdentityKey) (*contactRecord, error) {
	r, err := c.loadContact(ctx, sender.Account)
	if errors.Is(err, ErrUnknownContact) {
		r = &contactRecord{Account: sender.Account}
	} else if err != nil {
		return nil, err
	}
	l, err := c.contactList(r)
	if err != nil {
		return nil, err
	}
	if l != nil {
		if d, ok := l.Device(sender.Device); ok && d.Identity.Equal(ik) {
			return r, nil
		}
	}
	if l, err = c.refreshDevices(ctx, r); err != nil {
		return nil, err
	}
	if d, ok := l.Device(sender.Device); ok && d.Identity.Equal(ik) {
		return r, nil
	}
	return nil, &crypto.UntrustedIdentityError{Address: sender}
}

// ownDeviceKnown reports whether addr with ik is in this account's device
// list, refreshing it once.
func (c *Client) ownDeviceKnown(ctx context.Context, addr crypto.Address, ik crypto.IdentityKey) bool {
	check := func() bool {
		c.idMu.Lock()
		signed := c.id.deviceList
		c.idMu.Unlock()
		l, err := c.verifiedList(signed, c.id.account)
		if err != nil {
			return false
		}
		d, ok := l.Device(addr.Device)
		return ok && d.Identity.Equal(ik)
	}
	if check() {
		return true
	}
	if c.refreshOwnDevices(ctx) != nil {
		return false
	}
	return check()
}

// decryptLocked decrypts without persisting: it returns the advanced (or
// new) session for commitSession. The caller holds cryptoMu.
func (c *Client) decryptLocked(ctx context.Context, sender crypto.Address, senderIK crypto.IdentityKey, msg []byte) (*crypto.Session, []byte, *crypto.PreKeysUsed, error) {
	sess, err := c.loadSession(ctx, sender)
	switch {
	case err == nil:
	case isNotFound(err):
	default:
		return nil, nil, nil, local(err)
	}
	if sess != nil && sess.HasRemoteIdentity(senderIK) {
		pt, err := sess.Decrypt(msg)
		if err == nil {
			return sess, pt, nil, nil
		}
		if !errors.Is(err, crypto.ErrNewSession) {
			return nil, nil, nil, err
		}
	}
	if !crypto.IsPreKeyMessage(msg) {
		return nil, nil, nil, crypto.ErrDecrypt
	}
	ns, pt, used, err := crypto.AcceptSession(c.id.ik, c.Address(), preKeyLookup{ctx, c}, msg)
	if err != nil {
		return nil, nil, nil, err
	}
	if ns.RemoteAddress() != sender || !ns.HasRemoteIdentity(senderIK) {
		return nil, nil, nil, crypto.ErrDecrypt
	}
	return ns, pt, &used, nil
}

// commitSession deletes consumed prekeys and persists the session.
func (c *Client) commitSession(ctx context.Context, addr crypto.Address, sess *crypto.Session, used *crypto.PreKeysUsed) error {
	if used != nil {
		if used.HasOneTimePreKey {
			if err := c.st.RemovePreKey(ctx, storeOneTimeEC, used.OneTimePreKeyID); err != nil {
				return wrap("remove one-time prekey", err)
			}
		}
		if !used.KEMLastResort {
			if err := c.st.RemovePreKey(ctx, storeKEM, used.KEMPreKeyID); err != nil {
				return wrap("remove KEM prekey", err)
			}
		}
		c.prekeysConsumed()
	}
	return c.storeSession(ctx, addr, sess)
}

// requestResend asks the sender to send a message again over a fresh
// session: this device drops its session with the sender's device, so the
// request itself starts a new session from the sender's prekey bundle.
// A session this device started and the sender has not answered yet is
// kept: it is the one an earlier request started, and the messages that
// still fail were sent before the sender saw it (dropping it would start
// yet another session, which the sender's answers to the earlier
// requests would miss).
func (c *Client) requestResend(ctx context.Context, sender crypto.Address, relayID [16]byte) {
	c.cryptoMu.Lock()
	switch sess, err := c.loadSession(ctx, sender); {
	case err == nil && sess.AwaitingReply():
		c.sessions.put(sender, sess) // unchanged: back in the cache
	case err == nil || !isNotFound(err):
		c.deleteSession(ctx, sender) // an unreadable one goes too
	}
	c.cryptoMu.Unlock()
	if sender.Account == c.id.account {
		return
	}
	m := &content.Message{Kind: content.KindResendRequest, Target: relayID}
	if err := c.sendTo(ctx, directConversation(sender.Account), sender.Account, m); err != nil {
		c.log.Debug("client: resend request not queued", "err", err)
	}
}
