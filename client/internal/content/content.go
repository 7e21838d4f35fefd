// Package content defines the plaintext of Sotto messages: what one client
// tells another inside an end-to-end encrypted envelope (text, replies,
// reactions, edits, deletions, receipts, typing, attachments, group control,
// sender-key distribution, resend requests, transcripts for the sender's
// own devices, and batches of several 1:1 messages sent together), and its
// one canonical binary encoding.
//
// It is not responsible for padding (the client pads the encoding with
// crypto.Pad before encryption), for encryption, or for deciding whether a
// message is acceptable (a delete outside its time window, a group change by
// a non-admin): those are the client's.
//
// # Encoding
//
//	Message = version u8 (1) | kind u8 | id [16] | sent u64 (Unix ms) | fields
//	fields  = field*         (tags strictly increasing, each at most once)
//	field   = tag u8 | value<u24>
//
// A field is present only when its value is not the zero value, so an
// encoded field never decodes to its zero value; together with the tag
// order this makes the encoding canonical: parse then marshal reproduces
// the input byte for byte, and trailing or unknown data is an error.
package content

import (
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"

	"github.com/sotto-im/sotto/crypto"
)

// Version is the first byte of every encoded message.
const Version = 1

// Specification constants: bounds every decoder enforces.
const (
	// MaxTextLen bounds the text of one message (64 KiB, well below the
	// relay's MaxBodySize so a padded, encrypted message always fits).
	MaxTextLen = 64 << 10
	// MaxEmojiLen bounds a reaction (one grapheme cluster is rarely over 30 bytes).
	MaxEmojiLen = 64
	// MaxAttachments bounds the attachments of one message.
	MaxAttachments = 32
	// MaxReceiptIDs bounds the messages one receipt acknowledges.
	MaxReceiptIDs = 1000
	// MaxGroupMembers bounds a group (Signal allows 1,000).
	MaxGroupMembers = 1000
	// MaxGroupNameLen bounds a group's name.
	MaxGroupNameLen = 256
	// MaxNameLen bounds an attachment's file name and content type.
	MaxNameLen = 256
	// MaxSenderKeyLen bounds a sender-key distribution message.
	MaxSenderKeyLen = 4096
	// MaxNestedLen bounds the message inside a transcript.
	MaxNestedLen = MaxTextLen + 64<<10
	// MaxDataLen bounds an opaque data field (provisioning, profile).
	MaxDataLen = 64 << 10
	// MaxBatchMembers bounds the messages one batch carries.
	MaxBatchMembers = 64
	// MaxBatchLen bounds the encoding of a batch's members together; a
	// client also keeps a batch within its per-device envelope.
	MaxBatchLen = MaxNestedLen
)

// TranscriptOverhead is how much longer a transcript's encoding is than
// the encoding of the message it carries (Nested): the header, the
// Destination field and the Nested field's tag and length. A sender that
// also sends a transcript to its own devices needs room for both.
const TranscriptOverhead = 1 + 1 + 16 + 8 + // version, kind, id, sent
	1 + 3 + crypto.AccountIDSize + 16 + // Destination
	1 + 3 // Nested's tag and length

// Kind says what a message is.
type Kind uint8

// Message kinds.
const (
	KindText          Kind = 1  // Text, optional Reply, Attachments, Timer
	KindReaction      Kind = 2  // Target, Emoji (empty Emoji with Remove: withdraw)
	KindEdit          Kind = 3  // Target, Text
	KindDelete        Kind = 4  // Target: delete for everyone
	KindTimer         Kind = 5  // Timer: the conversation's disappearing timer (0 = off)
	KindReceipt       Kind = 6  // Receipt
	KindTyping        Kind = 7  // Typing (ephemeral)
	KindGroupUpdate   Kind = 8  // Group: the full new group state
	KindSenderKey     Kind = 9  // SenderKey: a sender-key distribution message
	KindResendRequest Kind = 10 // Target: the relay message ID that could not be decrypted; Group: set for a group message (its sender key is missing)
	KindTranscript    Kind = 11 // Destination, Nested: a message this account sent, for its own devices
	KindProfile       Kind = 12 // AccessKey (and nothing else): introduce the sender's delivery key
	KindProvision     Kind = 13 // Data: account data for a newly linked device
	KindBatch         Kind = 14 // Batch, AccessKey: several 1:1 messages in one envelope (see Members)
	kindMax                = KindBatch
)

