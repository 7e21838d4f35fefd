package jetstream

import (
	"context"
	"flag"
	"fmt"
	"sync"
	"testing"
	"time"
)

var (
	latencyFor = flag.Duration("js.latency", 5*time.Second, "how long the fixed-rate latency run publishes")
	rate       = flag.Int("js.rate", 2000, "messages per second in the latency run")
	devices    = flag.Int("js.devices", 1000, "device subjects, one consumer each")
	msgs       = flag.Int("js.msgs", 0, "messages per throughput run in the default sync mode (0: b.N)")
	msgsSync   = flag.Int("js.msgs-sync", 0, "messages per throughput run with SyncAlways (0: b.N)")
)

const (
	msgSize  = 256
	subConns = 4
)

func startEnv(dir string, syncAlways, shared bool) (*Env, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return Start(ctx, Config{Dir: dir, SyncAlways: syncAlways, Devices: *devices, SubConns: subConns, Shared: shared})
}

func start(tb testing.TB, syncAlways, shared bool) *Env {
	tb.Helper()
	e, err := startEnv(tb.TempDir(), syncAlways, shared)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(e.Close)
	return e
}

// modes: the server's default sync (every 2 minutes) or SyncAlways, each with one consumer per
// device (the relay's shape: every device has its own queue position) or one shared consumer on
// all device subjects (cheaper for JetStream, which scans the stream per filtered consumer).
var modes = []struct {
	name               string
	syncAlways, shared bool
}{{"default", false, false}, {"default-shared", false, true}, {"syncalways", true, false}, {"syncalways-shared", true, true}}

// TestDeliver checks that every published message reaches its consumer and is acknowledged.
func TestDeliver(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server with 1000 consumers")
	}
	for _, shared := range []bool{false, true} {
		t.Run(fmt.Sprintf("shared=%v", shared), func(t *testing.T) {
			e := start(t, false, shared)
			var mu sync.Mutex
			seen := map[byte]int{}
			e.SetHandler(func(p []byte) {
				mu.Lock()
				seen[p[8]]++
				mu.Unlock()
			})
			p := make([]byte, msgSize)
			const n = 3000
			for i := range n {
				p[8] = byte(i % 3)
				if err := e.Publish(i, p); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := e.WaitPublished(ctx); err != nil {
				t.Fatal(err)
			}
			if err := e.WaitAcked(ctx, n); err != nil {
				t.Fatal(err)
			}
			if seen[0] != n/3 || seen[1] != n/3 || seen[2] != n/3 {
				t.Fatalf("deliveries %v", seen)
			}
		})
	}
}

// BenchmarkJetStream measures end-to-end throughput (publish with ack → consumer → ack,
// messages spread round-robin over 1,000 device subjects; reported as msgs/s) and the
// publish-to-delivery latency at a fixed rate (p50/p99 in µs). The throughput run sends b.N
// messages, or -js.msgs (-js.msgs-sync with SyncAlways) when set; both runs of a mode share one
// server, so its 1,000 consumers are set up once.
func BenchmarkJetStream(b *testing.B) {
	for _, m := range modes {
		var e *Env
		env := func(b *testing.B) *Env {
			if e == nil {
				var err error
				if e, err = startEnv(b.TempDir(), m.syncAlways, m.shared); err != nil {
					b.Fatal(err)
				}
			}
			return e
		}
		b.Run("throughput/"+m.name, func(b *testing.B) {
			n := b.N
			if *msgs > 0 && !m.syncAlways {
				n = *msgs
			}
			if *msgsSync > 0 && m.syncAlways {
				n = *msgsSync
			}
			throughput(b, env(b), n)
		})
		b.Run("latency/"+m.name, func(b *testing.B) { latency(b, env(b)) })
		if e != nil {
			e.Close()
		}
	}
}

func throughput(b *testing.B, e *Env, n int) {
	p := make([]byte, msgSize)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	base := e.Acked()
	b.ResetTimer()
	t0 := time.Now()
	for i := range n {
		if err := e.Publish(i, p); err != nil {
			b.Fatal(err)
		}
	}
	if err := e.WaitPublished(ctx); err != nil {
		b.Fatal(err)
	}
	if err := e.WaitAcked(ctx, base+int64(n)); err != nil {
		b.Fatal(err)
	}
	el := time.Since(t0)
	b.StopTimer()
	b.ReportMetric(float64(n)/el.Seconds(), "msgs/s")
}

func latency(b *testing.B, e *Env) {
	total := int(latencyFor.Seconds() * float64(*rate))
	lat := make([]time.Duration, 0, total)
	var mu sync.Mutex
	e.SetHandler(func(p []byte) {
		d := Since(p)
		mu.Lock()
		lat = append(lat, d)
		mu.Unlock()
	})
	defer e.SetHandler(nil)
	interval := time.Second / time.Duration(*rate)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// Warm up: one message per device, so every consumer has pulled before timing.
	warm := make([]byte, msgSize)
	base := e.Acked()
	for i := range *devices {
		Stamp(warm, time.Now())
		if err := e.Publish(i, warm); err != nil {
			b.Fatal(err)
		}
	}
	if err := e.WaitAcked(ctx, base+int64(*devices)); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		mu.Lock()
		lat = lat[:0]
		mu.Unlock()
		base := e.Acked()
		t0 := time.Now()
		for i := range total {
			if d := time.Until(t0.Add(time.Duration(i) * interval)); d > 0 {
				time.Sleep(d)
			}
			p := make([]byte, msgSize)
			Stamp(p, time.Now())
			if err := e.Publish(i, p); err != nil {
				b.Fatal(err)
			}
		}
		sent := time.Since(t0)
		if err := e.WaitPublished(ctx); err != nil {
			b.Fatal(err)
		}
		if err := e.WaitAcked(ctx, base+int64(total)); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(total)/sent.Seconds(), "sent/s")
	}
	b.StopTimer()
	mu.Lock()
	SortDurations(lat)
	b.ReportMetric(float64(Percentile(lat, 0.50).Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(Percentile(lat, 0.99).Nanoseconds())/1e3, "p99-µs")
	mu.Unlock()
}
