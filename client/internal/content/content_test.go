package content

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sotto-im/sotto/crypto"
)

var t0 = time.UnixMilli(1_790_000_000_123).UTC()

func samples() []*Message {
	var acct crypto.AccountID
	acct[0], acct[19] = 1, 2
	var acct2 crypto.AccountID
	acct2[0] = 3
	id := [16]byte{9}
	return []*Message{
		{Kind: KindText, ID: id, Sent: t0, Text: "hello"},
		{Kind: KindText, ID: id, Sent: t0, Text: "re", Reply: &Reply{ID: [16]byte{1}, Author: acct}, Timer: time.Hour,
			AccessKey: [32]byte{7}, Group: [16]byte{5},
			Attachments: []Attachment{{BlobID: [16]byte{2}, Identity: "AGE-SECRET-KEY-1XYZ", Size: 1 << 20, Digest: [32]byte{3}, ContentType: "image/png", FileName: "a.png"}}},
		{Kind: KindReaction, ID: id, Sent: t0, Target: [16]byte{1}, Emoji: "👍"},
		{Kind: KindReaction, ID: id, Sent: t0, Target: [16]byte{1}, Remove: true},
		{Kind: KindTyping, ID: id, Sent: t0},
		{Kind: KindEdit, ID: id, Sent: t0, Target: [16]byte{1}, Text: "fixed"},
		{Kind: KindDelete, ID: id, Sent: t0, Target: [16]byte{1}},
		{Kind: KindTimer, ID: id, Sent: t0, Timer: 30 * time.Second},
		{Kind: KindTimer, ID: id, Sent: t0},
		{Kind: KindReceipt, ID: id, Sent: t0, Receipt: &Receipt{Type: ReceiptRead, IDs: [][16]byte{{1}, {2}}}},
		{Kind: KindTyping, ID: id, Sent: t0, Typing: true},
		{Kind: KindGroupUpdate, ID: id, Sent: t0, Group: [16]byte{4}, GroupState: &Group{Revision: 2, Name: "g",
			Members: []Member{{Account: acct, Role: RoleAdmin}, {Account: acct2, Role: RoleMember}}}},
		{Kind: KindSenderKey, ID: id, Sent: t0, Group: [16]byte{4}, SenderKey: []byte{1, 2, 3}},
		{Kind: KindResendRequest, ID: id, Sent: t0, Target: [16]byte{8}},
		{Kind: KindResendRequest, ID: id, Sent: t0, Group: [16]byte{4}, Target: [16]byte{8}},
		{Kind: KindTranscript, ID: id, Sent: t0, Destination: &Destination{Account: acct}, Nested: []byte{1, 2}},
		{Kind: KindProfile, ID: id, Sent: t0, AccessKey: [32]byte{1}},
		{Kind: KindProvision, ID: id, Sent: t0, Data: []byte("x")},
		{Kind: KindBatch, ID: id, Sent: t0, AccessKey: [32]byte{6}, Batch: batchOf(
			&Message{Kind: KindText, ID: [16]byte{1}, Sent: t0, Text: "one"},
			&Message{Kind: KindReaction, ID: [16]byte{2}, Sent: t0, Target: [16]byte{1}, Emoji: "👍"},
			&Message{Kind: KindReceipt, ID: [16]byte{3}, Sent: t0, Receipt: &Receipt{Type: ReceiptDelivered, IDs: [][16]byte{{4}}}})},
	}
}

// batchOf encodes messages as the members of a batch.
func batchOf(ms ...*Message) [][]byte {
	var out [][]byte
	for _, m := range ms {
		b, err := m.Marshal()
		if err != nil {
			panic(err)
		}
		out = append(out, b)
	}
	return out
}

