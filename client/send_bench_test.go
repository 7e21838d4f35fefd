package client_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sotto-im/sotto/client"
	"github.com/sotto-im/sotto/client/internal/testenv"
	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/internal/testbin"
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
	alice, bob, ab := warmDiskPair(b, startEnv(b))
	runPipelined(b, senders, alice, bob, ab, nil)
}

// runPipelined times b.N messages from alice to bob sent by senders
// goroutines; server, if not nil, is a separate server process whose CPU
// time is reported too.
func runPipelined(b *testing.B, senders int, alice, bob *party, ab client.ConversationID, server *testbin.Sottod) {
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	var server0 time.Duration
	if server != nil {
		server0 = processCPUTime(b, server.Pid())
	}
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
	if server != nil {
		scpu := processCPUTime(b, server.Pid()) - server0
		b.ReportMetric(float64(scpu.Microseconds())/float64(b.N), "sottod-cpu-µs/msg")
		cpu += scpu
	}
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/msg")
	b.ReportMetric(cpu.Seconds()/elapsed.Seconds(), "cores")
}

// BenchmarkClientToClientSottod is BenchmarkClientToClientPipelined
// through a sottod process (built from this tree) instead of a relay and
// key server in the benchmark's process: what the issue's "through a local
// sottod" says. The two processes share the machine's cores, each Go
// runtime with its own processors. cpu-µs/msg adds sottod's CPU time (from
// /proc) to the benchmark process's; sottod-cpu-µs/msg is sottod's alone.
func BenchmarkClientToClientSottod(b *testing.B) {
	bin, err := testbin.Build(testbin.SottodPkg)
	if err != nil {
		b.Fatal(err)
	}
	for _, senders := range []int{1, 16} {
		b.Run(fmt.Sprintf("senders=%d", senders), func(b *testing.B) {
			s, err := testbin.StartSottod(bin, []string{"--listen", "127.0.0.1:0", "--data", b.TempDir(), "--log-level", "error"},
				nil, nil, time.Minute)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Stop(30 * time.Second)
			env := &testenv.Env{KeyServerURL: s.URL, RelayURL: s.URL, TrustRoots: []crypto.TrustRoot{s.Trust}}
			alice, bob, ab := warmDiskPair(b, env)
			runPipelined(b, senders, alice, bob, ab, s)
		})
	}
}

// processCPUTime returns the user and system CPU time of process pid so
// far, from /proc/<pid>/stat (Linux).
func processCPUTime(b *testing.B, pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The command name, field 2, is in parentheses and may hold spaces:
	// count the fields after its closing parenthesis (utime is field 14,
	// stime 15).
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
	if len(f) < 13 {
		b.Fatalf("/proc/%d/stat: %q", pid, raw)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("/proc/%d/stat: %q", pid, raw)
	}
	const ticksPerSecond = 100 // USER_HZ, which Linux fixes at 100 for /proc
	return time.Duration(utime+stime) * time.Second / ticksPerSecond
}

// cpuTime returns the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// warmDiskPair starts alice and bob on disk stores through env's servers, befriends them and sends one message, so that a benchmark starts
// with sessions and connections in place.
func warmDiskPair(b *testing.B, env *testenv.Env) (alice, bob *party, ab client.ConversationID) {
	alice = diskPartyVia(b, env, env.RelayURL)
	bob = diskPartyVia(b, env, env.RelayURL)
	ab, _ = befriend(b, alice, bob)
	if _, err := alice.c.Send(context.Background(), ab, client.Text("warm-up")); err != nil {
		b.Fatal(err)
	}
	bob.waitMessage("warm-up")
	return alice, bob, ab
}
