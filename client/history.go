package client

// The history record of one message and its conversions.

import (
	"context"
	"errors"
	"maps"
	"slices"
	"time"

	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/crypto"
)

// storedMessage is the history record of one message (MessageRecord.Data).
type storedMessage struct {
	V    int              `json:"v"`
	From crypto.AccountID `json:"from"`
	// Device is the author's device that sent the message; 0 in records
	// written before it was kept.
	Device      crypto.DeviceID   `json:"dev,omitempty"`
	Outgoing    bool              `json:"out,omitempty"`
	Sent        time.Time         `json:"sent"`
	Received    time.Time         `json:"recv"`
	Text        string            `json:"text,omitempty"`
	ReplyTo     *MessageID        `json:"reply,omitempty"`
	Attachments []Attachment      `json:"att,omitempty"`
	Status      Status            `json:"status"`
	Edited      bool              `json:"edited,omitempty"`
	Deleted     bool              `json:"deleted,omitempty"`
	Reactions   map[string]string `json:"react,omitempty"`
	ExpiresAt   time.Time         `json:"exp,omitzero"`
	Timer       time.Duration     `json:"timer,omitempty"`
	// Envelope is, for an outgoing message the relay accepted in a batch
	// with others, the relay ID of the batch's envelope: a recipient that
	// cannot decrypt the envelope asks for it again by that ID.
	Envelope [16]byte `json:"env,omitzero"`
}

func (m *storedMessage) public(conv ConversationID, id [16]byte) Message {
	out := Message{ID: id, Conversation: conv, From: m.From, FromDevice: m.Device, Outgoing: m.Outgoing, Sent: m.Sent, Received: m.Received,
		Text: m.Text, ReplyTo: m.ReplyTo, Attachments: m.Attachments, Status: m.Status, Edited: m.Edited,
		Deleted: m.Deleted, ExpiresAt: m.ExpiresAt}
	if len(m.Reactions) > 0 {
		out.Reactions = make(map[crypto.AccountID]string, len(m.Reactions))
		for k, v := range m.Reactions {
			if a, err := crypto.ParseAccountID(k); err == nil {
				out.Reactions[a] = v
			}
		}
	}
	return out
}

func (c *Client) putMessage(ctx context.Context, conv ConversationID, id [16]byte, m *storedMessage) error {
	m.V = recordVersion
	if m.Outgoing && m.Device == 0 && m.Status == StatusPending {
		// Send's first write: the message is this device's. (Transcripts
		// of other devices' messages are stored as StatusSent with their
		// device already set.)
		m.Device = c.id.device
	}
	b, err := marshalStored(m)
	if err != nil {
		return wrap("message record", err)
	}
	k := msgKey{conv, id}
	if err := c.st.PutMessage(ctx, store.MessageRecord{Conversation: conv, ID: id, Time: m.Sent, Data: b}); err != nil {
		c.outgoing.forget(k)
		return wrap("store message", err)
	}
	if m.Outgoing && m.Status < StatusDelivered {
		c.outgoing.put(k, m.clone())
	} else {
		c.outgoing.forget(k)
	}
	return nil
}

// addMessage stores a received message unless the conversation already
// holds a message with its ID; it reports whether it stored it.
func (c *Client) addMessage(ctx context.Context, conv ConversationID, id [16]byte, m *storedMessage) (bool, error) {
	m.V = recordVersion
	b, err := marshalStored(m)
	if err != nil {
		return false, wrap("message record", err)
	}
	added, err := c.st.AddMessage(ctx, store.MessageRecord{Conversation: conv, ID: id, Time: m.Sent, Data: b})
	if err != nil {
		return false, wrap("store message", err)
	}
	return added, nil
}

// deleteMessage removes a message from the history.
func (c *Client) deleteMessage(ctx context.Context, conv ConversationID, id [16]byte) error {
	err := c.st.DeleteMessage(ctx, conv, id)
	c.outgoing.forget(msgKey{conv, id})
	return err
}

// msgKey names a message of the history (c.outgoing's key).
type msgKey struct {
	conv ConversationID
	id   [16]byte
}

// clone returns a copy of m that shares nothing m's users modify in place
// (reactions are edited in the map).
func (m *storedMessage) clone() *storedMessage {
	cp := *m
	cp.Reactions = maps.Clone(m.Reactions)
	cp.Attachments = slices.Clone(m.Attachments)
	return &cp
}

// getMessage reads a message of the history. This device's outgoing
// messages not yet delivered come from c.outgoing: each is read back
// twice after Send, when the relay accepts it and when the recipient's
// delivery receipt arrives (a read receipt, often much later, reads the
// store).
func (c *Client) getMessage(ctx context.Context, conv ConversationID, id [16]byte) (*storedMessage, error) {
	if m, ok := c.outgoing.get(msgKey{conv, id}); ok {
		return m.clone(), nil
	}
	r, err := c.st.GetMessage(ctx, conv, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, wrap("load message", err)
	}
	return decodeStored(r.Data)
}