func TestRoundTrip(t *testing.T) {
	for _, m := range samples() {
		t.Run(m.Kind.String(), func(t *testing.T) {
			b, err := m.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			got, err := Parse(b)
			if err != nil {
				t.Fatal(err)
			}
			b2, err := got.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, b2) {
				t.Fatalf("re-marshal differs")
			}
			if got.Text != m.Text || got.Kind != m.Kind || !got.Sent.Equal(m.Sent) || got.Timer != m.Timer {
				t.Fatalf("got %+v, want %+v", got, m)
			}
		})
	}
}

// TestTranscriptOverhead: a transcript is TranscriptOverhead longer than
// what it carries, for a 1:1 and a group destination, whatever the size.
func TestTranscriptOverhead(t *testing.T) {
	for _, m := range samples() {
		nested, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range []*Destination{{Account: crypto.AccountID{1}}, {Group: [16]byte{1}}} {
			tr := &Message{Kind: KindTranscript, ID: m.ID, Sent: m.Sent, Destination: d, Nested: nested}
			b, err := tr.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if len(b) != len(nested)+TranscriptOverhead {
				t.Fatalf("%s: transcript of %d bytes is %d, want %d", m.Kind, len(nested), len(b), len(nested)+TranscriptOverhead)
			}
		}
	}
}

