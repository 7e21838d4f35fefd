package pebblestore

import (
	"context"
	"encoding/binary"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/sotto-im/sotto/client/store"
)

// Benchmarks of the message history. Run with
//
//	go test -run '^$' -bench . -benchtime 2s ./client/store/pebblestore
//
// "disk" stores are in a temporary directory and sync to it; "mem" stores
// are on vfs.NewMem, which measures the store's own cost (sealing,
// hashing, Pebble) without the device.

// benchText is a typical short message (the client's encoding adds a few
// bytes of framing).
var benchText = []byte(strings.Repeat("lorem ipsum dolor sit amet ", 4))

var benchBase = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func benchMessage(conv byte, n uint64) store.MessageRecord {
	m := store.MessageRecord{Time: benchBase.Add(time.Duration(n) * time.Millisecond), Data: benchText}
	m.Conversation[0] = conv
	binary.BigEndian.PutUint64(m.ID[:], n)
	return m
}

func benchStore(b *testing.B, fs vfs.FS) *DB {
	dir := "s"
	if fs == nil {
		dir = b.TempDir()
	}
	d, err := Create(dir, testPassphrase, testOptions(fs))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	return d
}

// fillConcurrently puts n messages spread over convs conversations from 32
// goroutines, so that synced commits share fsyncs.
func fillConcurrently(b *testing.B, d *DB, n, convs int) {
	var next atomic.Uint64
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= uint64(n) {
					return
				}
				if err := d.PutMessage(context.Background(), benchMessage(byte(i%uint64(convs)), i)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	if err := d.db.Flush(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkPutMessage measures a synced PutMessage of a 108-byte message:
// one writer at a time, and 32 concurrent writers (whose commits share
// fsyncs, as a client receiving and sending at once does).
func BenchmarkPutMessage(b *testing.B) {
	for _, c := range []struct {
		name     string
		fs       func() vfs.FS
		parallel bool
	}{
		{"disk", func() vfs.FS { return nil }, false},
		{"disk/parallel", func() vfs.FS { return nil }, true},
		{"mem", func() vfs.FS { return vfs.NewMem() }, false},
		{"mem/parallel", func() vfs.FS { return vfs.NewMem() }, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			d := benchStore(b, c.fs())
			b.ReportAllocs()
			b.SetBytes(int64(len(benchText)))
			var n atomic.Uint64
			start := time.Now()
			if c.parallel {
				b.SetParallelism(16) // 32 writers on 2 cores
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := d.PutMessage(context.Background(), benchMessage(1, n.Add(1))); err != nil {
							b.Error(err)
							return
						}
					}
				})
			} else {
				for b.Loop() {
					if err := d.PutMessage(context.Background(), benchMessage(1, n.Add(1))); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(n.Load())/time.Since(start).Seconds(), "msgs/s")
		})
	}
}

// BenchmarkListMessages measures reading a page of 50 messages from a
// conversation of 10,000 (in a store of 20,000): the newest page, and a
// page seeked to the middle of the history by time.
func BenchmarkListMessages(b *testing.B) {
	d := benchStore(b, nil)
	const n = 20000
	fillConcurrently(b, d, n, 2)
	conv := benchMessage(0, 0).Conversation
	middle := benchMessage(0, n/2).Time
	for _, c := range []struct {
		name   string
		before time.Time
	}{{"newest", time.Time{}}, {"seek", middle}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				page, err := d.ListMessages(context.Background(), conv, time.Time{}, c.before, 50)
				if err != nil || len(page) != 50 {
					b.Fatalf("ListMessages = %d, %v", len(page), err)
				}
			}
		})
	}
}

// BenchmarkScanMessages100k scans and decrypts 100,000 stored messages in
// 100 conversations, the work behind the client's search, and looks for a
// word in each (as search does) so the data is used.
func BenchmarkScanMessages100k(b *testing.B) {
	d := benchStore(b, nil)
	const n = 100000
	fillConcurrently(b, d, n, 100)
	needle := []byte("dolor")
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	scans := 0
	for b.Loop() {
		count, hits := 0, 0
		err := d.ScanMessages(context.Background(), func(m store.MessageRecord) error {
			count++
			if strings.Contains(string(m.Data), string(needle)) {
				hits++
			}
			return nil
		})
		if err != nil || count != n || hits != n {
			b.Fatalf("ScanMessages saw %d messages, %d hits, %v", count, hits, err)
		}
		scans++
	}
	b.ReportMetric(float64(scans*n)/time.Since(start).Seconds(), "msgs/s")
}
