package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// job is one command run once per round; its output is parsed into results under its id.
type job struct {
	id     string // results key prefix, e.g. "sotto/crypto"
	system string // who is measured: sotto, libsignal-go, libsignal, nats, floor
	kind   string // "gotest", "node" or "cmd"

	// gotest: a package's test binary
	module string // "main" or "peers"
	pkg    string // package path relative to the module root, e.g. "./crypto"
	bench  string // -test.bench regexp
	// benchtime and count per round, full and quick
	benchtime, quickBenchtime string
	count, quickCount         int
	extra, quickExtra         []string

	// cmd: a binary built from the main module
	cmdPkg  string
	cmdRuns func(o *options) [][]string // one argument list per invocation in a round

	timeout time.Duration

	bin  string // built binary
	dir  string // working directory for runs
	skip string // why it is not run (missing package, no node, ...)
	note string // something to say about a run that is not an error
	errs []string
}

// allJobs lists every job in the order a round runs them: each group of Sotto's figures next to
// the references and floors they are compared with.
func allJobs(o *options) []*job {
	crypto := func(id, system, module, pkg, bench, benchtime string, count int) *job {
		return &job{id: id, system: system, kind: "gotest", module: module, pkg: pkg, bench: bench,
			benchtime: benchtime, quickBenchtime: "40ms", count: count, quickCount: 1, timeout: 6 * time.Minute}
	}
	return []*job{
		crypto("sotto/crypto", "sotto", "main", "./crypto", ".", "200ms", 3),
		crypto("peers/libsignalgo", "libsignal-go", "peers", "./libsignalgo", ".", "200ms", 3),
		{id: "libsignal/node", system: "libsignal", kind: "node", timeout: 6 * time.Minute},
		crypto("peers/floor", "floor", "peers", "./floor", "^BenchmarkFloor$", "150ms", 2),
		{id: "sotto/relay-load", system: "sotto", kind: "cmd", cmdPkg: "./cmd/sotto-load",
			cmdRuns: relayLoadRuns, timeout: 6 * time.Minute},
		{id: "sotto/relay-store", system: "sotto", kind: "gotest", module: "main", pkg: "./relay/store/pebblestore",
			bench: "^Benchmark(Put|PutMulti1000|PebbleSync)$", benchtime: "1s", quickBenchtime: "150ms", count: 1, quickCount: 1,
			timeout: 6 * time.Minute},
		{id: "peers/jetstream", system: "nats", kind: "gotest", module: "peers", pkg: "./jetstream", bench: ".",
			benchtime: "", count: 1, quickCount: 1, timeout: 8 * time.Minute},
		{id: "peers/wsfloor", system: "floor", kind: "gotest", module: "peers", pkg: "./wsfloor", bench: ".",
			count: 1, quickCount: 1, timeout: 5 * time.Minute},
		{id: "peers/disk", system: "floor", kind: "gotest", module: "peers", pkg: "./floor", bench: "^BenchmarkDisk$",
			benchtime: "1s", quickBenchtime: "300ms", count: 1, quickCount: 1, timeout: 2 * time.Minute},
		{id: "sotto/keyserver", system: "sotto", kind: "gotest", module: "main", pkg: "./keyserver", bench: "^Benchmark(BundleFetch|HTTPFloor)$",
			benchtime: "1s", quickBenchtime: "200ms", count: 1, quickCount: 1, timeout: 5 * time.Minute},
		{id: "sotto/client", system: "sotto", kind: "gotest", module: "main", pkg: "./client", bench: "^BenchmarkClientToClient(Pipelined|Sottod)?$",
			// A fixed count: each call sets up two accounts with encrypted stores (and, for
			// ClientToClientSottod, starts a sottod process), so letting the benchmark ramp b.N up
			// would mostly time that setup.
			benchtime: "3000x", quickBenchtime: "20x", count: 1, quickCount: 1, timeout: 5 * time.Minute},
	}
}