var kindNames = [...]string{"", "text", "reaction", "edit", "delete", "timer", "receipt", "typing",
	"group-update", "sender-key", "resend-request", "transcript", "profile", "provision", "batch"}

// String returns the kind's name.
func (k Kind) String() string {
	if k == 0 || k > kindMax {
		return fmt.Sprintf("Kind(%d)", uint8(k))
	}
	return kindNames[k]
}

// ReceiptType says what a receipt acknowledges.
type ReceiptType uint8

// Receipt types.
const (
	ReceiptDelivered ReceiptType = 1
	ReceiptRead      ReceiptType = 2
)

// Role is a group member's role.
type Role uint8

// Roles.
const (
	RoleMember Role = 1
	RoleAdmin  Role = 2
)

// Reply names the message a text answers.
type Reply struct {
	ID     [16]byte
	Author crypto.AccountID
}

// Attachment points at an encrypted blob on the relay.
//
// The Identity is the age X25519 identity that decrypts the blob; it must
// be kept secret (it is, inside the end-to-end encrypted message).
type Attachment struct {
	BlobID      [16]byte
	Identity    string   // "AGE-SECRET-KEY-1..."
	Size        uint64   // plaintext size
	Digest      [32]byte // BLAKE2b-256 of the ciphertext blob (PROTOCOL.md §9)
	ContentType string
	FileName    string
}

// Receipt acknowledges messages.
type Receipt struct {
	Type ReceiptType
	IDs  [][16]byte
}

// Member is a group member.
type Member struct {
	Account crypto.AccountID
	Role    Role
}

// Group is a group's full state, as carried by a group update.
type Group struct {
	Revision uint64
	Name     string
	Members  []Member // sorted by account, unique
}

// Destination names where a transcript's message went.
type Destination struct {
	Account crypto.AccountID // zero for a group message
	Group   [16]byte         // zero for a 1:1 message
}

// Message is one decoded plaintext. Which fields a kind uses is listed
// with the kinds; the others must be zero.
type Message struct {
	Kind Kind
	ID   [16]byte
	Sent time.Time // millisecond precision on the wire

	Group       [16]byte // the group the message belongs to; zero for 1:1
	AccessKey   [32]byte // the sender's delivery access key (PROTOCOL: sealed sends)
	Text        string
	Reply       *Reply
	Attachments []Attachment
	Timer       time.Duration // disappearing timer, second precision
	Target      [16]byte
	Emoji       string
	Remove      bool // reaction withdrawn
	Typing      bool // typing started (false: stopped)
	Receipt     *Receipt
	GroupState  *Group
	SenderKey   []byte
	Destination *Destination
	Nested      []byte   // an encoded Message (transcript)
	Data        []byte   // opaque data (provisioning)
	Batch       [][]byte // encoded Messages (batch), in sending order
}

// Field tags, in encoding order.
const (
	tagGroup       = 1
	tagAccessKey   = 2
	tagText        = 3
	tagReply       = 4
	tagAttachments = 5
	tagTimer       = 6
	tagTarget      = 7
	tagEmoji       = 8
	tagFlags       = 9
	tagReceipt     = 10
	tagGroupState  = 11
	tagSenderKey   = 12
	tagDestination = 13
	tagNested      = 14
	tagData        = 15
	tagBatch       = 16
	tagMax         = tagBatch
)

const (
	flagRemove = 1 << 0
	flagTyping = 1 << 1
	flagsKnown = flagRemove | flagTyping
)

// ErrMalformed reports bytes that are not a canonical encoding of a Message.
var ErrMalformed = errors.New("content: malformed message")

func malformed(what string) error { return fmt.Errorf("%w: %s", ErrMalformed, what) }

