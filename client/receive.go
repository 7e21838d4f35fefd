package client

import (
	"context"
	"errors"
	"time"

	"github.com/sotto-im/sotto/client/internal/content"
	"github.com/sotto-im/sotto/crypto"
)

// handleDelivery processes one message from the relay. It returns an error
// only for a local failure (the store), in which case the message must not
// be acknowledged; anything wrong with the message itself is logged and the
// message dropped, so that a hostile sender cannot wedge the queue.
func (c *Client) handleDelivery(ctx context.Context, relayID [16]byte, header, body []byte, ephemeral bool) error {
	var (
		cert  *crypto.SenderCertificate
		inner []byte
		err   error
	)
	group := len(body) != 0
	if group {
		cert, inner, err = crypto.OpenMulti(c.id.ik, header, body, c.opts.TrustRoots, c.now())
	} else {
		cert, inner, err = crypto.Open(c.id.ik, header, c.opts.TrustRoots, c.now())
	}
	if err != nil {
		c.log.Debug("client: dropping envelope that does not open", "err", err)
		return nil
	}
	sender := cert.Sender
	own := sender.Account == c.id.account
	if own && sender.Device == c.id.device {
		return nil
	}
	// Check that the device belongs to the sender's verified device list
	// before decrypting anything (network calls happen here, outside the
	// session lock).
	var contact *contactRecord
	if !own {
		contact, err = c.trustedSender(ctx, sender, cert.Identity)
		if err != nil {
			c.log.Debug("client: dropping message from an unverified device", "sender", sender.String(), "err", err)
			return nil
		}
		if contact.Blocked {
			return nil
		}
	} else if !c.ownDeviceKnown(ctx, sender, cert.Identity) {
		c.log.Debug("client: dropping message from an unknown own device", "device", sender.Device)
		return nil
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
			return nil
		}
		if isLocal(err) {
			return err
		}
		c.log.Debug("client: message does not decrypt; asking for a resend", "sender", sender.String(), "err", err)
		if !ephemeral && !group {
			c.requestResend(ctx, sender, relayID)
		}
		return nil
	}
	pt, err := crypto.Unpad(padded)
	var m *content.Message
	if err == nil {
		m, err = content.Parse(pt)
	}
	if err == nil && group && (m.Group == [16]byte{} || !groupKinds[m.Kind]) {
		err = errors.New("client: not a group message")
	}
	if err == nil {
		// Check, store, then record as seen (deliveries are serialised by
		// cryptoMu): if storing fails, the relay delivers the message again
		// and it is not mistaken for a duplicate.
		if seen, serr := c.st.Seen(ctx, sender.Account, m.ID); serr != nil {
			c.cryptoMu.Unlock()
			return wrap("seen", serr)
		} else if !seen {
			evs, err = c.apply(ctx, sender, contact, m, ephemeral)
			if err != nil && isLocal(err) {
				c.cryptoMu.Unlock()
				return err
			}
			if _, serr := c.st.MarkSeen(ctx, sender.Account, m.ID, c.now()); serr != nil {
				c.cryptoMu.Unlock()
				return wrap("mark seen", serr)
			}
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
		return cerr
	}
	for _, ev := range evs {
		c.emit(ev)
	}
	return nil
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
	l, err := r.list()
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
		l, err := crypto.VerifyDeviceList(signed, c.id.account)
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
	rec, err := c.st.LoadSession(ctx, sender)
	var sess *crypto.Session
	switch {
	case err == nil:
		if sess, err = crypto.ParseSession(rec); err != nil {
			return nil, nil, nil, local(wrap("parse session", err))
		}
	case isNotFound(err):
	default:
		return nil, nil, nil, local(wrap("load session", err))
	}
	if sess != nil && sess.RemoteIdentity().Equal(senderIK) {
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
	if ns.RemoteAddress() != sender || !ns.RemoteIdentity().Equal(senderIK) {
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
func (c *Client) requestResend(ctx context.Context, sender crypto.Address, relayID [16]byte) {
	c.cryptoMu.Lock()
	c.st.DeleteSession(ctx, sender)
	c.cryptoMu.Unlock()
	if sender.Account == c.id.account {
		return
	}
	m := &content.Message{Kind: content.KindResendRequest, Target: relayID}
	if err := c.sendTo(ctx, directConversation(sender.Account), sender.Account, m); err != nil {
		c.log.Debug("client: resend request not queued", "err", err)
	}
}

// apply acts on one decrypted message. It runs under cryptoMu and returns
// the events to emit once the lock is released. Errors from the store are
// local (the message is then not acknowledged).
func (c *Client) apply(ctx context.Context, sender crypto.Address, contact *contactRecord, m *content.Message, ephemeral bool) ([]Event, error) {
	now := c.now()
	if contact != nil && m.AccessKey != ([32]byte{}) && string(contact.AccessKey) != string(m.AccessKey[:]) {
		contact.AccessKey = append([]byte(nil), m.AccessKey[:]...)
		if err := c.saveContact(ctx, contact); err != nil {
			return nil, local(err)
		}
	} else if contact != nil {
		if _, err := c.loadContact(ctx, contact.Account); errors.Is(err, ErrUnknownContact) {
			if err := c.saveContact(ctx, contact); err != nil {
				return nil, local(err)
			}
		}
	}
	author := sender.Account
	conv := directConversation(author)
	if m.Group != ([16]byte{}) {
		conv = groupConversation(m.Group)
	}
	if ephemeral && m.Kind != content.KindTyping {
		return nil, nil
	}
	if m.Group != ([16]byte{}) && groupKinds[m.Kind] {
		// Only members may write to a group.
		g, err := c.loadGroup(ctx, m.Group)
		if err != nil || g.role(author) == 0 || g.Left {
			return nil, nil
		}
	}
	switch m.Kind {
	case content.KindText:
		sm := &storedMessage{From: author, Sent: m.Sent, Received: now, Text: m.Text, Attachments: m.Attachments,
			Status: StatusReceived, Timer: m.Timer}
		if m.Reply != nil {
			id := MessageID(m.Reply.ID)
			sm.ReplyTo = &id
		}
		if m.Timer > 0 {
			sm.ExpiresAt = m.Sent.Add(m.Timer)
		}
		if err := c.putMessage(ctx, conv, m.ID, sm); err != nil {
			return nil, local(err)
		}
		if m.Group == ([16]byte{}) {
			c.queueReceipt(author, m.ID)
		}
		return []Event{MessageEvent{Message: sm.public(conv, m.ID)}}, nil
	case content.KindReaction, content.KindEdit, content.KindDelete:
		return c.applyChange(ctx, conv, author, m)
	case content.KindTimer:
		cr, err := c.loadConv(ctx, conv)
		if err != nil {
			return nil, nil
		}
		cr.Timer = m.Timer
		return nil, local(c.saveConv(ctx, conv, cr))
	case content.KindReceipt:
		st := StatusDelivered
		if m.Receipt.Type == content.ReceiptRead {
			st = StatusRead
		}
		ev := ReceiptEvent{Conversation: conv, From: author, Status: st}
		var evs []Event
		for _, id := range m.Receipt.IDs {
			ev.IDs = append(ev.IDs, id)
			if ue, ok := c.advanceStatus(ctx, conv, id, st); ok {
				evs = append(evs, ue)
			}
		}
		return append(evs, ev), nil
	case content.KindTyping:
		return []Event{TypingEvent{Conversation: conv, From: author, Typing: m.Typing}}, nil
	case content.KindResendRequest:
		c.resend(ctx, sender, conv, m.Target)
		return nil, nil
	case content.KindProfile:
		return nil, nil
	case content.KindGroupUpdate:
		return c.applyGroupUpdate(ctx, author, m)
	case content.KindSenderKey:
		return nil, c.applySenderKey(ctx, sender, m)
	case content.KindTranscript:
		if sender.Account != c.id.account {
			return nil, nil
		}
		return c.applyTranscript(ctx, m)
	}
	return nil, nil
}

// applyChange applies a reaction, edit or delete by author.
func (c *Client) applyChange(ctx context.Context, conv ConversationID, author crypto.AccountID, m *content.Message) ([]Event, error) {
	sm, err := c.getMessage(ctx, conv, m.Target)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, local(err)
	}
	switch m.Kind {
	case content.KindReaction:
		if sm.Reactions == nil {
			sm.Reactions = map[string]string{}
		}
		if m.Remove || m.Emoji == "" {
			delete(sm.Reactions, author.String())
		} else {
			sm.Reactions[author.String()] = m.Emoji
		}
	case content.KindEdit, content.KindDelete:
		// Only the author may edit or delete, within the window (measured
		// on the author's clocks, which is all there is).
		if sm.From != author || m.Sent.Sub(sm.Sent) > DeleteWindow || sm.Deleted {
			return nil, nil
		}
		if m.Kind == content.KindEdit {
			sm.Text, sm.Edited = m.Text, true
		} else {
			sm.Text, sm.Attachments, sm.Reactions, sm.Deleted = "", nil, nil, true
		}
	}
	if err := c.putMessage(ctx, conv, m.Target, sm); err != nil {
		return nil, local(err)
	}
	return []Event{UpdateEvent{Message: sm.public(conv, m.Target)}}, nil
}

// applyReaction records this account's own reaction locally.
func (c *Client) applyReaction(ctx context.Context, conv ConversationID, who crypto.AccountID, target MessageID, emoji string) error {
	_, err := c.applyChange(ctx, conv, who, &content.Message{Kind: content.KindReaction, Target: target, Emoji: emoji, Remove: emoji == ""})
	return err
}

// advanceStatus moves an outgoing message's status forward; it returns the
// update event to emit.
func (c *Client) advanceStatus(ctx context.Context, conv ConversationID, id [16]byte, s Status) (Event, bool) {
	sm, err := c.getMessage(ctx, conv, id)
	if err != nil || !sm.Outgoing || sm.Status >= s {
		return nil, false
	}
	sm.Status = s
	if c.putMessage(ctx, conv, id, sm) != nil {
		return nil, false
	}
	return UpdateEvent{Message: sm.public(conv, id)}, true
}

// applyTranscript stores a message this account sent from another device.
func (c *Client) applyTranscript(ctx context.Context, t *content.Message) ([]Event, error) {
	m, err := content.Parse(t.Nested)
	if err != nil {
		return nil, nil
	}
	var conv ConversationID
	if t.Destination.Group != ([16]byte{}) {
		conv = groupConversation(t.Destination.Group)
	} else {
		conv = directConversation(t.Destination.Account)
		if _, err := c.loadConv(ctx, conv); errors.Is(err, ErrUnknownConversation) {
			// A contact added on the other device.
			if err := c.saveConv(ctx, conv, &convRecord{Peer: t.Destination.Account}); err != nil {
				return nil, local(err)
			}
			if _, err := c.loadContact(ctx, t.Destination.Account); errors.Is(err, ErrUnknownContact) {
				if err := c.saveContact(ctx, &contactRecord{Account: t.Destination.Account}); err != nil {
					return nil, local(err)
				}
			}
		}
	}
	switch m.Kind {
	case content.KindText:
		sm := &storedMessage{From: c.id.account, Outgoing: true, Sent: m.Sent, Received: c.now(), Text: m.Text,
			Attachments: m.Attachments, Status: StatusSent, Timer: m.Timer}
		if m.Reply != nil {
			id := MessageID(m.Reply.ID)
			sm.ReplyTo = &id
		}
		if m.Timer > 0 {
			sm.ExpiresAt = m.Sent.Add(m.Timer)
		}
		if err := c.putMessage(ctx, conv, m.ID, sm); err != nil {
			return nil, local(err)
		}
		return []Event{MessageEvent{Message: sm.public(conv, m.ID)}}, nil
	case content.KindReaction, content.KindEdit, content.KindDelete:
		return c.applyChange(ctx, conv, c.id.account, m)
	case content.KindTimer:
		if cr, err := c.loadConv(ctx, conv); err == nil {
			cr.Timer = m.Timer
			return nil, local(c.saveConv(ctx, conv, cr))
		}
	}
	return nil, nil
}

// resend answers a resend request: it sends the stored message again,
// with the same ID, over a fresh session with the requesting device.
func (c *Client) resend(ctx context.Context, from crypto.Address, conv ConversationID, id [16]byte) {
	sm, err := c.getMessage(ctx, conv, id)
	if err != nil || !sm.Outgoing || sm.Deleted {
		return
	}
	m := &content.Message{Kind: content.KindText, ID: id, Sent: sm.Sent.Truncate(time.Millisecond), Text: sm.Text,
		Attachments: sm.Attachments, Timer: sm.Timer}
	if sm.ReplyTo != nil {
		m.Reply = &content.Reply{ID: *sm.ReplyTo}
	}
	// The message keeps its ID, so the recipient stores it as the message
	// it missed; the relay gets a fresh ID, since it remembers the first.
	go func() {
		if err := c.enqueueRelay(c.ctx, conv, []crypto.AccountID{from.Account}, m, false, false, newID()); err != nil {
			c.log.Debug("client: resend not queued", "err", err)
		}
	}()
}