// relayLoadRuns are the invocations of Sotto's load generator (cmd/sotto-load, which starts
// the relay as a child process with Pebble in a temp dir and drives it over WebSockets): durable
// throughput with 1,000 receiving devices, latency at 2,000 msgs/s, and memory per idle
// connection. Each prints one JSON line with a "mode" field.
func relayLoadRuns(o *options) [][]string {
	dur, warm, conns := "4s", "1s", "5000"
	if o.quick {
		dur, warm, conns = "1s", "300ms", "500"
	}
	return [][]string{
		{"-mode", "throughput", "-devices", "1000", "-payload", "256", "-duration", dur, "-warmup", warm},
		{"-mode", "latency", "-devices", "1000", "-rate", "2000", "-payload", "256", "-duration", dur, "-warmup", warm},
		{"-mode", "idle", "-conns", conns},
	}
}

func (j *job) prepare(ctx context.Context, o *options) {
	switch j.kind {
	case "gotest":
		j.prepareGoTest(ctx, o)
	case "node":
		j.prepareNode(ctx, o)
	case "cmd":
		j.prepareCmd(ctx, o)
	}
}

func (j *job) moduleDir(o *options) string {
	if j.module == "peers" {
		return o.peer
	}
	return o.root
}

// builds makes each test binary once, however many jobs use it.
type builds struct {
	mu sync.Mutex
	m  map[string]*build
}

type build struct {
	once sync.Once
	bin  string
	skip string
}

func (b *builds) get(key string) *build {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = map[string]*build{}
	}
	if b.m[key] == nil {
		b.m[key] = &build{}
	}
	return b.m[key]
}

func (j *job) prepareGoTest(ctx context.Context, o *options) {
	mod := j.moduleDir(o)
	j.dir = filepath.Join(mod, filepath.FromSlash(j.pkg))
	key := j.module + j.pkg
	bd := o.builds.get(key)
	bd.once.Do(func() {
		if st, err := os.Stat(j.dir); err != nil || !st.IsDir() {
			bd.skip = "missing: package " + j.pkg + " not present"
			return
		}
		bin := filepath.Join(o.tmp, strings.NewReplacer("/", "_", ".", "").Replace(key)+".test")
		cmd := exec.CommandContext(ctx, "go", "test", "-c", "-o", bin, j.pkg)
		cmd.Dir = mod
		out, err := cmd.CombinedOutput()
		if err != nil {
			bd.skip = "missing: " + j.pkg + " does not build: " + firstLine(out)
			return
		}
		if _, err := os.Stat(bin); err != nil {
			bd.skip = "missing: " + j.pkg + " has no test files"
			return
		}
		bd.bin = bin
	})
	j.bin, j.skip = bd.bin, bd.skip
}

func (j *job) prepareCmd(ctx context.Context, o *options) {
	dir := filepath.Join(o.root, filepath.FromSlash(j.cmdPkg))
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		j.skip = "missing: " + j.cmdPkg + " not present"
		return
	}
	j.bin = filepath.Join(o.tmp, filepath.Base(j.cmdPkg))
	cmd := exec.CommandContext(ctx, "go", "build", "-o", j.bin, j.cmdPkg)
	cmd.Dir = o.root
	if out, err := cmd.CombinedOutput(); err != nil {
		j.skip = "missing: " + j.cmdPkg + " does not build: " + firstLine(out)
		return
	}
	j.dir = o.tmp
}

