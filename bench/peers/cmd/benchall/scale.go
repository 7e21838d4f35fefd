package main

import (
	"fmt"
	"math"
	"sort"
)

// The DESIGN.md targets are absolute figures set on a quiet machine of the project's kind; the
// anchors (../shared/anchors/README.md) give the floors measured there. This sitting's machine
// may be slower or shared, so the report also states how much slower it is, measured the same way
// in the same sitting, and what each target becomes when scaled by that factor. The absolute
// verdict stays the verdict; the scaled one says whether the gap is the machine or the code.

// anchorFloor is one primitive as the anchors measured it.
type anchorFloor struct {
	bench string  // BenchmarkFloor sub-benchmark
	value float64 // µs per op, or MB/s when rate
	rate  bool
}

var anchorCPU = []anchorFloor{
	{"x25519/keygen", 58, false}, {"x25519/dh", 57, false},
	{"ed25519/sign", 26, false}, {"ed25519/verify", 60, false},
	{"mlkem768/keygen", 71, false}, {"mlkem768/encaps", 55, false}, {"mlkem768/decaps", 72, false},
	{"mlkem1024/keygen", 102, false}, {"mlkem1024/encaps", 78, false}, {"mlkem1024/decaps", 108, false},
	{"hkdf-sha256/64B", 1.8, false}, {"hmac-sha256/32B", 0.52, false},
	{"aes256gcm/seal+open/64B", 0.24, false}, {"aes256gcm/seal+open/1KiB", 0.67, false},
	{"chacha20poly1305/seal+open/64B", 0.39, false}, {"chacha20poly1305/seal+open/1KiB", 1.3, false},
	{"age/1MiB", 360, true},
}

// Anchors of the relay's floors: the WebSocket forwarder (127 k msgs/s) and the disk (≈3,000
// synced 4 KiB appends per second).
const (
	anchorTransportMsgs = 127000.0
	anchorDiskSyncs     = 3000.0
)

// slowdown factors: how many times slower this sitting is than the anchors' machine.
type slowdown struct {
	cpu, transport, disk float64 // NaN when not measured
	cpuN                 int
}

func measureSlowdown(r *results) slowdown {
	var rs []float64
	for _, a := range anchorCPU {
		if a.rate {
			v, _, ok := goMetric(fl, "Floor/"+a.bench, "MB/s").value(r)
			if ok && v > 0 {
				rs = append(rs, a.value/v)
			}
			continue
		}
		v, _, ok := goUs(fl, "Floor/"+a.bench).value(r)
		if ok {
			rs = append(rs, v/a.value)
		}
	}
	s := slowdown{cpu: math.NaN(), transport: math.NaN(), disk: math.NaN(), cpuN: len(rs)}
	if len(rs) > 0 {
		sort.Float64s(rs)
		s.cpu = median(rs)
	}
	if v, _, ok := goMetric(ws, "Forward/throughput", "msgs/s").value(r); ok && v > 0 {
		s.transport = anchorTransportMsgs / v
	}
	if v, _, ok := goMetric(dsk, "Disk/append-fsync-4KiB", "syncs/s").value(r); ok && v > 0 {
		s.disk = anchorDiskSyncs / v
	}
	return s
}

func (s slowdown) factor(kind string) float64 {
	switch kind {
	case "cpu":
		return s.cpu
	case "transport":
		return s.transport
	case "disk":
		return s.disk
	}
	return math.NaN()
}

func (s slowdown) String() string {
	f := func(v float64) string {
		if math.IsNaN(v) {
			return "not measured"
		}
		return fmt.Sprintf("%.2f×", v)
	}
	return fmt.Sprintf("CPU %s (median over %d primitives against the anchors' figures); WebSocket transport %s (against 127 k msgs/s); disk sync %s (against ≈3,000 syncs/s)",
		f(s.cpu), s.cpuN, f(s.transport), f(s.disk))
}

// scaled is a check's limit on this sitting's machine: costs grow and rates shrink by the factor.
func (c check) scaled(s slowdown) float64 {
	f := s.factor(c.scale)
	if math.IsNaN(f) {
		return math.NaN()
	}
	if c.atMost {
		return c.limit * f
	}
	return c.limit / f
}
