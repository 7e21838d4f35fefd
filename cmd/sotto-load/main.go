// Command sotto-load measures a Sotto relay under load: durable end-to-end
// throughput, latency at a fixed rate, and memory per idle connection.
//
// By default it starts the relay itself, as a child process (so that the
// relay's memory and garbage collection are its own) on 127.0.0.1 with a
// Pebble directory in a temporary folder, and drives it over WebSockets:
//
//	sotto-load -mode throughput -devices 1000
//	sotto-load -mode latency -rate 2000
//	sotto-load -mode idle -conns 10000
//	sotto-load -mode slow -devices 1000 -backlog 200
//	sotto-load -mode group -devices 1000 -payload 1024
//
// Each result is printed as one JSON line. -serve runs only the relay (for
// profiling, or to drive it from another process with -url and the same
// -seed).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	httppprof "net/http/pprof"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sotto-im/sotto/relay/loadtest"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("sotto-load: ")
	mode := flag.String("mode", "throughput", "throughput, latency, idle, slow (devices that never read) or group (one message to every device)")
	serve := flag.Bool("serve", false, "run only the relay (prints its URL on the first line)")
	url := flag.String("url", "", "drive a relay already started with -serve (and the same -seed and -accounts) instead of starting one")
	addr := flag.String("addr", "127.0.0.1:0", "listen address with -serve")
	dir := flag.String("dir", "", "Pebble directory of the relay (default: a temporary directory)")
	seed := flag.String("seed", "sotto-load", "seed of the accounts and token key shared with the relay")
	accounts := flag.Int("accounts", 0, "accounts the relay knows (default: what the mode needs)")
	devices := flag.Int("devices", 1000, "receiving devices online")
	senders := flag.Int("senders", 16, "sending connections")
	inflight := flag.Int("inflight", 32, "unanswered sends per sending connection")
	rate := flag.Float64("rate", 2000, "sends per second in latency mode")
	payload := flag.Int("payload", 256, "message body size in bytes")
	duration := flag.Duration("duration", 10*time.Second, "measured interval")
	warmup := flag.Duration("warmup", 2*time.Second, "unmeasured interval before it")
	conns := flag.Int("conns", 10000, "idle connections in idle mode")
	sends := flag.Int("sends", 20, "group mode: group messages to send, one at a time")
	backlog := flag.Int("backlog", 200, "slow mode: messages queued per device")
	hold := flag.Duration("hold", 0, "idle mode: keep the connections this long after measuring")
	memProfileRate := flag.Int("memprofilerate", 0, "with -serve: runtime.MemProfileRate (1 records every allocation)")
	cpuprofile := flag.String("cpuprofile", "", "write the relay's CPU profile to this file")
	flag.Parse()
	raiseFileLimit()

	need := *devices + *senders
	switch *mode {
	case "idle":
		need = *conns
	case "slow", "group":
		need = *devices + 1
	}
	if *accounts == 0 {
		*accounts = need
	}
	f := loadtest.Fixture{Seed: *seed, Accounts: *accounts}

	if *serve {
		if *memProfileRate > 0 {
			runtime.MemProfileRate = *memProfileRate
		}
		runServe(*dir, *addr, f, *cpuprofile)
		return
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	base := *url
	if base == "" {
		child, u, err := startChild(*dir, *seed, *accounts, *cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		defer child.stop()
		base = u
	}
	var out any
	var err error
	switch *mode {
	case "throughput", "latency":
		o := loadtest.Options{URL: base, Fixture: f, Devices: *devices, Senders: *senders, InFlight: *inflight,
			Payload: *payload, Warmup: *warmup, Duration: *duration}
		if *mode == "latency" {
			o.Rate = *rate
		}
		out, err = loadtest.Run(ctx, o)
	case "idle":
		out, err = loadtest.Idle(ctx, base, f, *conns, *hold)
	case "slow":
		out, err = loadtest.Slow(ctx, base, f, *devices, *backlog, *payload)
	case "group":
		out, err = loadtest.Group(ctx, base, f, *devices, *sends, *payload)
	default:
		log.Fatalf("unknown -mode %q", *mode)
	}
	if err != nil {
		log.Fatal(err)
	}
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
}

// runServe runs the relay until interrupted.
func runServe(dir, addr string, f loadtest.Fixture, cpuprofile string) {
	if cpuprofile != "" {
		pf, err := os.Create(cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			log.Fatal(err)
		}
		defer func() {
			pprof.StopCPUProfile()
			pf.Close()
		}()
	}
	if dir == "" {
		d, err := os.MkdirTemp("", "sotto-load-")
		if err != nil {
			log.Fatal(err)
		}
		defer os.RemoveAll(d)
		dir = d
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	r, err := loadtest.StartRelay(dir, addr, f, logger, map[string]http.Handler{
		loadtest.MemPath:       loadtest.MemHandler(),
		"/debug/pprof/heap":    httppprof.Handler("heap"),
		"/debug/pprof/profile": http.HandlerFunc(httppprof.Profile),
	})
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

type child struct{ cmd *exec.Cmd }

// startChild starts this program with -serve and returns the relay's URL.
func startChild(dir, seed string, accounts int, cpuprofile string) (*child, string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	cmd := exec.Command(exe, "-serve", "-dir", dir, "-seed", seed, "-accounts", strconv.Itoa(accounts), "-cpuprofile", cpuprofile)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, "", fmt.Errorf("relay child: %w", err)
	}
	return &child{cmd}, strings.TrimSpace(line), nil
}

func (c *child) stop() {
	c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		c.cmd.Process.Kill()
		<-done
	}
}

// raiseFileLimit lifts the soft open-file limit to the hard one: every
// connection is a file descriptor.
func raiseFileLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}