// prepareNode installs the libsignal benchmark's npm dependencies (npm ci, from its lock file)
// into a directory in the user's cache, outside the repository, and copies bench.mjs beside them
// so that Node resolves the package from there.
func (j *job) prepareNode(ctx context.Context, o *options) {
	if o.skipNode {
		j.skip = "skipped (-no-node)"
		return
	}
	if o.quick && !o.withNode {
		j.skip = "skipped in -quick (its fixed warm-ups alone take 15-40 s; add -node to include it)"
		return
	}
	if _, err := exec.LookPath("node"); err != nil {
		j.skip = "skipped: node is not installed"
		return
	}
	if _, err := exec.LookPath("npm"); err != nil {
		j.skip = "skipped: npm is not installed"
		return
	}
	for _, f := range []string{"bench.mjs", "package.json", "package-lock.json"} {
		if _, err := os.Stat(filepath.Join(o.libsignal, f)); err != nil {
			j.skip = "skipped: " + f + " not found in " + o.libsignal + " (set -libsignal)"
			return
		}
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "sotto-bench", "libsignal-node")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		j.skip = "skipped: " + err.Error()
		return
	}
	lock, _ := os.ReadFile(filepath.Join(o.libsignal, "package-lock.json"))
	old, _ := os.ReadFile(filepath.Join(dir, "package-lock.json"))
	_, haveMods := os.Stat(filepath.Join(dir, "node_modules", "@signalapp", "libsignal-client", "package.json"))
	for _, f := range []string{"bench.mjs", "package.json", "package-lock.json"} {
		b, err := os.ReadFile(filepath.Join(o.libsignal, f))
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, f), b, 0o644)
		}
		if err != nil {
			j.skip = "skipped: " + err.Error()
			return
		}
	}
	if haveMods != nil || !bytes.Equal(lock, old) {
		logf(o, "  npm ci in %s", dir)
		cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			j.skip = "skipped: npm ci failed: " + firstLine(out)
			return
		}
	}
	j.dir = dir
	j.bin = "node"
}

func firstLine(b []byte) string {
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "#") {
			if len(l) > 160 {
				l = l[:160] + "…"
			}
			return l
		}
	}
	return "(no output)"
}

func (j *job) run(ctx context.Context, o *options, res *results) error {
	ctx, cancel := context.WithTimeout(ctx, j.timeout)
	defer cancel()
	switch j.kind {
	case "gotest":
		return j.runGoTest(ctx, o, res)
	case "node":
		return j.runNode(ctx, o, res)
	case "cmd":
		return j.runCmd(ctx, o, res)
	}
	return fmt.Errorf("unknown job kind %q", j.kind)
}

func (j *job) goTestArgs(o *options) []string {
	bt, count, extra := j.benchtime, j.count, j.extra
	if o.quick {
		bt, count, extra = j.quickBenchtime, j.quickCount, j.quickExtra
	}
	args := []string{"-test.run", "^$", "-test.bench", j.bench, "-test.count", strconv.Itoa(max(count, 1)),
		"-test.timeout", j.timeout.String()}
	if bt != "" {
		args = append(args, "-test.benchtime", bt)
	}
	return append(args, extra...)
}

func (j *job) runGoTest(ctx context.Context, o *options, res *results) error {
	args := j.goTestArgs(o)
	if j.id == "peers/jetstream" {
		// One process, one server per mode: throughput with a fixed number of messages
		// (SyncAlways is an order of magnitude slower, so fewer), then latency at 2,000 msgs/s.
		flags := []string{"-js.msgs=30000", "-js.msgs-sync=4000", "-js.latency=3s"}
		if o.quick {
			// a smoke run: fewer devices, so that setting up the consumers does not dominate
			flags = []string{"-js.msgs=3000", "-js.msgs-sync=500", "-js.latency=1s", "-js.devices=200"}
		}
		return j.exec(ctx, res, append(append(args, flags...), "-test.bench", "^BenchmarkJetStream$", "-test.benchtime", "1x"))
	}
	if j.id == "peers/wsfloor" {
		n, lat := "40000x", "-ws.latency=3s"
		if o.quick {
			n, lat = "5000x", "-ws.latency=1s"
		}
		args = append(args, lat)
		if err := j.exec(ctx, res, append(args, "-test.bench", "^BenchmarkForward$/^throughput$", "-test.benchtime", n)); err != nil {
			return err
		}
		return j.exec(ctx, res, append(args, "-test.bench", "^BenchmarkForward$/^latency$", "-test.benchtime", "1x"))
	}
	return j.exec(ctx, res, args)
}