// Marshal returns the canonical encoding of m. It returns an error if m is
// beyond a bound or has fields its kind does not use.
func (m *Message) Marshal() ([]byte, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	var b cryptobyte.Builder
	b.AddUint8(Version)
	b.AddUint8(uint8(m.Kind))
	b.AddBytes(m.ID[:])
	b.AddUint64(uint64(m.Sent.UnixMilli()))
	field := func(tag uint8, f func(b *cryptobyte.Builder)) {
		b.AddUint8(tag)
		b.AddUint24LengthPrefixed(f)
	}
	if m.Group != ([16]byte{}) {
		field(tagGroup, func(b *cryptobyte.Builder) { b.AddBytes(m.Group[:]) })
	}
	if m.AccessKey != ([32]byte{}) {
		field(tagAccessKey, func(b *cryptobyte.Builder) { b.AddBytes(m.AccessKey[:]) })
	}
	if m.Text != "" {
		field(tagText, func(b *cryptobyte.Builder) { b.AddBytes([]byte(m.Text)) })
	}
	if m.Reply != nil {
		field(tagReply, func(b *cryptobyte.Builder) { b.AddBytes(m.Reply.ID[:]); b.AddBytes(m.Reply.Author[:]) })
	}
	if len(m.Attachments) > 0 {
		field(tagAttachments, func(b *cryptobyte.Builder) {
			for _, a := range m.Attachments {
				b.AddBytes(a.BlobID[:])
				b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(a.Identity)) })
				b.AddUint64(a.Size)
				b.AddBytes(a.Digest[:])
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(a.ContentType)) })
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(a.FileName)) })
			}
		})
	}
	if m.Timer != 0 {
		field(tagTimer, func(b *cryptobyte.Builder) { b.AddUint32(uint32(m.Timer / time.Second)) })
	}
	if m.Target != ([16]byte{}) {
		field(tagTarget, func(b *cryptobyte.Builder) { b.AddBytes(m.Target[:]) })
	}
	if m.Emoji != "" {
		field(tagEmoji, func(b *cryptobyte.Builder) { b.AddBytes([]byte(m.Emoji)) })
	}
	var flags uint8
	if m.Remove {
		flags |= flagRemove
	}
	if m.Typing {
		flags |= flagTyping
	}
	if flags != 0 {
		field(tagFlags, func(b *cryptobyte.Builder) { b.AddUint8(flags) })
	}
	if m.Receipt != nil {
		field(tagReceipt, func(b *cryptobyte.Builder) {
			b.AddUint8(uint8(m.Receipt.Type))
			for _, id := range m.Receipt.IDs {
				b.AddBytes(id[:])
			}
		})
	}
	if m.GroupState != nil {
		field(tagGroupState, func(b *cryptobyte.Builder) {
			g := m.GroupState
			b.AddUint64(g.Revision)
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(g.Name)) })
			for _, mem := range g.Members {
				b.AddBytes(mem.Account[:])
				b.AddUint8(uint8(mem.Role))
			}
		})
	}
	if len(m.SenderKey) > 0 {
		field(tagSenderKey, func(b *cryptobyte.Builder) { b.AddBytes(m.SenderKey) })
	}
	if m.Destination != nil {
		field(tagDestination, func(b *cryptobyte.Builder) {
			b.AddBytes(m.Destination.Account[:])
			b.AddBytes(m.Destination.Group[:])
		})
	}
	if len(m.Nested) > 0 {
		field(tagNested, func(b *cryptobyte.Builder) { b.AddBytes(m.Nested) })
	}
	if len(m.Data) > 0 {
		field(tagData, func(b *cryptobyte.Builder) { b.AddBytes(m.Data) })
	}
	if len(m.Batch) > 0 {
		field(tagBatch, func(b *cryptobyte.Builder) {
			for _, mem := range m.Batch {
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(mem) })
			}
		})
	}
	out, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("content: marshal: %w", err)
	}
	return out, nil
}

// allowed lists the fields each kind may carry (bit i = tag i).
var allowed = [...]uint32{
	KindText:          1<<tagGroup | 1<<tagAccessKey | 1<<tagText | 1<<tagReply | 1<<tagAttachments | 1<<tagTimer,
	KindReaction:      1<<tagGroup | 1<<tagAccessKey | 1<<tagTarget | 1<<tagEmoji | 1<<tagFlags,
	KindEdit:          1<<tagGroup | 1<<tagAccessKey | 1<<tagTarget | 1<<tagText,
	KindDelete:        1<<tagGroup | 1<<tagAccessKey | 1<<tagTarget,
	KindTimer:         1<<tagGroup | 1<<tagAccessKey | 1<<tagTimer,
	KindReceipt:       1<<tagAccessKey | 1<<tagReceipt,
	KindTyping:        1<<tagGroup | 1<<tagFlags,
	KindGroupUpdate:   1<<tagGroup | 1<<tagAccessKey | 1<<tagGroupState,
	KindSenderKey:     1<<tagGroup | 1<<tagAccessKey | 1<<tagSenderKey,
	KindResendRequest: 1<<tagGroup | 1<<tagTarget,
	KindTranscript:    1<<tagDestination | 1<<tagNested,
	KindProfile:       1 << tagAccessKey,
	KindProvision:     1 << tagData,
	KindBatch:         1<<tagAccessKey | 1<<tagBatch,
}

