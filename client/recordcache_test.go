package client

import (
	"testing"
)

// TestRecordCacheCopiesAndBounds checks what the caches of decoded records
// promise: what comes out is a copy the caller may change, a record put
// again replaces the old one, forget removes it, and the cache never holds
// more than maxCachedRecords entries.
func TestRecordCacheCopiesAndBounds(t *testing.T) {
	var rc recordCache[int, contactRecord]
	if _, ok := rc.get(1); ok {
		t.Fatal("empty cache returned a record")
	}
	rc.put(1, &contactRecord{Name: "alice"})
	r, ok := rc.get(1)
	if !ok || r.Name != "alice" {
		t.Fatalf("get = %+v, %v", r, ok)
	}
	r.Name = "mallory"
	if r2, _ := rc.get(1); r2.Name != "alice" {
		t.Fatalf("changing a returned record changed the cache: %q", r2.Name)
	}
	rc.put(1, &contactRecord{Name: "alice2"})
	if r2, _ := rc.get(1); r2.Name != "alice2" {
		t.Fatalf("put did not replace: %q", r2.Name)
	}
	rc.forget(1)
	if _, ok := rc.get(1); ok {
		t.Fatal("forget left the record")
	}
	for i := range 3 * maxCachedRecords {
		rc.put(i, &contactRecord{})
	}
	if n := rc.records().Len(); n > maxCachedRecords {
		t.Fatalf("%d entries, bound %d", n, maxCachedRecords)
	}
	if _, ok := rc.get(3*maxCachedRecords - 1); !ok {
		t.Fatal("the newest record was evicted")
	}
}

// TestStoredMessageClone checks that a clone of a history record shares
// nothing that is edited in place: reactions are changed in their map.
func TestStoredMessageClone(t *testing.T) {
	m := &storedMessage{Text: "hi", Reactions: map[string]string{"a": "👍"}, Attachments: []Attachment{{FileName: "x"}}}
	c := m.clone()
	c.Reactions["b"] = "🎉"
	c.Attachments[0].FileName = "y"
	if len(m.Reactions) != 1 || m.Attachments[0].FileName != "x" {
		t.Fatalf("clone shares state with the original: %+v", m)
	}
}
