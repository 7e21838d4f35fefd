package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/sync/errgroup"

	"github.com/sotto-im/sotto/relay/wire"
)

// MemPath is where a relay started by cmd/sotto-load -serve reports its
// memory (after a forced garbage collection).
const MemPath = "/debug/loadtest/mem"

// MemStats is the relay process's memory as MemHandler reports it.
type MemStats struct {
	RSS        int64 `json:"rss"`         // resident set size, from /proc/self/status
	HeapInuse  int64 `json:"heap_inuse"`  // Go heap spans in use
	StackInuse int64 `json:"stack_inuse"` // goroutine stacks
	Goroutines int   `json:"goroutines"`
	// CPUSeconds is the process's user plus system CPU time so far.
	CPUSeconds float64 `json:"cpu_seconds"`
}

// cpuSeconds returns this process's user plus system CPU time.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// MemHandler serves MemStats after a full garbage collection, so that
// before-and-after readings compare live memory rather than garbage; with
// ?gc=0 it skips the collection (for CPU readings during a run).
func MemHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("gc") != "0" {
			// Several collections: each one may halve an idle goroutine's
			// stack, as a long-running relay's regular collections do.
			for range 4 {
				runtime.GC()
			}
			debug.FreeOSMemory()
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		s := MemStats{HeapInuse: int64(ms.HeapInuse), StackInuse: int64(ms.StackInuse), Goroutines: runtime.NumGoroutine(), RSS: rss(), CPUSeconds: cpuSeconds()}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(s)
	})
}

// rss returns the process's resident set size in bytes, 0 if unknown.
func rss() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// IdleResult is the outcome of an idle-connection run; it marshals to one
// JSON line.
type IdleResult struct {
	Mode           string  `json:"mode"`
	Conns          int     `json:"conns"`
	RSSPerConn     float64 `json:"rss_bytes_per_conn"`
	GoMemPerConn   float64 `json:"heap_plus_stack_bytes_per_conn"`
	GoroutinesConn float64 `json:"goroutines_per_conn"`
	Before         MemStats
	After          MemStats
}

func getMem(ctx context.Context, baseURL string) (MemStats, error) {
	return getStats(ctx, baseURL+MemPath)
}

func getStats(ctx context.Context, url string) (MemStats, error) {
	var s MemStats
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return s, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return s, fmt.Errorf("loadtest: memory endpoint: %w", err)
	}
	defer resp.Body.Close()
	return s, json.NewDecoder(resp.Body).Decode(&s)
}

// Idle opens conns idle device connections (accounts [0, conns)) to the
// relay at baseURL, which must serve MemPath, and reports the relay's
// memory per connection once they all have their Drained marker.
// The connections are held for hold after the measurement (to profile the
// relay meanwhile).
func Idle(ctx context.Context, baseURL string, f Fixture, conns int, hold time.Duration) (IdleResult, error) {
	res := IdleResult{Mode: "idle", Conns: conns}
	before, err := getMem(ctx, baseURL)
	if err != nil {
		return res, err
	}
	cs, err := dialAll(ctx, baseURL, f, 0, conns)
	if err != nil {
		return res, err
	}
	defer func() {
		for _, c := range cs {
			c.CloseNow()
		}
	}()
	// Wait for each connection's Drained marker: the relay has then set it
	// up completely. After that a CloseRead goroutine answers pings.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(64)
	for _, c := range cs {
		g.Go(func() error {
			rctx, cancel := context.WithTimeout(gctx, 30*time.Second)
			defer cancel()
			for {
				_, f, err := c.Read(rctx)
				if err != nil {
					return fmt.Errorf("loadtest: idle connection: %w", err)
				}
				switch wire.FrameType(f[0]) {
				case wire.FrameDrained:
					c.CloseRead(context.Background())
					return nil
				case wire.FrameDeliver:
					// Left over from an earlier run: acknowledge it, so
					// that the connection ends up idle.
					if d, err := wire.ParseDeliver(f); err == nil {
						if err := c.Write(rctx, websocket.MessageBinary, (&wire.Ack{Cursor: d.Cursor}).Marshal()); err != nil {
							return err
						}
					}
				}
			}
		})
	}
	if err := g.Wait(); err != nil {
		return res, err
	}
	// The relay stops a connection's send loop 2 s after it has nothing
	// left to do.
	time.Sleep(3 * time.Second)
	after, err := getMem(ctx, baseURL)
	if err != nil {
		return res, err
	}
	res.Before, res.After = before, after
	n := float64(conns)
	res.RSSPerConn = float64(after.RSS-before.RSS) / n
	res.GoMemPerConn = float64(after.HeapInuse+after.StackInuse-before.HeapInuse-before.StackInuse) / n
	res.GoroutinesConn = float64(after.Goroutines-before.Goroutines) / n
	sleep(ctx, hold)
	for _, c := range cs {
		c.Close(websocket.StatusNormalClosure, "")
	}
	cs = nil
	return res, nil
}
