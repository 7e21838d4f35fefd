package recovering_test

import (
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/relay/store"
	"github.com/sotto-im/sotto/relay/store/pebblestore"
	"github.com/sotto-im/sotto/relay/store/recovering"
	"github.com/sotto-im/sotto/relay/store/storetest"
)

// What the wrapper costs per call: a read lock and a call count on the
// current store. The benchmarks compare calls straight to pebblestore with
// calls through the wrapper, on a real directory, and report CPU time per
// operation (user + system, all threads), which the shared machine's
// wall-clock noise does not disturb as much:
//
//	go test -run XXX -bench . -count 5 ./relay/store/recovering
func BenchmarkOverhead(b *testing.B) {
	for _, wrapped := range []bool{false, true} {
		name := "direct"
		if wrapped {
			name = "wrapped"
		}
		open := func(b *testing.B) store.Queues {
			dir := b.TempDir()
			openStore := func() (recovering.Store, error) {
				return pebblestore.Open(dir, pebblestore.Options{MaxQueueMessages: 1 << 30, MaxQueueBytes: 1 << 40})
			}
			if !wrapped {
				s, err := openStore()
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { s.Close() })
				return s
			}
			d, err := recovering.Open(recovering.Options{Dir: dir, FS: vfs.Default, Open: openStore})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { d.Close() })
			return d
		}
		b.Run("Depth/"+name, func(b *testing.B) {
			s := open(b)
			q := storetest.Q(1, 1)
			cpu := startCPU()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, _, err := s.Depth(ctx, q); err != nil {
						b.Error(err)
						return
					}
				}
			})
			cpu.report(b)
		})
		b.Run("Put64/"+name, func(b *testing.B) {
			s := open(b)
			body := make([]byte, 256)
			expires := time.Now().Add(time.Hour)
			var n atomic.Uint64
			b.SetParallelism(32) // × GOMAXPROCS: 64 writers on 2 cores
			cpu := startCPU()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1)
					var id [16]byte
					id[0], id[1], id[2], id[3] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
					e := store.Entry{Queue: storetest.Q(byte(i%250), crypto.DeviceID(1+i%4)), ID: id, Expires: expires}
					if _, err := s.Put(ctx, body, []store.Entry{e}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			cpu.report(b)
		})
	}
}

type cpuStart struct{ t time.Duration }

func cpuNow() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startCPU() cpuStart { return cpuStart{cpuNow()} }

func (c cpuStart) report(b *testing.B) {
	b.ReportMetric(float64(cpuNow()-c.t)/float64(b.N), "cpu-ns/op")
}