// output runs the job's binary with args in its directory and returns
// what it printed on stdout and stderr.
func (j *job) output(ctx context.Context, args []string) (stdout, stderr []byte, err error) {
	cmd := command(ctx, j.bin, args...)
	cmd.Dir = j.dir
	var errb bytes.Buffer
	cmd.Stderr = &errb
	stdout, err = cmd.Output()
	return stdout, errb.Bytes(), err
}

func (j *job) exec(ctx context.Context, res *results, args []string) error {
	out, stderr, err := j.output(ctx, args)
	n := parseGoBench(out, j.id, res)
	if err != nil {
		return fmt.Errorf("%v: %s%s", err, firstFail(out), firstLine(stderr))
	}
	if n == 0 {
		// The package builds but has none of the benchmarks yet: its rows show as missing.
		j.note = "no matching benchmarks yet"
	}
	return nil
}

func firstFail(out []byte) string {
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "FAIL") || strings.Contains(l, "panic") || strings.Contains(l, "_test.go:") {
			return strings.TrimSpace(l) + " "
		}
	}
	return ""
}

var procSuffix = regexp.MustCompile(`-\d+$`)

// parseGoBench reads `go test -bench` output lines:
// BenchmarkName-2  N  v1 unit1  v2 unit2 ...
func parseGoBench(out []byte, id string, res *results) int {
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue
		}
		name := procSuffix.ReplaceAllString(strings.TrimPrefix(f[0], "Benchmark"), "")
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			res.add(id+":"+name, f[i+1], v)
		}
		n++
	}
	return n
}

func (j *job) runNode(ctx context.Context, o *options, res *results) error {
	cmd := command(ctx, "node", "bench.mjs", "--single")
	cmd.Dir = j.dir
	ms, warm := "400", "150"
	if o.quick {
		ms, warm = "30", "10"
	}
	cmd.Env = append(os.Environ(), "MIN_MS="+ms, "WARM_MS="+warm)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("node: %v: %s", err, lastLine(stderr.Bytes()))
	}
	var r struct {
		Throughput map[string]struct {
			UsPerOp float64 `json:"us_per_op"`
		} `json:"throughput"`
		Wire map[string]float64 `json:"wire"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return fmt.Errorf("node output: %w", err)
	}
	for name, t := range r.Throughput {
		res.add(j.id+":"+name, "us/op", t.UsPerOp)
	}
	for name, v := range r.Wire {
		res.add(j.id+":"+name, "B", v)
	}
	return nil
}

func lastLine(b []byte) string {
	ls := strings.Split(strings.TrimSpace(string(b)), "\n")
	return ls[len(ls)-1]
}

// runCmd runs a load generator that prints one JSON object per line; every numeric field of
// every line is recorded under the line's "mode" (or "workload", or "name") field.
func (j *job) runCmd(ctx context.Context, o *options, res *results) error {
	var errs []string
	for _, args := range j.cmdRuns(o) {
		if err := j.runCmdOnce(ctx, res, args); err != nil {
			errs = append(errs, strings.Join(args[:2], " ")+": "+err.Error())
		}
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

func (j *job) runCmdOnce(ctx context.Context, res *results, args []string) error {
	out, stderr, err := j.output(ctx, args)
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue
		}
		var name string
		for _, k := range []string{"mode", "workload", "name"} {
			if name, _ = m[k].(string); name != "" {
				break
			}
		}
		for k, v := range m {
			if f, ok := v.(float64); ok {
				res.add(j.id+":"+name, k, f)
				n++
			}
		}
	}
	if err != nil {
		return fmt.Errorf("%v: %s", err, lastLine(stderr))
	}
	if n == 0 {
		return errors.New("no JSON figures in output")
	}
	return nil
}
