package client

import (
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"time"

	"golang.org/x/crypto/cryptobyte"

	"github.com/sotto-im/sotto/crypto"
)

// Binary forms of the two records written for every message: the history
// record (storedMessage, written when a message is sent, accepted and
// delivered, or received) and the outbox record. They used to be JSON,
// which spelled every ID byte as a decimal number and cost a tenth of the
// CPU of a message between two clients (BENCHMARKS.md). Records written
// in JSON by earlier versions are still read: a binary record starts with
// its format byte, a JSON record with '{'. Both records live only inside
// the encrypted store; the export archive carries them as they are stored.
//
// Lengths are cryptobyte prefixes (24 bits for the text and the content,
// 16 for the rest); times are Unix seconds (int64) and
// nanoseconds (uint32), which keep the zero time; durations are int64
// nanoseconds.

// recordFormatBinary is the first byte of a binary record.
const recordFormatBinary = 1

var errBadRecord = errors.New("client: malformed record")

// Flags of a history record.
const (
	msgOutgoing = 1 << iota
	msgEdited
	msgDeleted
	msgReply
	msgEnvelope
)

// marshalStored encodes a history record.
func marshalStored(m *storedMessage) ([]byte, error) {
	flags := flagBits(m.Outgoing, m.Edited, m.Deleted, m.ReplyTo != nil, m.Envelope != [16]byte{}) // in the order of msgOutgoing ...
	b := cryptobyte.NewBuilder(make([]byte, 0, 160+len(m.Text)))
	b.AddUint8(recordFormatBinary)
	b.AddUint8(flags)
	b.AddBytes(m.From[:])
	b.AddUint32(uint32(m.Device))
	b.AddUint8(uint8(m.Status))
	addTime(b, m.Sent)
	addTime(b, m.Received)
	addTime(b, m.ExpiresAt)
	b.AddUint64(uint64(m.Timer))
	addString24(b, m.Text)
	if m.ReplyTo != nil {
		b.AddBytes(m.ReplyTo[:])
	}
	if m.Envelope != ([16]byte{}) {
		b.AddBytes(m.Envelope[:])
	}
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		for _, a := range m.Attachments {
			b.AddBytes(a.BlobID[:])
			addString16(b, a.Identity)
			b.AddUint64(a.Size)
			b.AddBytes(a.Digest[:])
			addString16(b, a.ContentType)
			addString16(b, a.FileName)
		}
	})
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		// In key order, so that equal records encode equally.
		for _, k := range slices.Sorted(maps.Keys(m.Reactions)) {
			addString16(b, k)
			addString16(b, m.Reactions[k])
		}
	})
	return b.Bytes()
}

// decodeStored decodes a history record, binary or (written by an earlier
// version) JSON.
func decodeStored(raw []byte) (*storedMessage, error) {
	m := new(storedMessage)
	if len(raw) > 0 && raw[0] == '{' {
		if err := json.Unmarshal(raw, m); err != nil {
			return nil, wrap("message record", err)
		}
		return m, nil
	}
	s := cryptobyte.String(raw)
	var (
		format, flags, status uint8
		device                uint32
		timer                 uint64
		atts, reacts          cryptobyte.String
	)
	ok := s.ReadUint8(&format) && format == recordFormatBinary &&
		s.ReadUint8(&flags) && s.CopyBytes(m.From[:]) && s.ReadUint32(&device) && s.ReadUint8(&status) &&
		readTime(&s, &m.Sent) && readTime(&s, &m.Received) && readTime(&s, &m.ExpiresAt) &&
		s.ReadUint64(&timer) && readString24(&s, &m.Text)
	if ok && flags&msgReply != 0 {
		m.ReplyTo = new(MessageID)
		ok = s.CopyBytes(m.ReplyTo[:])
	}
	if ok && flags&msgEnvelope != 0 {
		ok = s.CopyBytes(m.Envelope[:]) && m.Envelope != [16]byte{}
	}
	ok = ok && s.ReadUint16LengthPrefixed(&atts) && s.ReadUint16LengthPrefixed(&reacts) && s.Empty()
	for ok && !atts.Empty() {
		var a Attachment
		ok = atts.CopyBytes(a.BlobID[:]) && readString16(&atts, &a.Identity) && atts.ReadUint64(&a.Size) &&
			atts.CopyBytes(a.Digest[:]) && readString16(&atts, &a.ContentType) && readString16(&atts, &a.FileName)
		m.Attachments = append(m.Attachments, a)
	}
	for ok && !reacts.Empty() {
		var k, v string
		if ok = readString16(&reacts, &k) && readString16(&reacts, &v); ok {
			if m.Reactions == nil {
				m.Reactions = make(map[string]string)
			}
			m.Reactions[k] = v
		}
	}
	if !ok {
		return nil, wrap("message record", errBadRecord)
	}
	m.V = recordVersion
	m.Device, m.Status, m.Timer = crypto.DeviceID(device), Status(status), time.Duration(timer)
	m.Outgoing, m.Edited, m.Deleted = flags&msgOutgoing != 0, flags&msgEdited != 0, flags&msgDeleted != 0
	return m, nil
}

