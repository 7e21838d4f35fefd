package client_test

import (
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sotto-im/sotto/client"
)

// heapPeak samples the live heap (runtime/metrics) every few
// milliseconds until stopped, and returns the peak above the start.
func heapPeak() (stop func() uint64) {
	runtime.GC()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() uint64 {
		metrics.Read(sample)
		return sample[0].Value.Uint64()
	}
	base := read()
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if v := read(); v > peak.Load() {
					peak.Store(v)
				}
			}
		}
	}()
	return func() uint64 {
		close(done)
		wg.Wait()
		if p := peak.Load(); p > base {
			return p - base
		}
		return 0
	}
}

func TestAttachments(t *testing.T) {
	env := startEnv(t)
	alice, bob := newParty(t, env), newParty(t, env)
	ab, _ := befriend(t, alice, bob)
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		size    int64
		maxHeap uint64
	}{
		{"1MiB", 1 << 20, 16 << 20},
		{"64MiB", 64 << 20, 16 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if testing.Short() && tc.size > 1<<20 {
				t.Skip("large attachment")
			}
			src := io.LimitReader(rand.NewChaCha8([32]byte{1}), tc.size)
			want := sha256.New()
			stop := heapPeak()
			a, err := alice.c.UploadAttachment(ctx, io.TeeReader(src, want), "application/octet-stream", "data.bin")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := alice.c.Send(ctx, ab, client.Text("file "+tc.name).WithAttachment(a)); err != nil {
				t.Fatal(err)
			}
			m := bob.waitMessage("file " + tc.name)
			if len(m.Attachments) != 1 || m.Attachments[0].Size != uint64(tc.size) {
				t.Fatalf("attachments: %+v", m.Attachments)
			}
			got := sha256.New()
			if err := bob.c.DownloadAttachment(ctx, m.Attachments[0], got); err != nil {
				t.Fatal(err)
			}
			peak := stop()
			if string(got.Sum(nil)) != string(want.Sum(nil)) {
				t.Fatal("downloaded plaintext differs")
			}
			t.Logf("%s: heap peak %.1f MiB above the start", tc.name, float64(peak)/(1<<20))
			if peak > tc.maxHeap {
				t.Fatalf("heap grew by %d bytes, bound %d", peak, tc.maxHeap)
			}
			// A tampered digest fails.
			bad := m.Attachments[0]
			bad.Digest[0] ^= 1
			if err := bob.c.DownloadAttachment(ctx, bad, io.Discard); err == nil {
				t.Fatal("tampered digest accepted")
			}
		})
	}
}
