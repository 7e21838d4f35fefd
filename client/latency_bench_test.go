package client_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sotto-im/sotto/client"
)

// BenchmarkClientLatency measures end-to-end latency at a fixed rate: alice
// sends b.N texts to bob at `rate` messages a second (one Send per tick,
// from one goroutine, as an app would), both on disk stores, through the
// in-process relay and key server; a message's latency runs from the call
// to Send until bob's client emits it (decrypted, stored durably, its
// relay copy acknowledged). Reports p50, p99 and the largest latency.
func BenchmarkClientLatency(b *testing.B) {
	for _, rate := range []int{100, 1000} {
		b.Run(fmt.Sprintf("rate=%d", rate), func(b *testing.B) { benchLatency(b, rate) })
	}
}

func benchLatency(b *testing.B, rate int) {
	alice, bob, ab := warmDiskPair(b, startEnv(b))
	ctx := context.Background()
	// Send times in Unix nanoseconds; atomic because the sending goroutine
	// and this one are ordered only through the network, which the race
	// detector does not see.
	sent := make([]atomic.Int64, b.N)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	go func() {
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for i := range b.N {
			<-tick.C
			sent[i].Store(time.Now().UnixNano())
			if _, err := alice.c.Send(ctx, ab, client.Text("latency "+strconv.Itoa(i))); err != nil {
				panic(err)
			}
		}
	}()
	timeout := time.After(time.Duration(b.N)*time.Second/time.Duration(rate) + time.Minute)
	for len(lat) < b.N {
		select {
		case ev := <-bob.ev:
			m, ok := ev.(client.MessageEvent)
			if !ok || !strings.HasPrefix(m.Message.Text, "latency ") {
				continue
			}
			i, err := strconv.Atoi(strings.TrimPrefix(m.Message.Text, "latency "))
			if err != nil || i < 0 || i >= b.N {
				b.Fatalf("unexpected message %q", m.Message.Text)
			}
			lat = append(lat, time.Since(time.Unix(0, sent[i].Load())))
		case <-timeout:
			b.Fatalf("received %d of %d", len(lat), b.N)
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) }
	b.ReportMetric(q(0.50), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "max-µs")
}