// required lists the fields each kind must carry; KindText needs text or
// attachments, checked apart.
var required = [...]uint32{
	KindReaction:      1 << tagTarget,
	KindEdit:          1<<tagTarget | 1<<tagText,
	KindDelete:        1 << tagTarget,
	KindReceipt:       1 << tagReceipt,
	KindGroupUpdate:   1<<tagGroup | 1<<tagGroupState,
	KindSenderKey:     1<<tagGroup | 1<<tagSenderKey,
	KindResendRequest: 1 << tagTarget,
	KindTranscript:    1<<tagDestination | 1<<tagNested,
	KindProfile:       1 << tagAccessKey,
	KindProvision:     1 << tagData,
	KindBatch:         1 << tagBatch,
}

// present returns the set of tags m would encode.
func (m *Message) present() uint32 {
	var p uint32
	set := func(tag int, ok bool) {
		if ok {
			p |= 1 << tag
		}
	}
	set(tagGroup, m.Group != [16]byte{})
	set(tagAccessKey, m.AccessKey != [32]byte{})
	set(tagText, m.Text != "")
	set(tagReply, m.Reply != nil)
	set(tagAttachments, len(m.Attachments) > 0)
	set(tagTimer, m.Timer != 0)
	set(tagTarget, m.Target != [16]byte{})
	set(tagEmoji, m.Emoji != "")
	set(tagFlags, m.Remove || m.Typing)
	set(tagReceipt, m.Receipt != nil)
	set(tagGroupState, m.GroupState != nil)
	set(tagSenderKey, len(m.SenderKey) > 0)
	set(tagDestination, m.Destination != nil)
	set(tagNested, len(m.Nested) > 0)
	set(tagData, len(m.Data) > 0)
	set(tagBatch, len(m.Batch) > 0)
	return p
}

func (m *Message) check() error {
	if m.Kind == 0 || m.Kind > kindMax {
		return malformed("kind")
	}
	p := m.present()
	if p&^allowed[m.Kind] != 0 {
		return malformed("field not allowed for " + m.Kind.String())
	}
	if p&required[m.Kind] != required[m.Kind] ||
		(m.Kind == KindText && p&(1<<tagText|1<<tagAttachments) == 0) {
		return malformed("field missing for " + m.Kind.String())
	}
	if ms := m.Sent.UnixMilli(); ms < 0 {
		return malformed("sent time")
	}
	if len(m.Text) > MaxTextLen || !utf8.ValidString(m.Text) {
		return malformed("text")
	}
	if len(m.Emoji) > MaxEmojiLen || !utf8.ValidString(m.Emoji) {
		return malformed("emoji")
	}
	if m.Timer < 0 || m.Timer%time.Second != 0 || m.Timer/time.Second > 1<<32-1 {
		return malformed("timer")
	}
	if len(m.Attachments) > MaxAttachments {
		return malformed("attachment count")
	}
	for _, a := range m.Attachments {
		if a.Identity == "" || len(a.Identity) > 255 || len(a.ContentType) > MaxNameLen || len(a.FileName) > MaxNameLen ||
			!utf8.ValidString(a.ContentType) || !utf8.ValidString(a.FileName) {
			return malformed("attachment")
		}
	}
	if r := m.Receipt; r != nil {
		if (r.Type != ReceiptDelivered && r.Type != ReceiptRead) || len(r.IDs) == 0 || len(r.IDs) > MaxReceiptIDs {
			return malformed("receipt")
		}
	}
	if g := m.GroupState; g != nil {
		if len(g.Name) > MaxGroupNameLen || !utf8.ValidString(g.Name) || len(g.Members) > MaxGroupMembers {
			return malformed("group state")
		}
		for i, mem := range g.Members {
			if (mem.Role != RoleMember && mem.Role != RoleAdmin) ||
				(i > 0 && string(g.Members[i-1].Account[:]) >= string(mem.Account[:])) {
				return malformed("group members")
			}
		}
		if g.Revision == 0 && g.Name == "" && len(g.Members) == 0 {
			return malformed("empty group state")
		}
	}
	if m.Reply != nil && m.Reply.ID == ([16]byte{}) && m.Reply.Author == (crypto.AccountID{}) {
		return malformed("empty reply")
	}
	if d := m.Destination; d != nil && (d.Account == crypto.AccountID{}) == (d.Group == [16]byte{}) {
		return malformed("destination")
	}
	if len(m.SenderKey) > MaxSenderKeyLen || len(m.Nested) > MaxNestedLen || len(m.Data) > MaxDataLen {
		return malformed("field too long")
	}
	if len(m.Batch) > 0 {
		// A batch of one is a message sent on its own.
		if len(m.Batch) < 2 || len(m.Batch) > MaxBatchMembers {
			return malformed("batch size")
		}
		n := 0
		for _, mem := range m.Batch {
			if len(mem) == 0 || len(mem) > 0xffff {
				return malformed("batch member")
			}
			n += len(mem)
		}
		if n > MaxBatchLen {
			return malformed("batch too long")
		}
	}
	return nil
}

