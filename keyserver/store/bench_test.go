package store_test

import (
	"encoding/binary"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/keyserver/store"
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

// BenchmarkClaim measures ClaimBundles alone: 64 goroutines claiming from
// devices holding 1,000 one-time prekeys each, with synced claims in a real directory.
func BenchmarkClaim(b *testing.B) {
	db, err := store.Open(b.TempDir(), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	devices := int64(b.N/store.MaxOneTimePreKeys + 1)
	k := store.DeviceKeys{SignedPreKey: &store.PreKey{ID: 1, Encoded: make([]byte, 100)}, LastResort: &store.PreKey{ID: 2, Encoded: make([]byte, 1255)}}
	for j := range store.MaxOneTimePreKeys {
		k.OneTimeEC = append(k.OneTimeEC, store.PreKey{ID: uint32(j), Encoded: make([]byte, 36)})
		k.OneTimeKEM = append(k.OneTimeKEM, store.PreKey{ID: uint32(j), Encoded: make([]byte, 1255)})
	}
	var ids []crypto.AccountID
	for i := range devices {
		a := &store.Account{Version: 1, Devices: []store.Device{{ID: 1}}, DeviceList: []byte("l")}
		a.ID[0], a.ID[1] = byte(i), byte(i>>8)
		if err := db.CreateAccount(b.Context(), a, 1, k); err != nil {
			b.Fatal(err)
		}
		ids = append(ids, a.ID)
	}
	if err := db.Compact(b.Context()); err != nil {
		b.Fatal(err)
	}
	var next atomic.Int64
	b.SetParallelism(32)
	b.ResetTimer()
	cpu0 := processCPU()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_, bs, err := db.ClaimBundles(b.Context(), ids[next.Add(1)%devices], nil)
			if err != nil || len(bs) != 1 || bs[0].OneTimeEC == nil {
				b.Errorf("claim: %v", err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "claims/s")
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/claim")
}

// processCPU returns the user and system CPU time of the process so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
