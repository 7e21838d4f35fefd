package client

// What a decrypted message does: history, receipts, edits and deletes,
// transcripts from this account's other devices, group updates and resends.
// handleDelivery (receive.go) calls apply under cryptoMu.

import (
	"context"
	"errors"
	"time"

	"github.com/sotto-im/sotto/client/internal/content"
	"github.com/sotto-im/sotto/crypto"
)

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
		sm := &storedMessage{From: author, Device: sender.Device, Sent: m.Sent, Received: now, Text: m.Text,
			Attachments: m.Attachments, Status: StatusReceived, Timer: m.Timer}
		if m.Reply != nil {
			id := MessageID(m.Reply.ID)
			sm.ReplyTo = &id
		}
		if m.Timer > 0 {
			sm.ExpiresAt = m.Sent.Add(m.Timer)
		}
		// A message ID names one message of the conversation: a sender
		// who reuses one (a peer who saw this device's message IDs, a
		// group member who saw the others') must not replace that message
		// in the history.
		if added, err := c.addMessage(ctx, conv, m.ID, sm); err != nil {
			return nil, local(err)
		} else if !added {
			c.log.Debug("client: dropping a message that reuses an ID of the conversation", "sender", sender.String())
			return nil, nil
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
		if !c.resendLimits.allow(sender, now) {
			c.log.Warn("client: too many resend requests; dropping one", "sender", sender.String())
			return nil, nil
		}
		if m.Group != ([16]byte{}) {
			c.groupResend(ctx, sender, m.Group, m.Target)
		} else {
			c.resend(ctx, sender, conv, m.Target)
		}
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
		return c.applyTranscript(ctx, sender.Device, m)
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
	c.statusMu.Lock()
	defer c.statusMu.Unlock()
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
func (c *Client) applyTranscript(ctx context.Context, from crypto.DeviceID, t *content.Message) ([]Event, error) {
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
		sm := &storedMessage{From: c.id.account, Device: from, Outgoing: true, Sent: m.Sent, Received: c.now(),
			Text: m.Text, Attachments: m.Attachments, Status: StatusSent, Timer: m.Timer}
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
	case content.KindGroupUpdate:
		// A group change made (or a group created) on another device of
		// this account.
		if m.Group != t.Destination.Group {
			return nil, nil
		}
		return c.applyGroupUpdate(ctx, c.id.account, m)
	}
	return nil, nil
}

// resend answers a resend request: it sends the stored message again,
// with the same ID, over a fresh session with the requesting device. An
// ID that names no message may name a batch envelope (resendBatch).
func (c *Client) resend(ctx context.Context, from crypto.Address, conv ConversationID, id [16]byte) {
	sm, err := c.getMessage(ctx, conv, id)
	if errors.Is(err, ErrNotFound) {
		c.resendBatch(ctx, from, conv, id)
		return
	}
	if err != nil || !sm.resendable() {
		return
	}
	c.resendMessages(from, conv, []resendItem{{id, sm}})
}

// resendScan bounds how many of a conversation's latest messages a
// request to resend a batch envelope looks through for its members: a
// recipient asks as soon as the envelope fails to decrypt, which is
// normally within the last few hundred messages of the conversation.
const resendScan = 1000

// resendBatch answers a resend request for a batch envelope: each
// outgoing message it carried is sent again, alone, oldest first. The
// envelopes built lately are indexed in memory (c.envelopes); older ones
// are found by the envelope recorded in their messages' history records
// (storedMessage.Envelope). Either way only messages of the requester's
// own conversation can be named.
func (c *Client) resendBatch(ctx context.Context, from crypto.Address, conv ConversationID, envelope [16]byte) {
	if ids, ok := c.envelopes.lookup(envelope, conv); ok {
		// Built lately: the history may not record the envelope yet.
		var items []resendItem
		for _, id := range ids {
			if sm, err := c.getMessage(ctx, conv, id); err == nil && sm.resendable() {
				items = append(items, resendItem{id, sm})
			}
		}
		c.resendMessages(from, conv, items)
		return
	}
	recs, err := c.st.ListMessages(ctx, conv, time.Time{}, time.Time{}, resendScan)
	if err != nil {
		c.log.Debug("client: resend request not answered", "err", err)
		return
	}
	var items []resendItem
	for i := len(recs) - 1; i >= 0; i-- { // newest first: walk backwards
		sm, err := decodeStored(recs[i].Data)
		if err == nil && sm.resendable() && sm.Envelope == envelope {
			items = append(items, resendItem{recs[i].ID, sm})
		}
	}
	c.resendMessages(from, conv, items)
}

// resendable reports whether a stored message may be sent again on
// request: one this account sent and has not deleted for everyone.
func (m *storedMessage) resendable() bool { return m.Outgoing && !m.Deleted }

// resendItem is a stored outgoing message to send again.
type resendItem struct {
	id [16]byte
	sm *storedMessage
}

// resendMessages queues items for the device from, in order.
func (c *Client) resendMessages(from crypto.Address, conv ConversationID, items []resendItem) {
	if len(items) == 0 {
		return
	}
	// Each message keeps its ID, so the recipient stores it as the
	// message it missed; the relay gets a fresh ID, since it remembers
	// the first. (Queued from a goroutine: resend runs under cryptoMu.)
	go func() {
		for _, it := range items {
			m := resendContent(it.id, it.sm)
			if err := c.enqueueRelay(c.ctx, conv, []crypto.AccountID{from.Account}, m, false, false, newID()); err != nil {
				c.log.Debug("client: resend not queued", "err", err)
				return
			}
		}
	}()
}

// resendContent rebuilds the content of a stored outgoing text message.
func resendContent(id [16]byte, sm *storedMessage) *content.Message {
	m := &content.Message{Kind: content.KindText, ID: id, Sent: sm.Sent.Truncate(time.Millisecond), Text: sm.Text,
		Attachments: sm.Attachments, Timer: sm.Timer}
	if sm.ReplyTo != nil {
		m.Reply = &content.Reply{ID: *sm.ReplyTo}
	}
	return m
}

// fitsEnvelope reports whether an encoded message of n bytes fits one
// per-device envelope (maxPlaintext once padded, so that the sealed prekey
// message fits the relay's per-device header), and, with sync, whether the
// transcript for this account's other devices, which carries it, fits too.
// Without the second check a message just under the bound is accepted
// and its transcript can never be sent.
func fitsEnvelope(n int, sync bool) bool {
	if sync {
		n += content.TranscriptOverhead
	}
	return crypto.PaddedSize(n) <= maxPlaintext
}
