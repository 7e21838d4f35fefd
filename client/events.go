package client

import (
	"time"

	"github.com/sotto-im/sotto/client/internal/content"
	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/crypto"
)

// MessageID names a message. It is chosen at random by the sender and is
// the same on every device that holds the message.
type MessageID [16]byte

// ConversationID names a conversation: a contact or a group.
type ConversationID = store.ConversationID

// GroupID names a group.
type GroupID = store.GroupID

// Status is the delivery state of an outgoing message. It only moves
// forward: Pending → Sent → Delivered → Read.
type Status uint8

// Statuses.
const (
	StatusPending   Status = 1 // persisted, not yet accepted by the relay
	StatusSent      Status = 2 // accepted by the relay
	StatusDelivered Status = 3 // a delivery receipt arrived
	StatusRead      Status = 4 // a read receipt arrived
	StatusReceived  Status = 5 // an incoming message
)

func (s Status) String() string {
	switch s {
	case StatusPending:
		return "pending"
	case StatusSent:
		return "sent"
	case StatusDelivered:
		return "delivered"
	case StatusRead:
		return "read"
	case StatusReceived:
		return "received"
	}
	return "unknown"
}

// Attachment describes a file attached to a message.
type Attachment = content.Attachment

// Message is one message of a conversation's history.
type Message struct {
	ID           MessageID
	Conversation ConversationID
	From         crypto.AccountID // the author (this account for outgoing messages)
	// FromDevice is the author's device that sent the message (for
	// outgoing messages: this device or the other device of this account
	// it was sent from); 0 when unknown, as in records stored by older
	// versions.
	FromDevice  crypto.DeviceID
	Outgoing    bool
	Sent        time.Time // the author's clock, millisecond precision
	Received    time.Time // this device's clock
	Text        string
	ReplyTo     *MessageID
	Attachments []Attachment
	Status      Status
	Edited      bool
	Deleted     bool                        // deleted for everyone: Text and Attachments are empty
	Reactions   map[crypto.AccountID]string // one emoji per reacting account
	ExpiresAt   time.Time                   // zero: does not disappear
}

// Event is something the client reports on [Client.Events]. It is one of
// the *Event types of this package.
type Event interface{ event() }

// MessageEvent reports a new message: received from a contact, or sent by
// this account from another device.
type MessageEvent struct{ Message Message }

// UpdateEvent reports a change to a stored message: an edit, a deletion, a
// reaction, a status change, or its disappearance (Removed).
type UpdateEvent struct {
	Message Message
	Removed bool
}

// ReceiptEvent reports a delivery or read receipt from a contact.
type ReceiptEvent struct {
	Conversation ConversationID
	From         crypto.AccountID
	Status       Status // StatusDelivered or StatusRead
	IDs          []MessageID
}

// TypingEvent reports that a contact started or stopped typing.
type TypingEvent struct {
	Conversation ConversationID
	From         crypto.AccountID
	Typing       bool
}

// GroupEvent reports a group's new state.
type GroupEvent struct{ Group Group }

// DeviceEvent reports that this account's device list changed.
type DeviceEvent struct{ Devices []crypto.DeviceID }

// SafetyNumberEvent warns that a contact's devices changed: new devices
// will receive what is sent to the contact. Apps should show it, and
// [Contact.Verified] is cleared.
type SafetyNumberEvent struct {
	Contact crypto.AccountID
	Added   []crypto.DeviceID
	Removed []crypto.DeviceID
}

// ConnState is the state of the relay connection.
type ConnState uint8

// Connection states.
const (
	Disconnected ConnState = iota
	Connecting
	Connected
	// Drained means connected and every message waiting at the relay has
	// been received.
	Drained
)

func (s ConnState) String() string {
	return [...]string{"disconnected", "connecting", "connected", "drained"}[s]
}

// ConnectionEvent reports a change of the relay connection.
type ConnectionEvent struct {
	State ConnState
	Err   error // why it disconnected, if known
}

func (MessageEvent) event()      {}
func (UpdateEvent) event()       {}
func (ReceiptEvent) event()      {}
func (TypingEvent) event()       {}
func (GroupEvent) event()        {}
func (DeviceEvent) event()       {}
func (SafetyNumberEvent) event() {}
func (ConnectionEvent) event()   {}
