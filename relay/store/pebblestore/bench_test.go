package pebblestore

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/relay/store"
	"github.com/sotto-im/sotto/relay/store/storetest"
)

// The benchmarks run on a real directory (t.TempDir) so that every sync is
// a real fsync. Run with e.g.
//
//	go test -run XXX -bench . -benchtime 3s ./relay/store/pebblestore

const benchMsgSize = 256

// randBody returns a 256 B random body: ciphertext does not compress.
func randBody() []byte {
	b := make([]byte, benchMsgSize)
	_, _ = rand.Read(b)
	return b
}

func benchID(n uint64) [16]byte {
	var id [16]byte
	binary.BigEndian.PutUint64(id[8:], n)
	return id
}

func reportRate(b *testing.B, msgs int) {
	b.ReportMetric(float64(msgs)/b.Elapsed().Seconds(), "msgs/s")
}

// benchPut puts one 256 B message per operation from writers goroutines,
// spread over 1,000 queues.
func benchPut(b *testing.B, writers int, opts Options) {
	opts.MaxQueueMessages = 1 << 30
	opts.MaxQueueBytes = 1 << 40
	d := diskFixture(b, opts).open(b)
	body := randBody()
	expires := time.Now().Add(time.Hour)
	var n atomic.Uint64
	b.SetParallelism((writers + 1) / 2) // × GOMAXPROCS (2 here)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			e := store.Entry{Queue: storetest.Q(byte(i%250), crypto.DeviceID(1+i%4)), ID: benchID(i), Expires: expires}
			if _, err := d.Put(ctx, body, []store.Entry{e}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	reportRate(b, b.N)
}

func BenchmarkPut(b *testing.B) {
	for _, w := range []int{1, 64} {
		b.Run(fmt.Sprintf("writers=%d", w), func(b *testing.B) {
			if w == 1 {
				// RunParallel with parallelism 1 still starts GOMAXPROCS
				// goroutines; one writer means a plain loop.
				benchPutSerial(b)
				return
			}
			benchPut(b, w, Options{})
		})
	}
}

func benchPutSerial(b *testing.B) {
	d := diskFixture(b, Options{MaxQueueMessages: 1 << 30, MaxQueueBytes: 1 << 40}).open(b)
	body := randBody()
	expires := time.Now().Add(time.Hour)
	b.ResetTimer()
	for i := range b.N {
		e := store.Entry{Queue: storetest.Q(byte(i%250), 1), ID: benchID(uint64(i)), Expires: expires}
		if _, err := d.Put(ctx, body, []store.Entry{e}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportRate(b, b.N)
}

// BenchmarkPutMulti1000 stores one 256 B body referenced from 1,000 queues
// (a group message to 1,000 devices) per operation.
func BenchmarkPutMulti1000(b *testing.B) {
	d := diskFixture(b, Options{MaxQueueMessages: 1 << 30, MaxQueueBytes: 1 << 40}).open(b)
	body := randBody()
	expires := time.Now().Add(time.Hour)
	entries := make([]store.Entry, 1000)
	b.ResetTimer()
	for i := range b.N {
		for j := range entries {
			entries[j] = store.Entry{Queue: storetest.Q(byte(j%250), crypto.DeviceID(1+j/250)), ID: benchID(uint64(i)), Expires: expires, Header: make([]byte, 32)}
		}
		if _, err := d.Put(ctx, body, entries); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportRate(b, b.N*len(entries))
}

// BenchmarkPebbleSyncRecords is the ceiling of the design this package did
// not choose: each Put its own synced batch, relying on Pebble's WAL group
// commit, writing the same four records a one-recipient Put writes here
// (entry with inline body, idempotency, expiry, counters) but skipping every
// read (duplicate check, counters), which that design would still need
// under a lock.
func BenchmarkPebbleSyncRecords(b *testing.B) {
	db, err := pebble.Open(b.TempDir(), &pebble.Options{Logger: pebbleLogger{}})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	body := randBody()
	var n atomic.Uint64
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			q := storetest.Q(byte(i%250), crypto.DeviceID(1+i%4))
			cur := makeCursor(0, i)
			e := entry{id: benchID(i), stored: i, expires: i, bodyLen: uint32(len(body)), inline: body}
			bt := db.NewBatch()
			_ = bt.Set(entryKey(q, cur), e.encode(), nil)
			_ = bt.Set(idemKey(q, e.id), idem{cursor: cur, etime: i}.encode(), nil)
			_ = bt.Set(expiryKey(i, q, cur), e.id[:], nil)
			_ = bt.Set(queueKey(tCounter, q), counters{messages: int64(i)}.encode(), nil)
			if err := bt.Commit(pebble.Sync); err != nil {
				b.Error(err)
				return
			}
			_ = bt.Close()
		}
	})
	b.StopTimer()
	reportRate(b, b.N)
}

// BenchmarkPebbleSync is the reference: raw Pebble, one synced batch of one
// 256 B value per operation, relying on Pebble's own WAL group commit.
func BenchmarkPebbleSync(b *testing.B) {
	for _, w := range []int{1, 64} {
		b.Run(fmt.Sprintf("writers=%d", w), func(b *testing.B) {
			db, err := pebble.Open(b.TempDir(), &pebble.Options{Logger: pebbleLogger{}})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			val := randBody()
			var n atomic.Uint64
			b.SetParallelism((w + 1) / 2)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					k := binary.BigEndian.AppendUint64([]byte("k"), n.Add(1))
					if err := db.Set(k, val, pebble.Sync); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			reportRate(b, b.N)
		})
	}
}
