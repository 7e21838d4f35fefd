package client_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sotto-im/sotto/client"
)

// BenchmarkClientToClientPipelined measures messages per second from one
// client to another through the in-process relay, with `senders`
// goroutines calling Send concurrently on one conversation (so Sends share
// their syncs, and the outbox sends full pipelines). Both clients use disk
// stores. The clock runs from the first Send to the last message received.
// cpu-us/msg is the CPU time of the whole process (sender, relay, key
// server and receiver) per message, from getrusage; cores is that CPU time
// over the wall-clock time, which tells a CPU bound from a wait.
func BenchmarkClientToClientPipelined(b *testing.B) {
	for _, senders := range []int{1, 16} {
		b.Run(fmt.Sprintf("senders=%d", senders), func(b *testing.B) { benchPipelined(b, senders) })
	}
}

func benchPipelined(b *testing.B, senders int) {
	alice, bob, ab := warmDiskPair(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	start := time.Now()
	var next atomic.Int64
	for range senders {
		go func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				if _, err := alice.c.Send(ctx, ab, client.Text(fmt.Sprintf("benchmark message %d", i))); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	timeout := time.NewTimer(120 * time.Second)
	defer timeout.Stop()
	for got := 0; got < b.N; {
		select {
		case ev := <-bob.ev:
			if _, ok := ev.(client.MessageEvent); ok {
				got++
			}
		case <-timeout.C:
			b.Fatalf("received %d of %d", got, b.N)
		}
	}
	b.StopTimer()
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/msg")
	b.ReportMetric(cpu.Seconds()/elapsed.Seconds(), "cores")
}

// cpuTime returns the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// warmDiskPair starts alice and bob on disk stores through the in-process
// relay, befriends them and sends one message, so that a benchmark starts
// with sessions and connections in place.
func warmDiskPair(b *testing.B) (alice, bob *party, ab client.ConversationID) {
	env := startEnv(b)
	alice = diskPartyVia(b, env, env.RelayURL)
	bob = diskPartyVia(b, env, env.RelayURL)
	ab, _ = befriend(b, alice, bob)
	if _, err := alice.c.Send(context.Background(), ab, client.Text("warm-up")); err != nil {
		b.Fatal(err)
	}
	bob.waitMessage("warm-up")
	return alice, bob, ab
}
