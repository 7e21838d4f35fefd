// Command sotto-soak runs a relay in a child process under steady load from
// thousands of simulated devices for a long time (30 minutes by default),
// samples the relay's resident memory, Go heap, goroutines, open files and
// on-disk queue size, and checks that they stay flat and that no send was
// refused. It prints a sample table and a summary, and exits 1 if the relay
// grew or failed.
//
//	go run ./reliability/cmd/sotto-soak -duration 30m -devices 2000
//
// The relay is the one the relay load tool builds (relay/loadtest): a real
// Pebble store, durable sends, real WebSockets on loopback; senders send
// sealed messages to random devices, which acknowledge each at once.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"log"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sotto-im/sotto/relay/loadtest"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("sotto-soak: ")
	serve := flag.Bool("serve", false, "internal: run the relay (the child process)")
	dir := flag.String("dir", "", "relay data directory (default: a temporary directory)")
	duration := flag.Duration("duration", 30*time.Minute, "how long to soak")
	devices := flag.Int("devices", 2000, "simulated receiving devices, each with its own WebSocket")
	senders := flag.Int("senders", 16, "sending connections")
	rate := flag.Float64("rate", 400, "messages per second, steady")
	payload := flag.Int("payload", 512, "message size in bytes")
	every := flag.Duration("sample", 15*time.Second, "sampling interval")
	growth := flag.Float64("max-growth", 0.25, "largest allowed growth of a resource from the second to the last quarter of the run")
	seed := flag.String("seed", "sotto-soak", "fixture seed")
	churn := flag.Int("churn", 200, "further devices that go offline for 10–30 s and come back, over and over (their queues fill and drain)")
	churnRate := flag.Float64("churn-rate", 40, "1:1 messages per second to the churning devices")
	groupSize := flag.Int("group-size", 100, "recipients of each group message (churning devices; one multi-recipient send)")
	groupEvery := flag.Duration("group-every", 2*time.Second, "interval between group messages (0: none)")
	blobEvery := flag.Duration("blob-every", 2*time.Second, "interval between 64 KiB blob uploads, each downloaded and compared (0: none)")
	flag.Parse()
	// Accounts: receivers [0, devices), senders, churning devices, and one
	// account that uploads blobs.
	f := loadtest.Fixture{Seed: *seed, Accounts: *devices + *senders + *churn + 1}
	raiseFileLimit()

	if *serve {
		runRelay(*dir, f)
		return
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	// cleanup runs on every exit path (os.Exit and log.Fatal skip defers).
	var cleanups []func()
	cleanup := func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}
	fatalf := func(format string, args ...any) {
		cleanup()
		log.Fatalf(format, args...)
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", "sotto-soak-")
		if err != nil {
			log.Fatal(err)
		}
		cleanups = append(cleanups, func() { os.RemoveAll(d) })
		*dir = d
	}
	self, err := os.Executable()
	if err != nil {
		fatalf("%v", err)
	}
	child := exec.Command(self, "-serve", "-dir", *dir, "-seed", *seed, "-devices", strconv.Itoa(*devices), "-senders", strconv.Itoa(*senders), "-churn", strconv.Itoa(*churn))
	child.Stderr = os.Stderr
	out, err := child.StdoutPipe()
	if err != nil {
		fatalf("%v", err)
	}
	if err := child.Start(); err != nil {
		fatalf("%v", err)
	}
	cleanups = append(cleanups, func() {
		child.Process.Signal(syscall.SIGTERM)
		child.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		fatalf("relay did not start: %v", err)
	}
	base := strings.TrimSpace(line)
	pid := child.Process.Pid
	fmt.Printf("relay pid %d at %s; %d devices, %d senders, %.0f msg/s of %d bytes for %v\n", pid, base, *devices, *senders, *rate, *payload, *duration)

	type runOut struct {
		res loadtest.Result
		err error
	}
	done := make(chan runOut, 1)
	warmup := 30 * time.Second
	mix := newMixed(base, f, *devices+*senders, *churn, *devices+*senders+*churn)
	mixCtx, stopMix := context.WithCancel(ctx)
	mixDone := make(chan struct{})
	go func() {
		defer close(mixDone)
		if *churn > 0 {
			mix.run(mixCtx, *churnRate, *groupSize, *groupEvery, *blobEvery)
		}
	}()
	go func() {
		res, err := loadtest.Run(ctx, loadtest.Options{URL: base, Fixture: f, Devices: *devices, Senders: *senders, InFlight: 8,
			Rate: *rate, Payload: *payload, Warmup: warmup, Duration: *duration})
		done <- runOut{res, err}
	}()

	var samples []sample
	fmt.Printf("%8s %10s %10s %10s %6s %10s %8s %8s\n", "t", "rss_MiB", "heap_MiB", "goroutines", "fds", "disk_MiB", "depth", "online")
	tick := time.NewTicker(*every)
	defer tick.Stop()
	start := time.Now()
	var res runOut
loop:
	for {
		select {
		case res = <-done:
			break loop
		case <-tick.C:
			s, err := take(base, pid, *dir)
			if err != nil {
				log.Printf("sample: %v", err)
				continue
			}
			s.At = time.Since(start)
			s.Depth, s.Online = mix.depth(), int(mix.online.Load())
			samples = append(samples, s)
			fmt.Printf("%8s %10.1f %10.1f %10d %6d %10.1f %8d %8d\n", s.At.Round(time.Second), mib(s.RSS), mib(s.Heap), s.Goroutines, s.FDs, mib(s.Disk), s.Depth, s.Online)
		}
	}
	stopMix()
	<-mixDone
	if res.err != nil {
		fatalf("load: %v", res.err)
	}
	lost := 0
	if *churn > 0 {
		lost = mix.finish(ctx)
		fmt.Println(mix.summary())
		fmt.Printf("mixed: %d accepted deliveries to churning devices never arrived\n", lost)
	}
	b, _ := json.Marshal(res.res)
	fmt.Printf("load result: %s\n", b)

	// Compare the second and the last quarter of the measured samples:
	// the first quarter (after the warmup) is when Pebble's memtable and
	// block cache fill, which is growth by design, not a leak.
	var measured []sample
	for _, s := range samples {
		if s.At > warmup {
			measured = append(measured, s)
		}
	}
	ok := true
	if len(measured) < 8 {
		log.Printf("only %d samples after the warmup: too short to judge flatness", len(measured))
		ok = false
	} else {
		q := len(measured) / 4
		first, last := measured[q:2*q], measured[len(measured)-q:]
		for _, r := range []struct {
			name string
			get  func(sample) float64
			min  float64 // absolute slack under which growth is ignored
			info bool    // reported, not judged
		}{
			{"rss", func(s sample) float64 { return float64(s.RSS) }, 16 << 20, false},
			{"heap", func(s sample) float64 { return float64(s.Heap) }, 16 << 20, false},
			{"goroutines", func(s sample) float64 { return float64(s.Goroutines) }, 50, false},
			{"fds", func(s sample) float64 { return float64(s.FDs) }, 20, false},
			// Undelivered messages queued for the churning devices: it
			// swings as devices come and go, and must not climb.
			{"depth", func(s sample) float64 { return float64(s.Depth) }, 2000, false},
			// The relay keeps the ID of every acknowledged message for its
			// de-duplication window (24 h by default), so the directory
			// grows with traffic for a day before it can level off: the
			// growth is reported, not judged.
			{"disk", func(s sample) float64 { return float64(s.Disk) }, 64 << 20, true},
		} {
			a, z := median(first, r.get), median(last, r.get)
			g := 0.0
			if a > 0 {
				g = (z - a) / a
			}
			verdict := "flat"
			if z-a > r.min && g > *growth {
				verdict = "GREW"
				if r.info {
					verdict = "grew (by design, see source)"
				} else {
					ok = false
				}
			}
			fmt.Printf("%-10s second quarter %12.0f  last quarter %12.0f  growth %+6.1f%%  %s\n", r.name, a, z, 100*g, verdict)
		}
	}
	if res.res.Refused > 0 {
		fmt.Printf("refused sends: %d\n", res.res.Refused)
		ok = false
	}
	if lost > 0 || mix.refused.Load() > 0 || mix.errs.Load() > 0 || mix.blobErrors.Load() > 0 {
		ok = false
	}
	fmt.Printf("summary: %v soak, %d devices, %d messages received (%.0f/s), p99 latency %.1f ms, refused %d, %s\n",
		*duration, *devices, res.res.Received, res.res.MsgsPerSec, res.res.P99us/1000, res.res.Refused, map[bool]string{true: "PASS", false: "FAIL"}[ok])
	cleanup()
	if !ok {
		os.Exit(1)
	}
}