// batchKinds are the kinds a batch may carry: the 1:1 messages a client
// sends to one account in quick succession. Group messages go as
// multi-recipient messages, and the kinds that set up or repair sessions
// and devices (profile, resend request, transcript, provisioning) travel
// alone.
var batchKinds = [kindMax + 1]bool{KindText: true, KindReaction: true, KindEdit: true, KindDelete: true,
	KindTimer: true, KindReceipt: true}

// CanBatch reports whether m may travel in a batch.
func (m *Message) CanBatch() bool {
	return batchKinds[m.Kind] && m.Group == [16]byte{}
}

// Members parses the messages of a batch. Each member must be a
// canonical encoding of a kind that may travel in a batch (CanBatch),
// without an access key (the batch carries the sender's, which Members
// copies into each member), and IDs must not repeat. One invalid member
// makes the whole batch an error: it is dropped as one malformed message
// would be.
func (m *Message) Members() ([]*Message, error) {
	if m.Kind != KindBatch {
		return nil, malformed("not a batch")
	}
	out := make([]*Message, 0, len(m.Batch))
	ids := make(map[[16]byte]bool, len(m.Batch))
	for _, raw := range m.Batch {
		mem, err := Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("batch member: %w", err)
		}
		if !mem.CanBatch() || mem.AccessKey != ([32]byte{}) {
			return nil, malformed("batch member of kind " + mem.Kind.String())
		}
		if ids[mem.ID] {
			return nil, malformed("batch member ID repeated")
		}
		ids[mem.ID] = true
		mem.AccessKey = m.AccessKey
		out = append(out, mem)
	}
	return out, nil
}

// Parse decodes a canonical encoding of a Message. It rejects unknown
// versions, kinds and tags, fields out of order or repeated, fields that
// encode a zero value, fields the kind does not use, and trailing bytes.
// Byte slices of the result do not alias data.
func Parse(data []byte) (*Message, error) {
	s := cryptobyte.String(data)
	var version, kind uint8
	var sent uint64
	m := new(Message)
	if !s.ReadUint8(&version) || version != Version {
		return nil, malformed("version")
	}
	if !s.ReadUint8(&kind) || !s.CopyBytes(m.ID[:]) || !s.ReadUint64(&sent) {
		return nil, malformed("header")
	}
	if sent > 1<<62 {
		return nil, malformed("sent time")
	}
	m.Kind = Kind(kind)
	if m.Kind == 0 || m.Kind > kindMax {
		return nil, malformed("kind")
	}
	m.Sent = time.UnixMilli(int64(sent)).UTC()
	last := 0
	for !s.Empty() {
		var tag uint8
		var v cryptobyte.String
		if !s.ReadUint8(&tag) || !s.ReadUint24LengthPrefixed(&v) {
			return nil, malformed("field")
		}
		if int(tag) <= last || tag > tagMax {
			return nil, malformed("field order")
		}
		last = int(tag)
		if allowed[m.Kind]&(1<<tag) == 0 {
			return nil, malformed("field not allowed for " + m.Kind.String())
		}
		if err := m.parseField(tag, v); err != nil {
			return nil, err
		}
	}
	if err := m.check(); err != nil {
		return nil, err
	}
	if m.present() != presentTags(data) {
		// A field decoded to its zero value: not canonical.
		return nil, malformed("zero-valued field")
	}
	return m, nil
}

