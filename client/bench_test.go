package client_test

import (
	"context"
	"fmt"
	"os"
	"syscall"
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
	cpu := startCPU(b)
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
	cpu.report(b.N, "cpu-µs/msg")
}

// cpuMeter measures the CPU time (user and system) of the whole process:
// on a loaded machine, CPU per operation is steadier than wall-clock time.
// In these benchmarks the process holds both clients, the relay and the
// key server, so the figure is the cost of the whole path.
type cpuMeter struct {
	b     *testing.B
	start time.Duration
}

func startCPU(b *testing.B) cpuMeter { return cpuMeter{b, processCPU(b)} }

// report adds the CPU time since start divided by n as a metric.
func (m cpuMeter) report(n int, unit string) {
	m.b.ReportMetric(float64((processCPU(m.b)-m.start).Microseconds())/float64(n), unit)
}

func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