type sample struct {
	At         time.Duration
	RSS, Heap  int64
	Goroutines int
	FDs        int
	Disk       int64
	Depth      int // undelivered messages for the churning devices
	Online     int // churning devices connected
}

func take(base string, pid int, dir string) (sample, error) {
	var s sample
	resp, err := http.Get(base + loadtest.MemPath)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	var ms loadtest.MemStats
	if err := json.NewDecoder(resp.Body).Decode(&ms); err != nil {
		return s, err
	}
	s.RSS, s.Heap, s.Goroutines = ms.RSS, ms.HeapInuse, ms.Goroutines
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return s, err
	}
	s.FDs = len(fds)
	filepath.WalkDir(dir, func(_ string, de fs.DirEntry, err error) error {
		if err == nil && de.Type().IsRegular() {
			if fi, err := de.Info(); err == nil {
				s.Disk += fi.Size()
			}
		}
		return nil
	})
	return s, nil
}

func median(ss []sample, get func(sample) float64) float64 {
	v := make([]float64, len(ss))
	for i, s := range ss {
		v[i] = get(s)
	}
	slices.Sort(v)
	return v[len(v)/2]
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

func runRelay(dir string, f loadtest.Fixture) {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	r, err := loadtest.StartRelay(dir, "127.0.0.1:0", f, logger, map[string]http.Handler{loadtest.MemPath: loadtest.MemHandler()})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(r.URL)
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	<-ctx.Done()
	if err := r.Close(); err != nil {
		log.Print(err)
	}
}

// raiseFileLimit lifts the soft limit on open files to the hard limit:
// every simulated device holds a socket.
func raiseFileLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}
