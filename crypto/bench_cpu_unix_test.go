//go:build unix

package crypto

import (
	"syscall"
	"testing"
	"time"
)

// cpuMeter measures the CPU time the process spends from now until the
// returned function is called, and reports it per operation as
// "cpu-ns/op". On a shared, overloaded machine wall-clock ns/op grows
// with the load while CPU time per operation stays close to what the
// code costs, so the benchmarks report both.
func cpuMeter(b *testing.B) func() {
	start := processCPU()
	return func() {
		if b.N > 0 {
			b.ReportMetric(float64(processCPU()-start)/float64(b.N), "cpu-ns/op")
		}
	}
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
