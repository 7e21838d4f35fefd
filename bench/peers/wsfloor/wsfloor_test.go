package wsfloor

import (
	"context"
	"flag"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var latencyFor = flag.Duration("ws.latency", 3*time.Second, "how long the fixed-rate latency run sends")

const (
	pairs    = 100
	inFlight = 32
	size     = 256
)

func setup(tb testing.TB) *Load {
	tb.Helper()
	f := NewForwarder()
	tb.Cleanup(f.Close)
	l := &Load{Pairs: pairs, InFlight: inFlight, Size: size}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := l.Dial(ctx, f.URL()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(l.Close)
	return l
}

// TestForward checks every message arrives once.
func TestForward(t *testing.T) {
	l := setup(t)
	var got atomic.Int64
	l.OnReceive = func(time.Duration) { got.Add(1) }
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.Run(ctx, 5000, 0); err != nil {
		t.Fatal(err)
	}
	if got.Load() != 5000 {
		t.Fatalf("received %d of 5000", got.Load())
	}
}

// BenchmarkForward: throughput reports end-to-end msgs/s over 100 pairs with ≤32 in flight
// each (b.N messages); latency sends at 2,000 msgs/s and reports send-to-receive p50/p99.
func BenchmarkForward(b *testing.B) {
	b.Run("throughput", func(b *testing.B) {
		l := setup(b)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if err := l.Run(ctx, 2000, 0); err != nil { // warm-up
			b.Fatal(err)
		}
		b.ResetTimer()
		t0 := time.Now()
		if err := l.Run(ctx, b.N, 0); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "msgs/s")
	})
	b.Run("latency", func(b *testing.B) {
		l := setup(b)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if err := l.Run(ctx, 2000, 0); err != nil {
			b.Fatal(err)
		}
		var mu sync.Mutex
		var lat []time.Duration
		l.OnReceive = func(d time.Duration) {
			mu.Lock()
			lat = append(lat, d)
			mu.Unlock()
		}
		n := int(latencyFor.Seconds() * 2000)
		b.ResetTimer()
		for range b.N {
			if err := l.Run(ctx, n, 2000); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Nanoseconds()) / 1e3 }
		b.ReportMetric(q(0.50), "p50-µs")
		b.ReportMetric(q(0.99), "p99-µs")
	})
}