func TestMarshalRejects(t *testing.T) {
	for name, m := range map[string]*Message{
		"no kind":            {ID: [16]byte{1}, Sent: t0},
		"unknown kind":       {Kind: 99, Sent: t0},
		"zero time":          {Kind: KindText, Text: "x"},
		"text on delete":     {Kind: KindDelete, Sent: t0, Text: "x"},
		"typing access key":  {Kind: KindTyping, Sent: t0, AccessKey: [32]byte{1}},
		"invalid utf8":       {Kind: KindText, Sent: t0, Text: "\xff"},
		"too long text":      {Kind: KindText, Sent: t0, Text: strings.Repeat("a", MaxTextLen+1)},
		"sub-second timer":   {Kind: KindTimer, Sent: t0, Timer: time.Millisecond},
		"empty receipt":      {Kind: KindReceipt, Sent: t0, Receipt: &Receipt{Type: ReceiptRead}},
		"bad receipt type":   {Kind: KindReceipt, Sent: t0, Receipt: &Receipt{Type: 9, IDs: [][16]byte{{1}}}},
		"unsorted members":   {Kind: KindGroupUpdate, Sent: t0, GroupState: &Group{Revision: 1, Members: []Member{{Account: crypto.AccountID{2}, Role: 1}, {Account: crypto.AccountID{1}, Role: 1}}}},
		"both destinations":  {Kind: KindTranscript, Sent: t0, Destination: &Destination{Account: crypto.AccountID{1}, Group: [16]byte{1}}},
		"attachment no key":  {Kind: KindText, Sent: t0, Attachments: []Attachment{{Size: 1}}},
		"negative sent time": {Kind: KindText, Sent: time.UnixMilli(-5), Text: "x"},
	} {
		if _, err := m.Marshal(); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
}

func header(kind Kind) []byte {
	b := []byte{Version, byte(kind)}
	b = append(b, make([]byte, 16)...)
	return append(b, 0, 0, 0, 0, 0, 0, 0, 1)
}

func field(tag byte, v ...byte) []byte {
	return append([]byte{tag, byte(len(v) >> 16), byte(len(v) >> 8), byte(len(v))}, v...)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestParseHostile(t *testing.T) {
	good, _ := samples()[1].Marshal()
	cases := map[string][]byte{
		// bad framing
		"empty":           {},
		"version 0":       cat([]byte{0}, header(KindText)[1:]),
		"version 2":       cat([]byte{2}, header(KindText)[1:]),
		"short header":    header(KindText)[:20],
		"kind 0":          header(0),
		"kind unknown":    header(200),
		"trailing byte":   cat(good, []byte{0}),
		"truncated field": cat(header(KindText), []byte{tagText, 0, 0, 5, 'a'}),
		"huge sent time":  cat([]byte{Version, byte(KindText)}, make([]byte, 16), []byte{0xff, 0, 0, 0, 0, 0, 0, 0}, field(tagText, 'a')),
		// non-canonical encodings
		"tags out of order":    cat(header(KindText), field(tagText, 'a'), field(tagAccessKey, make([]byte, 32)...)),
		"repeated tag":         cat(header(KindText), field(tagText, 'a'), field(tagText, 'b')),
		"empty text field":     cat(header(KindText), field(tagText)),
		"zero access key":      cat(header(KindText), field(tagAccessKey, make([]byte, 32)...)),
		"zero timer":           cat(header(KindTimer), field(tagTimer, 0, 0, 0, 0)),
		"zero flags":           cat(header(KindTyping), field(tagFlags, 0)),
		"empty attachments":    cat(header(KindText), field(tagAttachments)),
		"zero reply":           cat(header(KindText), field(tagReply, make([]byte, 36)...)),
		"empty sender key":     cat(header(KindSenderKey), field(tagSenderKey)),
		"unknown tag":          cat(header(KindText), field(200, 1)),
		"tag 0":                cat(header(KindText), field(0, 1)),
		"unknown flag":         cat(header(KindTyping), field(tagFlags, 0x80)),
		"field not for kind":   cat(header(KindDelete), field(tagText, 'a')),
		"short group id":       cat(header(KindText), field(tagGroup, 1, 2)),
		"long access key":      cat(header(KindText), field(tagAccessKey, make([]byte, 33)...)),
		"receipt odd length":   cat(header(KindReceipt), field(tagReceipt, 1, 1, 2, 3)),
		"receipt no ids":       cat(header(KindReceipt), field(tagReceipt, 1)),
		"receipt type 3":       cat(header(KindReceipt), field(tagReceipt, cat([]byte{3}, make([]byte, 16))...)),
		"invalid utf8 text":    cat(header(KindText), field(tagText, 0xff)),
		"member bad role":      cat(header(KindGroupUpdate), field(tagGroupState, cat(make([]byte, 7), []byte{1, 0, 0}, make([]byte, 20), []byte{7})...)),
		"destination both":     cat(header(KindTranscript), field(tagDestination, cat([]byte{1}, make([]byte, 19), []byte{1}, make([]byte, 15))...)),
		"destination none":     cat(header(KindTranscript), field(tagDestination, make([]byte, 36)...)),
		"attachment truncated": cat(header(KindText), field(tagAttachments, 1, 2, 3)),
		"batch of one":         cat(header(KindBatch), field(tagBatch, u16(textMember)...)),
		"batch empty member":   cat(header(KindBatch), field(tagBatch, cat(u16(textMember), []byte{0, 0})...)),
		"batch truncated":      cat(header(KindBatch), field(tagBatch, cat(u16(textMember), []byte{0, 9, 1})...)),
		"batch too many":       cat(header(KindBatch), field(tagBatch, bytes.Repeat(u16(textMember), MaxBatchMembers+1)...)),
		"batch field on text":  cat(header(KindText), field(tagText, 'a'), field(tagBatch, cat(u16(textMember), u16(textMember))...)),
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			m, err := Parse(in)
			if m != nil || !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse = %v, %v; want nil, ErrMalformed", m, err)
			}
		})
	}
	// A truncation parses only when it ends on a field boundary (the fields
	// are optional; the AEAD, not this encoding, stops truncation), and
	// then it is canonical. Truncations inside the header or a field fail.
	for i := range good {
		m, err := Parse(good[:i])
		if err != nil {
			continue
		}
		if i < 26 {
			t.Fatalf("truncated header (%d bytes) parsed", i)
		}
		if out, _ := m.Marshal(); !bytes.Equal(out, good[:i]) {
			t.Fatalf("truncation to %d bytes parsed but is not canonical", i)
		}
	}
}