// Flags of an outbox record.
const (
	outTrack = 1 << iota
	outSync
	outGroup
	outRelayID
)

// marshalOutbox encodes an outbox record. (Ephemeral is not stored: an
// ephemeral message never enters the outbox.)
func marshalOutbox(r *outboxRecord) ([]byte, error) {
	flags := flagBits(r.Track, r.Sync, r.Group, r.RelayID != ([16]byte{})) // in the order of outTrack ...
	b := cryptobyte.NewBuilder(make([]byte, 0, 96+32*len(r.To)+len(r.Content)))
	b.AddUint8(recordFormatBinary)
	b.AddUint8(flags)
	b.AddBytes(r.ID[:])
	b.AddBytes(r.Conv[:])
	if r.RelayID != ([16]byte{}) {
		b.AddBytes(r.RelayID[:])
	}
	b.AddUint32(uint32(r.Attempts))
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		for _, a := range r.To {
			b.AddBytes(a[:])
		}
	})
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(r.Content) })
	return b.Bytes()
}

// decodeOutbox decodes an outbox record, binary or (written by an earlier
// version) JSON.
func decodeOutbox(raw []byte, r *outboxRecord) error {
	if len(raw) > 0 && raw[0] == '{' {
		return json.Unmarshal(raw, r)
	}
	s := cryptobyte.String(raw)
	var (
		format, flags uint8
		attempts      uint32
		to, content   cryptobyte.String
	)
	ok := s.ReadUint8(&format) && format == recordFormatBinary && s.ReadUint8(&flags) &&
		s.CopyBytes(r.ID[:]) && s.CopyBytes(r.Conv[:])
	if ok && flags&outRelayID != 0 {
		ok = s.CopyBytes(r.RelayID[:])
	}
	ok = ok && s.ReadUint32(&attempts) && s.ReadUint16LengthPrefixed(&to) && len(to)%len(crypto.AccountID{}) == 0 &&
		s.ReadUint24LengthPrefixed(&content) && s.Empty()
	if !ok {
		return errBadRecord
	}
	r.To = make([]crypto.AccountID, len(to)/len(crypto.AccountID{}))
	for i := range r.To {
		to.CopyBytes(r.To[i][:])
	}
	r.V, r.Attempts, r.Content = recordVersion, int(attempts), []byte(content)
	r.Track, r.Sync, r.Group = flags&outTrack != 0, flags&outSync != 0, flags&outGroup != 0
	return nil
}

// flagBits packs booleans into a flags byte, the first in the lowest bit.
func flagBits(bits ...bool) uint8 {
	var f uint8
	for i, set := range bits {
		if set {
			f |= 1 << i
		}
	}
	return f
}

func addTime(b *cryptobyte.Builder, t time.Time) {
	b.AddUint64(uint64(t.Unix()))
	b.AddUint32(uint32(t.Nanosecond()))
}

func readTime(s *cryptobyte.String, t *time.Time) bool {
	var sec uint64
	var nsec uint32
	if !s.ReadUint64(&sec) || !s.ReadUint32(&nsec) || nsec >= 1e9 {
		return false
	}
	*t = time.Unix(int64(sec), int64(nsec))
	return true
}

func addString16(b *cryptobyte.Builder, v string) {
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(v)) })
}

func addString24(b *cryptobyte.Builder, v string) {
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(v)) })
}

func readString16(s *cryptobyte.String, v *string) bool {
	var b cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&b) {
		return false
	}
	*v = string(b)
	return true
}

func readString24(s *cryptobyte.String, v *string) bool {
	var b cryptobyte.String
	if !s.ReadUint24LengthPrefixed(&b) {
		return false
	}
	*v = string(b)
	return true
}
