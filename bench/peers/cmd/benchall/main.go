// Command benchall runs Sotto's benchmarks and the reference systems' benchmarks interleaved
// (Sotto, references, Sotto, references, ... for several rounds), takes the median of every
// figure and prints a Markdown table, the DESIGN.md targets with met / not met / not yet
// measured, and one JSON object per line:
//
//	{"workload","system","value","unit","ratio_to_sotto","floor_ratio"}
//
// ratio_to_sotto is value ÷ Sotto's value and floor_ratio is value ÷ the floor's value, both in
// the row's unit (for µs and B lower is better; for msgs/s and MB/s higher is better).
//
// Run it from bench/peers (`go run ./cmd/benchall`) or via bench/run from anywhere in the repo.
// Benchmarks that do not exist yet are reported as "missing"; the libsignal (Node) reference is
// skipped with a note when node or npm is not installed.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

type options struct {
	quick      bool
	rounds     int
	budget     time.Duration
	libsignal  string
	profile    bool
	only       string
	skipNode   bool
	withNode   bool
	jsonOut    string
	mdOut      string
	root, peer string
	tmp        string
	log        io.Writer
	builds     builds
	loadStart  string
}

func main() {
	var o options
	flag.BoolVar(&o.quick, "quick", false, "smoke run: one short round (< 2 min)")
	flag.IntVar(&o.rounds, "rounds", 0, "rounds of interleaved runs (default 3, or 1 with -quick)")
	flag.DurationVar(&o.budget, "budget", 0, "stop starting new rounds when the next would end past this much time from the start (default 13m, 10m with -profile)")
	flag.StringVar(&o.libsignal, "libsignal", "", "directory of the libsignal Node benchmark (bench.mjs, package.json, package-lock.json); default ../shared/anchors/libsignal relative to the repo root")
	flag.BoolVar(&o.skipNode, "no-node", false, "skip the libsignal (Node) reference")
	flag.BoolVar(&o.withNode, "node", false, "with -quick, include the libsignal (Node) reference (a full run always does when node is installed)")
	flag.BoolVar(&o.profile, "profile", false, "after the run, CPU-profile each Go benchmark behind a target that is not met and print its top frames")
	flag.StringVar(&o.only, "only", "", "run only jobs whose id contains this string (for debugging)")
	flag.StringVar(&o.jsonOut, "json", "", "also write the JSON lines to this file")
	flag.StringVar(&o.mdOut, "md", "", "also write the Markdown report (tables and targets) to this file")
	flag.Parse()
	o.log = os.Stderr
	if o.rounds == 0 {
		o.rounds = 3
		if o.quick {
			o.rounds = 1
		}
	}
	if o.budget == 0 {
		o.budget = 13 * time.Minute
		if o.profile {
			o.budget = 10 * time.Minute
		}
	}
	if err := run(&o); err != nil {
		fmt.Fprintln(os.Stderr, "benchall:", err)
		os.Exit(1)
	}
}

func run(o *options) error {
	start := time.Now()
	o.loadStart = loadavg()
	root, err := findRoot()
	if err != nil {
		return err
	}
	o.root, o.peer = root, filepath.Join(root, "bench", "peers")
	if o.libsignal == "" {
		o.libsignal = filepath.Join(root, "..", "shared", "anchors", "libsignal")
	}
	o.tmp, err = os.MkdirTemp("", "benchall-*")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(o.tmp)

	jobs := allJobs(o)
	if o.only != "" {
		var keep []*job
		for _, j := range jobs {
			if strings.Contains(j.id, o.only) {
				keep = append(keep, j)
			}
		}
		jobs = keep
	}
	// Children run in their own process groups (see command); an interrupt cancels ctx, which
	// ends them.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logf(o, "building %d jobs", len(jobs))
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Go(func() { j.prepare(ctx, o) })
	}
	wg.Wait()
	for _, j := range jobs {
		if j.skip != "" {
			logf(o, "  %-22s not run: %s", j.id, j.skip)
		}
	}
	roundsStart := time.Now()
	res := newResults()
	for r := 1; r <= o.rounds; r++ {
		if r > 1 {
			// A loaded machine makes rounds slower; keep the whole run inside the budget.
			per := time.Since(roundsStart) / time.Duration(r-1)
			if time.Since(start)+per > o.budget {
				logf(o, "stopping after %d rounds: another would end past the %s budget", r-1, o.budget)
				o.rounds = r - 1
				break
			}
		}
		for _, j := range jobs {
			if j.skip != "" {
				continue
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			t0 := time.Now()
			err := j.run(ctx, o, res)
			logf(o, "  round %d/%d %-22s %6.1fs %v", r, o.rounds, j.id, time.Since(t0).Seconds(), errText(err))
			if err != nil {
				j.errs = append(j.errs, err.Error())
			}
		}
	}
	rep := buildReport(o, jobs, res, time.Since(start))
	out := rep.markdown()
	if o.profile {
		out += profiles(ctx, o, jobs, rep, start.Add(14*time.Minute))
	}
	fmt.Print(out)
	var js strings.Builder
	for _, l := range rep.lines {
		b, _ := json.Marshal(l)
		js.Write(b)
		js.WriteByte('\n')
	}
	fmt.Print("\n```json\n" + js.String() + "```\n")
	if o.jsonOut != "" {
		if err := os.WriteFile(o.jsonOut, []byte(js.String()), 0o644); err != nil {
			return err
		}
	}
	if o.mdOut != "" {
		if err := os.WriteFile(o.mdOut, []byte(out), 0o644); err != nil {
			return err
		}
	}
	logf(o, "done in %s", time.Since(start).Round(time.Second))
	return nil
}

func errText(err error) string {
	if err == nil {
		return "ok"
	}
	s := err.Error()
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

func logf(o *options, format string, a ...any) {
	fmt.Fprintf(o.log, "[%s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, a...))
}

// findRoot walks up from the working directory to the main module's go.mod.
func findRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), "module github.com/sotto-im/sotto\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of github.com/sotto-im/sotto above %s", mustWd())
		}
		dir = parent
	}
}

func mustWd() string {
	d, _ := os.Getwd()
	return d
}

// machine describes where the figures were taken.
func machine() string {
	cpu := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				if _, v, ok := strings.Cut(l, ":"); ok {
					cpu = strings.TrimSpace(v)
				}
				break
			}
		}
	}
	gov, _ := exec.Command("go", "version").Output()
	node := "not installed"
	if nv, err := exec.Command("node", "--version").Output(); err == nil {
		node = strings.TrimSpace(string(nv))
	}
	return fmt.Sprintf("nproc %d; CPU %s; %s; node %s", runtime.NumCPU(), cpu, strings.TrimSpace(string(gov)), node)
}

// loadavg is the 1, 5 and 15 minute load averages: on a shared machine they say how much the
// other jobs competed with the benchmarks.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}
