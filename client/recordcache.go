package client

import (
	"sync"

	"github.com/sotto-im/sotto/internal/boundedmap"
)

// recordCache holds decoded records of one kind (contacts, conversations)
// by key. Sending and receiving a message each read the peer's contact
// record several times (who may receive, who sent, the access key, the
// device list); from the store every read is a Pebble lookup, an
// AES-GCM open and a JSON decode, a tenth of the CPU of a message in the
// client-to-client benchmark.
//
// The cache is written through: a record enters it only after the store
// accepted the same record, and a failed write removes it, so it never
// holds what the store does not. Records come out as shallow copies, so a
// caller may change fields freely; the record types' slices are only ever
// replaced, never modified in place (their fields are byte strings and
// verified device lists that nobody edits).
//
// It holds at most maxCachedRecords entries; when full, an arbitrary one
// makes room. The zero value is an empty cache.
type recordCache[K comparable, T any] struct {
	once sync.Once
	m    *boundedmap.Map[K, *T]
}

const maxCachedRecords = 4096

func (rc *recordCache[K, T]) records() *boundedmap.Map[K, *T] {
	rc.once.Do(func() { rc.m = boundedmap.New[K, *T](maxCachedRecords) })
	return rc.m
}

// get returns a copy of the record cached under k.
func (rc *recordCache[K, T]) get(k K) (*T, bool) {
	r, ok := rc.records().Get(k)
	if !ok {
		return nil, false
	}
	cp := *r
	return &cp, true
}

// put caches a copy of r under k: r is what the store now holds.
func (rc *recordCache[K, T]) put(k K, r *T) {
	cp := *r
	rc.records().Put(k, &cp)
}

// forget drops k: the store's record is unknown (a write failed).
func (rc *recordCache[K, T]) forget(k K) { rc.records().Delete(k) }
