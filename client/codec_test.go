package client

import (
	"encoding/json"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/sotto-im/sotto/crypto"
)

func sampleStored() *storedMessage {
	reply := MessageID{9, 9, 9}
	return &storedMessage{
		V: recordVersion, From: crypto.AccountID{1, 2, 3}, Device: 7, Outgoing: true,
		Sent: time.Unix(1_800_000_000, 123456789), Received: time.Unix(1_800_000_001, 5),
		Text: "héllo, wörld", ReplyTo: &reply, Status: StatusDelivered, Edited: true,
		Attachments: []Attachment{{BlobID: [16]byte{4}, Identity: "AGE-SECRET-KEY-1X", Size: 1 << 20,
			Digest: [32]byte{5}, ContentType: "image/png", FileName: "cat.png"}},
		Reactions: map[string]string{"b": "🎉", "a": "👍"},
		ExpiresAt: time.Unix(1_800_000_100, 0), Timer: 90 * time.Second, Envelope: [16]byte{8, 8},
	}
}

// sameStored compares two history records by instant for the times
// (decoding gives local times, as decoding the message did).
func sameStored(t *testing.T, got, want *storedMessage) {
	t.Helper()
	for _, p := range [][2]*time.Time{{&got.Sent, &want.Sent}, {&got.Received, &want.Received}, {&got.ExpiresAt, &want.ExpiresAt}} {
		if !p[0].Equal(*p[1]) {
			t.Fatalf("time %v, want %v", *p[0], *p[1])
		}
		*p[0] = *p[1]
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded\n%+v\nwant\n%+v", got, want)
	}
}

// TestStoredRecordRoundTrip: a history record survives the binary form,
// with and without its optional parts, and the zero times stay zero.
func TestStoredRecordRoundTrip(t *testing.T) {
	full := sampleStored()
	bare := &storedMessage{V: recordVersion, From: crypto.AccountID{1}, Status: StatusReceived}
	for name, m := range map[string]*storedMessage{"full": full, "bare": bare} {
		b, err := marshalStored(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeStored(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if name == "bare" && (!got.Sent.IsZero() || !got.ExpiresAt.IsZero()) {
			t.Fatalf("zero times came back as %v, %v", got.Sent, got.ExpiresAt)
		}
		sameStored(t, got, m)
		again, _ := marshalStored(got)
		if string(again) != string(b) {
			t.Fatalf("%s: encoding is not deterministic", name)
		}
	}
}

// TestStoredRecordLegacyJSON: records written as JSON by earlier
// versions still decode.
func TestStoredRecordLegacyJSON(t *testing.T) {
	m := sampleStored()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeStored(b)
	if err != nil {
		t.Fatal(err)
	}
	sameStored(t, got, m)

	r := &outboxRecord{V: recordVersion, ID: [16]byte{1}, Conv: ConversationID{2}, To: []crypto.AccountID{{3}}, Content: []byte("x"), Track: true}
	if b, err = json.Marshal(r); err != nil {
		t.Fatal(err)
	}
	var o outboxRecord
	if err := decodeOutbox(b, &o); err != nil || !reflect.DeepEqual(&o, r) {
		t.Fatalf("legacy outbox record: %+v, %v", o, err)
	}
}

// TestOutboxRecordRoundTrip: an outbox record survives the binary form.
func TestOutboxRecordRoundTrip(t *testing.T) {
	for _, r := range []*outboxRecord{
		{V: recordVersion, ID: [16]byte{1}, Conv: ConversationID{2}, To: []crypto.AccountID{{3}, {4}}, Content: []byte("content"),
			Track: true, Sync: true, Group: true, RelayID: [16]byte{5}, Attempts: 3},
		{V: recordVersion, To: []crypto.AccountID{}, Content: []byte{}},
	} {
		b, err := marshalOutbox(r)
		if err != nil {
			t.Fatal(err)
		}
		var got outboxRecord
		if err := decodeOutbox(b, &got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(&got, r) {
			t.Fatalf("decoded %+v, want %+v", got, *r)
		}
	}
}

// TestRecordHostile: truncated, extended and malformed records are
// errors, never panics.
func TestRecordHostile(t *testing.T) {
	stored, _ := marshalStored(sampleStored())
	outbox, _ := marshalOutbox(&outboxRecord{ID: [16]byte{1}, To: []crypto.AccountID{{3}}, Content: []byte("c")})
	cases := map[string][]byte{
		"empty":          {},
		"unknown format": {2, 0, 0},
		"bad json":       []byte("{"),
	}
	for _, n := range []int{1, 2, 10, 40, len(stored) / 2, len(stored) - 1} {
		cases["stored cut at "+strconv.Itoa(n)] = stored[:n]
	}
	cases["stored with trailing byte"] = append(append([]byte(nil), stored...), 0)
	badNanos := append([]byte(nil), stored...)
	copy(badNanos[1+1+32+4+1+8:], []byte{0xff, 0xff, 0xff, 0xff})
	cases["stored nanoseconds out of range"] = badNanos
	for name, b := range cases {
		if _, err := decodeStored(b); err == nil {
			t.Errorf("stored %s: decoded", name)
		}
	}
	ocases := map[string][]byte{"empty": {}, "bad json": []byte("{\"to\":1}"),
		"trailing": append(append([]byte(nil), outbox...), 0)}
	for _, n := range []int{1, 2, 18, 50, len(outbox) - 1} {
		ocases["cut at "+strconv.Itoa(n)] = outbox[:n]
	}
	bad := append([]byte(nil), outbox...)
	bad[1+1+16+32+4+1]-- // recipients length no longer a multiple of 32
	ocases["partial recipient"] = bad
	for name, b := range ocases {
		var r outboxRecord
		if err := decodeOutbox(b, &r); err == nil {
			t.Errorf("outbox %s: decoded", name)
		}
	}
}

// FuzzRecords: any bytes decode to an error or to a record that encodes
// and decodes to itself.
func FuzzRecords(f *testing.F) {
	stored, _ := marshalStored(sampleStored())
	outbox, _ := marshalOutbox(&outboxRecord{ID: [16]byte{1}, To: []crypto.AccountID{{3}}, Content: []byte("c"), RelayID: [16]byte{2}})
	f.Add(stored)
	f.Add(outbox)
	f.Add([]byte(`{"v":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := decodeStored(b); err == nil && len(b) > 0 && b[0] != '{' {
			enc, err := marshalStored(m)
			if err != nil {
				t.Fatalf("decoded record does not encode: %v", err)
			}
			if m2, err := decodeStored(enc); err != nil || !reflect.DeepEqual(m2.Reactions, m.Reactions) || m2.Text != m.Text {
				t.Fatalf("re-encoded record differs: %v", err)
			}
		}
		var r outboxRecord
		if err := decodeOutbox(b, &r); err == nil && len(b) > 0 && b[0] != '{' {
			enc, err := marshalOutbox(&r)
			if err != nil {
				t.Fatalf("decoded outbox record does not encode: %v", err)
			}
			var r2 outboxRecord
			if err := decodeOutbox(enc, &r2); err != nil || !reflect.DeepEqual(&r2, &r) {
				t.Fatalf("re-encoded outbox record differs: %v", err)
			}
		}
	})
}
