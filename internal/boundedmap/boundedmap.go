// Package boundedmap is a map safe for concurrent use that holds at most a
// given number of entries: when it is full, a new key displaces an
// arbitrary entry. It serves caches whose entries all cost about the same
// to recompute (a lookup, a decode), where keeping the most recent ones
// would not be worth an LRU list's memory and upkeep.
package boundedmap

import "sync"

// Map is a bounded map. The zero value is not usable: use New.
type Map[K comparable, V any] struct {
	mu  sync.Mutex
	max int
	m   map[K]V
}

// New returns an empty Map holding at most limit entries (at least one).
func New[K comparable, V any](limit int) *Map[K, V] {
	return &Map[K, V]{max: max(limit, 1), m: make(map[K]V)}
}

// Get returns the value stored under k.
func (b *Map[K, V]) Get(k K) (V, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	v, ok := b.m[k]
	return v, ok
}

// Put stores v under k, displacing an arbitrary entry if k is new and the
// map is full.
func (b *Map[K, V]) Put(k K, v V) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.m[k]; !ok && len(b.m) >= b.max {
		for old := range b.m {
			delete(b.m, old)
			break
		}
	}
	b.m[k] = v
}

// Take removes the entry under k and returns its value.
func (b *Map[K, V]) Take(k K) (V, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	v, ok := b.m[k]
	delete(b.m, k)
	return v, ok
}

// Delete removes the entry under k, if any.
func (b *Map[K, V]) Delete(k K) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.m, k)
}

// Len returns the number of entries.
func (b *Map[K, V]) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.m)
}
