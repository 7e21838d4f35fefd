package client

import (
	"context"
	"crypto/rand"
	"slices"
	"strings"
	"time"

	"github.com/sotto-im/sotto/client/internal/content"
	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/crypto"
)

// Draft is what an app sends: build it with [Text] and the With methods.
type Draft struct {
	text        string
	replyTo     *MessageID
	attachments []Attachment
}

// Text returns a draft of a text message.
func Text(s string) Draft { return Draft{text: s} }

// ReplyTo makes the draft a reply to message id.
func (d Draft) ReplyTo(id MessageID) Draft { d.replyTo = &id; return d }

// WithAttachment adds an attachment uploaded with [Client.UploadAttachment].
func (d Draft) WithAttachment(a Attachment) Draft {
	d.attachments = append(d.attachments, a)
	return d
}

func newID() [16]byte {
	var id [16]byte
	rand.Read(id[:])
	return id
}

// Send sends a message to a conversation. The message is stored in the
// history with StatusPending and placed in the outbox, both durably, before
// Send returns;
// the client then sends it, retrying until the relay accepts it, and
// reports status changes with UpdateEvents.
func (c *Client) Send(ctx context.Context, conv ConversationID, d Draft) (MessageID, error) {
	if err := c.closed(); err != nil {
		return MessageID{}, err
	}
	cr, err := c.loadConv(ctx, conv)
	if err != nil {
		return MessageID{}, err
	}
	now := c.now()
	m := &content.Message{Kind: content.KindText, ID: newID(), Sent: now.Truncate(time.Millisecond), Text: d.text,
		Attachments: d.attachments, Timer: cr.Timer}
	if cr.IsGroup {
		m.Group = cr.Group
	}
	sm := &storedMessage{From: c.id.account, Outgoing: true, Sent: m.Sent, Received: now, Text: d.text,
		Attachments: d.attachments, Status: StatusPending, Timer: cr.Timer}
	if d.replyTo != nil {
		m.Reply = &content.Reply{ID: *d.replyTo}
		if orig, err := c.getMessage(ctx, conv, *d.replyTo); err == nil {
			m.Reply.Author = orig.From
		}
		sm.ReplyTo = d.replyTo
	}
	if cr.Timer > 0 {
		sm.ExpiresAt = m.Sent.Add(cr.Timer)
	}
	// Two writes, one sync: the history record and the outbox entry are
	// written deferred and then made durable together, so that Send still
	// returns only once both are on disk. Concurrent Sends share their
	// syncs (sendsync.go).
	dctx := deferWrites(ctx)
	c.beginSend()
	if err := c.putMessage(dctx, conv, m.ID, sm); err != nil {
		c.abortSend()
		return MessageID{}, err
	}
	if err := c.enqueue(dctx, conv, cr, m, true); err != nil {
		c.abortSend()
		// Refused (too large, blocked contact, ...): the message is not
		// sent, so it must not stay in the history as pending.
		if derr := c.deleteMessage(ctx, conv, m.ID); derr != nil {
			c.log.Debug("client: refused message left in history", "err", derr)
		}
		return MessageID{}, err
	}
	if err := c.syncSend(ctx); err != nil {
		return MessageID{}, err
	}
	return m.ID, nil
}

// React sets (or, with an empty emoji, removes) this account's reaction to
// a message.
func (c *Client) React(ctx context.Context, conv ConversationID, target MessageID, emoji string) error {
	m := &content.Message{Kind: content.KindReaction, Target: target, Emoji: emoji, Remove: emoji == ""}
	if err := c.applyReaction(ctx, conv, c.id.account, target, emoji); err != nil {
		return err
	}
	return c.sendControl(ctx, conv, m)
}

// Edit replaces the text of one of this account's messages, within
// DeleteWindow of sending it.
func (c *Client) Edit(ctx context.Context, conv ConversationID, target MessageID, text string) error {
	sm, err := c.getMessage(ctx, conv, target)
	if err != nil {
		return err
	}
	if !sm.Outgoing || sm.Deleted {
		return ErrNotFound
	}
	if c.now().Sub(sm.Sent) > DeleteWindow {
		return ErrWindowPassed
	}
	sm.Text, sm.Edited = text, true
	if err := c.putMessage(ctx, conv, target, sm); err != nil {
		return err
	}
	return c.sendControl(ctx, conv, &content.Message{Kind: content.KindEdit, Target: target, Text: text})
}

// Delete deletes one of this account's messages for everyone, within
// DeleteWindow of sending it. (DeleteLocal removes any message from this
// device only.)
func (c *Client) Delete(ctx context.Context, conv ConversationID, target MessageID) error {
	sm, err := c.getMessage(ctx, conv, target)
	if err != nil {
		return err
	}
	if !sm.Outgoing {
		return ErrNotFound
	}
	if c.now().Sub(sm.Sent) > DeleteWindow {
		return ErrWindowPassed
	}
	sm.Text, sm.Attachments, sm.Deleted, sm.Reactions = "", nil, true, nil
	if err := c.putMessage(ctx, conv, target, sm); err != nil {
		return err
	}
	return c.sendControl(ctx, conv, &content.Message{Kind: content.KindDelete, Target: target})
}

// DeleteLocal removes a message from this device's history.
func (c *Client) DeleteLocal(ctx context.Context, conv ConversationID, id MessageID) error {
	return wrap("delete message", c.deleteMessage(ctx, conv, id))
}