// textMember is an encoded text message, a valid batch member.
var textMember, _ = (&Message{Kind: KindText, ID: [16]byte{1}, Sent: t0, Text: "a"}).Marshal()

// u16 prefixes b with its length as a batch member is.
func u16(b []byte) []byte { return cat([]byte{byte(len(b) >> 8), byte(len(b))}, b) }

func TestBatchMembers(t *testing.T) {
	key := [32]byte{6}
	good := &Message{Kind: KindBatch, ID: [16]byte{9}, Sent: t0, AccessKey: key, Batch: batchOf(
		&Message{Kind: KindText, ID: [16]byte{1}, Sent: t0, Text: "one"},
		&Message{Kind: KindDelete, ID: [16]byte{2}, Sent: t0, Target: [16]byte{1}})}
	ms, err := good.Members()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[0].Text != "one" || ms[1].Kind != KindDelete || ms[0].AccessKey != key || ms[1].AccessKey != key {
		t.Fatalf("Members = %+v", ms)
	}
	if _, err := (&Message{Kind: KindText, Text: "x"}).Members(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Members of a text: %v", err)
	}

	// Members that may not travel in a batch, each beside a valid one.
	bad := map[string]*Message{
		"nested batch":   good,
		"group message":  {Kind: KindText, ID: [16]byte{3}, Sent: t0, Group: [16]byte{4}, Text: "g"},
		"typing":         {Kind: KindTyping, ID: [16]byte{3}, Sent: t0, Typing: true},
		"resend request": {Kind: KindResendRequest, ID: [16]byte{3}, Sent: t0, Target: [16]byte{1}},
		"transcript":     {Kind: KindTranscript, ID: [16]byte{3}, Sent: t0, Destination: &Destination{Group: [16]byte{1}}, Nested: []byte{1}},
		"profile":        {Kind: KindProfile, ID: [16]byte{3}, Sent: t0, AccessKey: key},
		"own access key": {Kind: KindText, ID: [16]byte{3}, Sent: t0, AccessKey: key, Text: "k"},
		"repeated ID":    {Kind: KindText, ID: [16]byte{1}, Sent: t0, Text: "again"},
	}
	for name, mem := range bad {
		t.Run(name, func(t *testing.T) {
			b := &Message{Kind: KindBatch, ID: [16]byte{9}, Sent: t0, Batch: batchOf(
				&Message{Kind: KindText, ID: [16]byte{1}, Sent: t0, Text: "one"}, mem)}
			raw, err := b.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := Parse(raw)
			if err != nil {
				t.Fatal(err) // the framing is valid; the member is not
			}
			if ms, err := parsed.Members(); ms != nil || !errors.Is(err, ErrMalformed) {
				t.Fatalf("Members = %v, %v; want nil, ErrMalformed", ms, err)
			}
		})
	}
	// A member that does not parse at all.
	raw := cat(header(KindBatch), field(tagBatch, cat(u16(textMember), u16([]byte{Version, 99}))...))
	parsed, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parsed.Members(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Members with a garbage member: %v", err)
	}
}

func FuzzContent(f *testing.F) {
	for _, m := range samples() {
		b, _ := m.Marshal()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse(data)
		if err != nil {
			if m != nil {
				t.Fatal("non-nil message with error")
			}
			return
		}
		out, err := m.Marshal()
		if err != nil {
			t.Fatalf("parsed message does not marshal: %v", err)
		}
		if !bytes.Equal(out, data) {
			t.Fatalf("parse then marshal differs:\n in %x\nout %x", data, out)
		}
		if m.Kind == KindBatch {
			ms, err := m.Members()
			if err != nil && ms != nil {
				t.Fatal("members with an error")
			}
			for _, mem := range ms {
				if !mem.CanBatch() || mem.AccessKey != m.AccessKey {
					t.Fatalf("member %v accepted", mem.Kind)
				}
			}
		}
	})
}
