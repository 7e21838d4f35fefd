package pebblestore

import (
	"fmt"
	"hash/maphash"
	"math/bits"

	"github.com/cockroachdb/pebble/v2"
)

// idemFilter is a Bloom filter over every idempotency key in the database,
// so that a Put can skip the database lookup for a message ID it has never
// seen, which is almost every one: that lookup (a memtable seek that
// misses) was about a tenth of the relay's CPU per message.
//
// It may answer "maybe" for a key that is not there (a false positive, or a
// key deleted since: nothing is ever removed), which only costs the lookup;
// it must never answer "no" for a key that is there. So every idempotency
// key written goes through writer.set, which adds it before the batch is
// applied (a batch that then fails leaves a harmless extra), and Open adds
// every key already stored. It is owned by the committer goroutine.
//
// Keys accumulate (acknowledged and expired messages' keys stay in it),
// so when more keys have been added than it was sized for, the committer
// rebuilds it, twice as large, from the keys the database holds, up to
// maxIdemFilterBits; beyond that it stays as it is and its false positive
// rate climbs, costing lookups but never correctness. The hash is seeded
// at random per process, so message IDs chosen to collide cannot be
// prepared in advance.
type idemFilter struct {
	seed     maphash.Seed
	words    []uint64
	mask     uint64 // bit count - 1 (a power of two)
	added    int    // keys added since built (with repeats)
	capacity int    // keys it was sized for
}

const (
	idemFilterBitsPerKey = 10 // about 1 % false positives with 7 hashes
	idemFilterHashes     = 7
	// minIdemFilterKeys is the capacity Open starts from at least (64 Ki
	// keys, 80 KiB).
	minIdemFilterKeys = 1 << 16
	// maxIdemFilterBits bounds the filter's memory (64 MiB, about 50
	// million keys at 1 %).
	maxIdemFilterBits = 64 << 20 * 8
)

// newIdemFilter returns an empty filter sized for capacity keys.
func newIdemFilter(capacity int) *idemFilter {
	capacity = max(capacity, 64)
	n := uint64(capacity) * idemFilterBitsPerKey
	n = min(uint64(1)<<bits.Len64(n-1), maxIdemFilterBits) // a power of two
	return &idemFilter{seed: maphash.MakeSeed(), words: make([]uint64, n/64), mask: n - 1, capacity: capacity}
}

// probes calls fn with each of k's bit positions (double hashing).
func (f *idemFilter) probes(k []byte, fn func(bit uint64) bool) bool {
	h := maphash.Bytes(f.seed, k)
	step := bits.RotateLeft64(h, 32) | 1
	for range idemFilterHashes {
		if !fn(h & f.mask) {
			return false
		}
		h += step
	}
	return true
}

func (f *idemFilter) add(k []byte) {
	f.probes(k, func(b uint64) bool {
		f.words[b/64] |= 1 << (b % 64)
		return true
	})
	f.added++
}

// mayContain reports false only if k was never added.
func (f *idemFilter) mayContain(k []byte) bool {
	return f.probes(k, func(b uint64) bool { return f.words[b/64]&(1<<(b%64)) != 0 })
}

// outgrown reports whether the filter holds more keys than it was sized
// for and may still grow.
func (f *idemFilter) outgrown() bool {
	return f.added > f.capacity && f.mask+1 < maxIdemFilterBits
}

// buildIdemFilter returns a filter holding every idempotency key in the
// database, sized for at least twice as many (and at least atLeast).
func (d *DB) buildIdemFilter(atLeast int) (*idemFilter, error) {
	var keys int
	lo, hi := []byte{tIdem}, []byte{tIdem + 1}
	if err := d.scanKeys(lo, hi, func([]byte) { keys++ }); err != nil {
		return nil, fmt.Errorf("pebblestore: idempotency filter: %w", err)
	}
	f := newIdemFilter(max(2*keys, atLeast))
	if err := d.scanKeys(lo, hi, f.add); err != nil {
		return nil, fmt.Errorf("pebblestore: idempotency filter: %w", err)
	}
	return f, nil
}

// scanKeys calls fn with each key in [lower, upper) of the committed
// database; fn must not keep the slice.
func (d *DB) scanKeys(lower, upper []byte, fn func(k []byte)) error {
	it, err := d.pdb.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return err
	}
	for valid := it.First(); valid; valid = it.Next() {
		fn(it.Key())
	}
	return it.Close()
}