// presentTags returns the set of tags in a well-formed encoding.
func presentTags(data []byte) uint32 {
	s := cryptobyte.String(data[1+1+16+8:])
	var p uint32
	for !s.Empty() {
		var tag uint8
		var v cryptobyte.String
		s.ReadUint8(&tag)
		s.ReadUint24LengthPrefixed(&v)
		p |= 1 << tag
	}
	return p
}

func (m *Message) parseField(tag uint8, v cryptobyte.String) error {
	ok := true
	switch tag {
	case tagGroup:
		ok = v.CopyBytes(m.Group[:]) && v.Empty()
	case tagAccessKey:
		ok = v.CopyBytes(m.AccessKey[:]) && v.Empty()
	case tagText:
		if len(v) > MaxTextLen {
			return malformed("text too long")
		}
		m.Text = string(v)
	case tagReply:
		m.Reply = new(Reply)
		ok = v.CopyBytes(m.Reply.ID[:]) && v.CopyBytes(m.Reply.Author[:]) && v.Empty()
	case tagAttachments:
		for !v.Empty() && ok {
			if len(m.Attachments) == MaxAttachments {
				return malformed("attachment count")
			}
			var a Attachment
			var id, ct, fn cryptobyte.String
			ok = v.CopyBytes(a.BlobID[:]) && v.ReadUint8LengthPrefixed(&id) && v.ReadUint64(&a.Size) &&
				v.CopyBytes(a.Digest[:]) && v.ReadUint16LengthPrefixed(&ct) && v.ReadUint16LengthPrefixed(&fn)
			a.Identity, a.ContentType, a.FileName = string(id), string(ct), string(fn)
			m.Attachments = append(m.Attachments, a)
		}
	case tagTimer:
		var secs uint32
		ok = v.ReadUint32(&secs) && v.Empty()
		m.Timer = time.Duration(secs) * time.Second
	case tagTarget:
		ok = v.CopyBytes(m.Target[:]) && v.Empty()
	case tagEmoji:
		if len(v) > MaxEmojiLen {
			return malformed("emoji too long")
		}
		m.Emoji = string(v)
	case tagFlags:
		var f uint8
		ok = v.ReadUint8(&f) && v.Empty() && f&^flagsKnown == 0
		m.Remove, m.Typing = f&flagRemove != 0, f&flagTyping != 0
	case tagReceipt:
		r := new(Receipt)
		var t uint8
		ok = v.ReadUint8(&t) && len(v)%16 == 0 && len(v)/16 <= MaxReceiptIDs
		r.Type = ReceiptType(t)
		for ok && !v.Empty() {
			var id [16]byte
			v.CopyBytes(id[:])
			r.IDs = append(r.IDs, id)
		}
		m.Receipt = r
	case tagGroupState:
		g := new(Group)
		var name cryptobyte.String
		ok = v.ReadUint64(&g.Revision) && v.ReadUint16LengthPrefixed(&name) &&
			len(v)%(crypto.AccountIDSize+1) == 0 && len(v)/(crypto.AccountIDSize+1) <= MaxGroupMembers
		g.Name = string(name)
		for ok && !v.Empty() {
			var mem Member
			var role uint8
			v.CopyBytes(mem.Account[:])
			v.ReadUint8(&role)
			mem.Role = Role(role)
			g.Members = append(g.Members, mem)
		}
		m.GroupState = g
	case tagSenderKey:
		if len(v) > MaxSenderKeyLen {
			return malformed("sender key too long")
		}
		m.SenderKey = append([]byte(nil), v...)
	case tagDestination:
		m.Destination = new(Destination)
		ok = v.CopyBytes(m.Destination.Account[:]) && v.CopyBytes(m.Destination.Group[:]) && v.Empty()
	case tagNested:
		if len(v) > MaxNestedLen {
			return malformed("nested message too long")
		}
		m.Nested = append([]byte(nil), v...)
	case tagData:
		if len(v) > MaxDataLen {
			return malformed("data too long")
		}
		m.Data = append([]byte(nil), v...)
	case tagBatch:
		for ok && !v.Empty() {
			if len(m.Batch) == MaxBatchMembers {
				return malformed("batch size")
			}
			var mem cryptobyte.String
			ok = v.ReadUint16LengthPrefixed(&mem)
			m.Batch = append(m.Batch, append([]byte(nil), mem...))
		}
	}
	if !ok {
		return malformed("field " + fmt.Sprint(tag))
	}
	return nil
}
