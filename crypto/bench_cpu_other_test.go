//go:build !unix

package crypto

import "testing"

// cpuMeter reports nothing where getrusage is not available.
func cpuMeter(b *testing.B) func() { return func() {} }
