package store_test

import (
	"encoding/binary"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// BenchmarkPebbleSyncedDeletes is the floor under claims: 64 writers each
// committing one synced single-key batch, as claims do, in a real
// directory. Pebble groups their WAL syncs.
func BenchmarkPebbleSyncedDeletes(b *testing.B) {
	db, err := pebble.Open(b.TempDir(), &pebble.Options{Logger: quiet{}})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	b.SetParallelism(32)
	b.ResetTimer()
	var n uint64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			k := binary.BigEndian.AppendUint64(nil, n)
			n++ // racy on purpose: keys need not be distinct
			bt := db.NewBatch()
			bt.Delete(k, nil)
			if err := bt.Commit(pebble.Sync); err != nil {
				b.Error(err)
			}
			bt.Close()
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commits/s")
}

type quiet struct{}

func (quiet) Infof(string, ...any)  {}
func (quiet) Errorf(string, ...any) {}
func (quiet) Fatalf(string, ...any) {}
