package client_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/sotto-im/sotto/client"
)

// BenchmarkClientToClient measures messages per second from one client to
// another through the in-process relay: encrypt (ratchet + sealed sender),
// persist (outbox, history, session, on encrypted Pebble stores), relay
// (durable), decrypt, persist, acknowledge. The clock runs from the first
// Send to the last message received.
func BenchmarkClientToClient(b *testing.B) {
	env := startEnv(b)
	var alice, bob *party
	if os.Getenv("SOTTO_BENCH_MEM") != "" {
		alice, bob = newParty(b, env), newParty(b, env)
	} else {
		alice = newDiskParty(b, env, b.TempDir(), true)
		bob = newDiskParty(b, env, b.TempDir(), true)
	}
	ab, _ := befriend(b, alice, bob)
	ctx := context.Background()
	if _, err := alice.c.Send(ctx, ab, client.Text("warm-up")); err != nil {
		b.Fatal(err)
	}
	bob.waitMessage("warm-up")
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	go func() {
		for i := 0; i < b.N; i++ {
			if _, err := alice.c.Send(ctx, ab, client.Text(fmt.Sprintf("benchmark message %d", i))); err != nil {
				panic(err)
			}
		}
	}()
	for got := 0; got < b.N; {
		select {
		case ev := <-bob.ev:
			if _, ok := ev.(client.MessageEvent); ok {
				got++
			}
		case <-time.After(60 * time.Second):
			b.Fatalf("received %d of %d", got, b.N)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}