// SetTimer sets the conversation's disappearing-message timer (0 turns it
// off) for both sides: messages sent afterwards disappear from every
// device's history that long after they were sent.
func (c *Client) SetTimer(ctx context.Context, conv ConversationID, d time.Duration) error {
	d = d.Truncate(time.Second)
	cr, err := c.loadConv(ctx, conv)
	if err != nil {
		return err
	}
	cr.Timer = d
	if err := c.saveConv(ctx, conv, cr); err != nil {
		return err
	}
	return c.sendControl(ctx, conv, &content.Message{Kind: content.KindTimer, Timer: d})
}

// MarkRead sends read receipts for messages of a conversation.
func (c *Client) MarkRead(ctx context.Context, conv ConversationID, ids ...MessageID) error {
	byAuthor := map[crypto.AccountID][][16]byte{}
	for _, id := range ids {
		sm, err := c.getMessage(ctx, conv, id)
		if err != nil || sm.Outgoing {
			continue
		}
		byAuthor[sm.From] = append(byAuthor[sm.From], id)
	}
	for a, list := range byAuthor {
		m := &content.Message{Kind: content.KindReceipt, Receipt: &content.Receipt{Type: content.ReceiptRead, IDs: list}}
		if err := c.sendTo(ctx, directConversation(a), a, m); err != nil {
			return err
		}
	}
	return nil
}

// SetTyping tells the conversation's other members that this account
// started or stopped typing. It is ephemeral: sent only to connected
// devices, never stored, never retried.
func (c *Client) SetTyping(ctx context.Context, conv ConversationID, typing bool) error {
	cr, err := c.loadConv(ctx, conv)
	if err != nil {
		return err
	}
	m := &content.Message{Kind: content.KindTyping, ID: newID(), Sent: c.now().Truncate(time.Millisecond), Typing: typing}
	if cr.IsGroup {
		m.Group = cr.Group
	}
	accounts, err := c.recipients(ctx, cr)
	if err != nil {
		return err
	}
	b, err := m.Marshal()
	if err != nil {
		return wrap("encode message", err)
	}
	return c.deliver(ctx, &outboxRecord{ID: m.ID, Conv: conv, To: accounts, Content: b, Ephemeral: true}, m)
}

// sendControl sends a control message (reaction, edit, delete, timer) to a
// conversation through the outbox, with a transcript to own devices.
func (c *Client) sendControl(ctx context.Context, conv ConversationID, m *content.Message) error {
	cr, err := c.loadConv(ctx, conv)
	if err != nil {
		return err
	}
	m.ID, m.Sent = newID(), c.now().Truncate(time.Millisecond)
	if cr.IsGroup {
		m.Group = cr.Group
	}
	return c.enqueue(ctx, conv, cr, m, false)
}

// sendTo sends a message to one account (receipts, resend requests).
func (c *Client) sendTo(ctx context.Context, conv ConversationID, a crypto.AccountID, m *content.Message) error {
	m.ID, m.Sent = newID(), c.now().Truncate(time.Millisecond)
	return c.enqueueTo(ctx, conv, []crypto.AccountID{a}, m, false, false)
}

// History returns up to limit messages of a conversation sent strictly
// before `before` (zero: the newest), newest first. Page backwards by
// passing the Sent time of the last message returned.
func (c *Client) History(ctx context.Context, conv ConversationID, before time.Time, limit int) ([]Message, error) {
	return c.history(ctx, conv, time.Time{}, before, limit)
}

// HistorySince returns up to limit messages sent at or after `after` (seek
// by time), newest first.
func (c *Client) HistorySince(ctx context.Context, conv ConversationID, after time.Time, limit int) ([]Message, error) {
	return c.history(ctx, conv, after, time.Time{}, limit)
}

func (c *Client) history(ctx context.Context, conv ConversationID, after, before time.Time, limit int) ([]Message, error) {
	recs, err := c.st.ListMessages(ctx, conv, after, before, limit)
	if err != nil {
		return nil, wrap("history", err)
	}
	out := make([]Message, 0, len(recs))
	now := c.now()
	for _, r := range recs {
		sm, err := decodeStored(r.Data)
		if err != nil {
			return nil, err
		}
		if !sm.ExpiresAt.IsZero() && !now.Before(sm.ExpiresAt) {
			continue // disappeared; the sweeper deletes it
		}
		out = append(out, sm.public(conv, r.ID))
	}
	return out, nil
}

// Message returns one message.
func (c *Client) Message(ctx context.Context, conv ConversationID, id MessageID) (Message, error) {
	sm, err := c.getMessage(ctx, conv, id)
	if err != nil {
		return Message{}, err
	}
	return sm.public(conv, id), nil
}

// Search returns the messages whose text contains query (case-insensitive),
// newest first, at most limit (0: all). It scans the decrypted history on
// the device; nothing leaves it.
func (c *Client) Search(ctx context.Context, query string, limit int) ([]Message, error) {
	q := strings.ToLower(query)
	var out []Message
	err := c.st.ScanMessages(ctx, func(r store.MessageRecord) error {
		sm, err := decodeStored(r.Data)
		if err != nil {
			return err
		}
		if sm.Text != "" && strings.Contains(strings.ToLower(sm.Text), q) {
			out = append(out, sm.public(r.Conversation, r.ID))
		}
		return nil
	})
	if err != nil {
		return nil, wrap("search", err)
	}
	sortNewestFirst(out)
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func sortNewestFirst(ms []Message) {
	slices.SortStableFunc(ms, func(a, b Message) int { return b.Sent.Compare(a.Sent) })
}
