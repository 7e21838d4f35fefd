package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// line is one JSON output object.
type line struct {
	Workload     string   `json:"workload"`
	System       string   `json:"system"`
	Value        *float64 `json:"value"`
	Unit         string   `json:"unit"`
	RatioToSotto *float64 `json:"ratio_to_sotto"`
	FloorRatio   *float64 `json:"floor_ratio"`
}

type cell struct {
	system string
	ok     bool
	v      float64
	xs     []float64
	note   string
}

type reportRow struct {
	row
	cells []cell // sotto first, then refs, then floor
	floor cell
}

type targetStatus struct {
	target
	status       string
	got          []string
	failed       []check
	scaled       []string // limits scaled by this machine's slowdown
	scaledStatus string
}

type report struct {
	o       *options
	jobs    []*job
	rows    []reportRow
	floors  []reportRow
	targets []targetStatus
	lines   []line
	elapsed time.Duration
	byName  map[string]*reportRow
	slow    slowdown
}

// ptr rounds to 4 significant digits (the runs do not agree to more) and maps NaN/Inf to null.
func ptr(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	if v != 0 {
		p := math.Pow(10, 3-math.Floor(math.Log10(math.Abs(v))))
		v = math.Round(v*p) / p
	}
	return &v
}

func buildReport(o *options, jobs []*job, res *results, elapsed time.Duration) *report {
	rep := &report{o: o, jobs: jobs, elapsed: elapsed, byName: map[string]*reportRow{}}
	eval := func(r row) reportRow {
		rr := reportRow{row: r}
		v, xs, ok := r.sotto.value(res)
		rr.cells = append(rr.cells, cell{system: "sotto", ok: ok, v: v, xs: xs})
		for _, rf := range r.refs {
			v, xs, ok := rf.s.value(res)
			rr.cells = append(rr.cells, cell{system: rf.system, ok: ok, v: v, xs: xs})
		}
		if r.floor != nil {
			v, xs, ok := r.floor.value(res)
			rr.floor = cell{system: "floor", ok: ok, v: v, xs: xs, note: r.floorFor}
		}
		return rr
	}
	for _, r := range rows() {
		rep.rows = append(rep.rows, eval(r))
	}
	for i := range rep.rows {
		rep.byName[rep.rows[i].workload] = &rep.rows[i]
	}
	for _, r := range floorRows() {
		fr := eval(r)
		fr.cells[0].system = "floor"
		rep.floors = append(rep.floors, fr)
	}
	for _, rr := range rep.rows {
		s := rr.cells[0]
		for _, c := range append(rr.cells, rr.floor) {
			if c.system == "" || (c.system == "floor" && rr.floor.system == "") {
				continue
			}
			l := line{Workload: rr.workload, System: c.system, Unit: rr.unit}
			if c.ok {
				l.Value = ptr(c.v)
				if s.ok {
					l.RatioToSotto = ptr(c.v / s.v)
				}
				if rr.floor.ok {
					l.FloorRatio = ptr(c.v / rr.floor.v)
				}
			}
			rep.lines = append(rep.lines, l)
		}
	}
	for _, fr := range rep.floors {
		c := fr.cells[0]
		l := line{Workload: "floor: " + fr.workload, System: "floor", Unit: fr.unit}
		if c.ok {
			l.Value, l.FloorRatio = ptr(c.v), ptr(1)
		}
		rep.lines = append(rep.lines, l)
	}
	rep.slow = measureSlowdown(res)
	for _, t := range targets() {
		ts := targetStatus{target: t}
		measured, met, scaledN, scaledMet := 0, 0, 0, 0
		for _, ch := range t.checks {
			rr := rep.byName[ch.workload]
			lim := ch.scaled(rep.slow)
			unit := ""
			if rr != nil {
				unit = " " + rr.unit
			}
			if math.IsNaN(lim) {
				ts.scaled = append(ts.scaled, "—")
			} else {
				op := "≥"
				if ch.atMost {
					op = "≤"
				}
				ts.scaled = append(ts.scaled, op+" "+fmtNum(lim)+unit)
			}
			if rr == nil || !rr.cells[0].ok {
				ts.got = append(ts.got, "—")
				continue
			}
			v := rr.cells[0].v
			measured++
			ts.got = append(ts.got, fmtNum(v)+" "+rr.unit)
			if ch.meets(v, ch.limit) {
				met++
			} else {
				ts.failed = append(ts.failed, ch)
			}
			if !math.IsNaN(lim) {
				scaledN++
				if ch.meets(v, lim) {
					scaledMet++
				}
			}
		}
		ts.scaledStatus = verdict(scaledN, scaledMet, len(t.checks), "—", "not met", "met where scaled")
		ts.status = verdict(measured, met, len(t.checks), "not yet measured", "**not met**", "met where measured (part not yet measured)")
		rep.targets = append(rep.targets, ts)
	}
	return rep
}

// verdict says how a target fared when counted of its all checks could be
// judged and met of those were met: none when none could, notMet when one
// failed, part when all judged were met but some could not be judged, else
// "met".
func verdict(counted, met, all int, none, notMet, part string) string {
	switch {
	case counted == 0:
		return none
	case met < counted:
		return notMet
	case counted < all:
		return part
	}
	return "met"
}

func fmtNum(v float64) string {
	a := math.Abs(v)
	switch {
	case math.IsNaN(v):
		return "—"
	case a >= 10000:
		s := fmt.Sprintf("%.0f", v)
		var b strings.Builder
		for i, c := range s {
			if i > 0 && (len(s)-i)%3 == 0 && s[i-1] != '-' {
				b.WriteByte(',')
			}
			b.WriteRune(c)
		}
		return b.String()
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// best is the most favourable run: the lowest cost or the highest rate.
func best(xs []float64, higher bool) string {
	if len(xs) < 2 {
		return ""
	}
	v := xs[0]
	for _, x := range xs {
		if (higher && x > v) || (!higher && x < v) {
			v = x
		}
	}
	return fmtNum(v)
}

func fmtRatio(p *float64) string {
	if p == nil {
		return ""
	}
	return fmt.Sprintf("%.2f×", *p)
}

func (rep *report) markdown() string {
	var b strings.Builder
	o := rep.o
	mode := "full"
	if o.quick {
		mode = "quick"
	}
	fmt.Fprintf(&b, "## Run\n\n- mode: %s, %d round(s), jobs interleaved in each round; %s elapsed\n", mode, o.rounds, rep.elapsed.Round(time.Second))
	fmt.Fprintf(&b, "- machine: %s\n", machine())
	fmt.Fprintf(&b, "- load average (1/5/15 min) at start %s, at end %s\n", o.loadStart, loadavg())
	fmt.Fprintf(&b, "- value = median of every run of every round; spread = (max − min) / median; best run = the fastest single run (least disturbed by other load); ratio = value ÷ Sotto's value; × floor = value ÷ floor's value\n\n")

	b.WriteString("## Workloads\n\n| workload | system | median | unit | runs | spread | best run | ratio to Sotto | × floor |\n|---|---|---:|---|---:|---:|---:|---:|---:|\n")
	li := 0
	for _, rr := range rep.rows {
		n := len(rr.cells)
		if rr.floor.system != "" {
			n++
		}
		for k := 0; k < n; k++ {
			l := rep.lines[li]
			li++
			var c cell
			if k < len(rr.cells) {
				c = rr.cells[k]
			} else {
				c = rr.floor
			}
			name := ""
			if k == 0 {
				name = rr.workload
			}
			sys := l.System
			if l.System == "floor" && c.note != "" {
				sys = "floor (" + c.note + ")"
			}
			if !c.ok {
				fmt.Fprintf(&b, "| %s | %s | missing | %s | | | | | |\n", name, sys, rr.unit)
				continue
			}
			sp := ""
			if s := spread(c.xs); !math.IsNaN(s) {
				sp = fmt.Sprintf("%.0f%%", s*100)
			}
			ratio := fmtRatio(l.RatioToSotto)
			if l.System == "sotto" {
				ratio = "1"
			}
			runs := ""
			if len(c.xs) > 0 {
				runs = fmt.Sprint(len(c.xs))
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", name, sys, fmtNum(c.v), rr.unit, runs, sp, best(c.xs, rr.higher), ratio, fmtRatio(l.FloorRatio))
		}
	}

	b.WriteString("\n## DESIGN.md performance targets\n\n")
	fmt.Fprintf(&b, "Status is judged on the absolute figures above. This sitting's machine against the anchors' (the figures the targets were set beside): %s. The last two columns scale each target by that factor (costs × factor, rates ÷ factor; latency, memory and bytes are not scaled) to tell a slow machine from slow code.\n\n", rep.slow)
	b.WriteString("| DESIGN.md row | target | Sotto (median) | status | target scaled to this machine | scaled status |\n|---|---|---|---|---|---|\n")
	for _, t := range rep.targets {
		status := t.status
		if t.note != "" {
			status += "; " + t.note
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", t.design, t.want, strings.Join(t.got, " / "), status, strings.Join(t.scaled, " / "), t.scaledStatus)
	}

	b.WriteString("\n## Floors (primitives, Go, one goroutine)\n\n| primitive | median | unit | runs | spread |\n|---|---:|---|---:|---:|\n")
	for _, fr := range rep.floors {
		c := fr.cells[0]
		if !c.ok {
			fmt.Fprintf(&b, "| %s | missing | %s | | |\n", fr.workload, fr.unit)
			continue
		}
		sp := ""
		if s := spread(c.xs); !math.IsNaN(s) {
			sp = fmt.Sprintf("%.0f%%", s*100)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %d | %s |\n", fr.workload, fmtNum(c.v), fr.unit, len(c.xs), sp)
	}

	b.WriteString("\n## Jobs\n\n")
	for _, j := range rep.jobs {
		state := "ran"
		if j.skip != "" {
			state = j.skip
		}
		if j.note != "" {
			state += "; " + j.note
		}
		if len(j.errs) > 0 {
			state += fmt.Sprintf("; %d run(s) failed: %s", len(j.errs), j.errs[0])
		}
		fmt.Fprintf(&b, "- `%s` (%s): %s\n", j.id, j.system, state)
	}
	return b.String()
}

// profiles CPU-profiles every Go benchmark behind a target that is not met and returns the top
// frames, flat and cumulative.
func profiles(ctx context.Context, o *options, jobs []*job, rep *report, deadline time.Time) string {
	var b strings.Builder
	b.WriteString("\n## CPU profiles of the targets not met\n")
	byID := map[string]*job{}
	for _, j := range jobs {
		byID[j.id] = j
	}
	done := map[string]bool{}
	for _, t := range rep.targets {
		for _, ch := range t.failed {
			rr := rep.byName[ch.workload]
			if rr == nil || rr.sotto == nil || rr.sotto.key == "" || done[rr.sotto.key] {
				continue
			}
			done[rr.sotto.key] = true
			if time.Now().After(deadline) {
				fmt.Fprintf(&b, "\n### %s\n\nnot profiled: the run's time budget was spent (rerun with `-only %s -profile`).\n", ch.workload, strings.SplitN(rr.sotto.key, ":", 2)[0])
				continue
			}
			id, name, _ := strings.Cut(rr.sotto.key, ":")
			j := byID[id]
			if j != nil && j.kind == "cmd" && j.skip == "" {
				b.WriteString(profileCmd(ctx, o, j, name, ch.workload))
				continue
			}
			if j == nil || j.kind != "gotest" || j.skip != "" {
				fmt.Fprintf(&b, "\n### %s\n\nnot a Go benchmark of this run (%s); profile it by hand.\n", ch.workload, id)
				continue
			}
			prof := filepath.Join(o.tmp, strings.NewReplacer("/", "_", "+", "_").Replace(name)+".prof")
			args := []string{"-test.run", "^$", "-test.bench", anchored(name), "-test.benchtime", "1s", "-test.cpuprofile", prof}
			if strings.HasSuffix(j.benchtime, "x") {
				args[5] = j.benchtime // a fixed count: the benchmark's setup is too slow to ramp
			}
			if o.quick {
				args[5] = "300ms"
				if strings.HasSuffix(j.quickBenchtime, "x") {
					args[5] = j.quickBenchtime
				}
			}
			cmd := command(ctx, j.bin, args...)
			cmd.Dir = j.dir
			out, err := cmd.CombinedOutput()
			fmt.Fprintf(&b, "\n### %s\n\n`go test -run '^$' -bench '%s' -benchtime %s -cpuprofile cpu.prof %s` then `go tool pprof -top`:\n\n```\n", ch.workload, anchored(name), args[5], j.pkg)
			for _, l := range strings.Split(string(out), "\n") {
				if strings.HasPrefix(l, "Benchmark") {
					b.WriteString(l + "\n")
				}
			}
			if err != nil {
				fmt.Fprintf(&b, "benchmark failed: %v\n```\n", err)
				continue
			}
			for _, mode := range [][]string{{"-top", "-nodecount=12"}, {"-top", "-cum", "-nodecount=20"}} {
				pc := exec.CommandContext(ctx, "go", append(append([]string{"tool", "pprof"}, mode...), j.bin, prof)...)
				pc.Dir = j.dir
				po, _ := pc.CombinedOutput()
				b.WriteString(trimPprof(string(po)))
			}
			b.WriteString("```\n")
			os.Remove(prof)
		}
	}
	return b.String()
}

// anchored turns a benchmark name into a -bench pattern that matches only it, level by level.
func anchored(name string) string {
	parts := strings.Split("Benchmark"+name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}

func trimPprof(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "File:") || strings.HasPrefix(l, "Build ID:") || strings.HasPrefix(l, "Type:") || strings.HasPrefix(l, "Time:") || l == "" {
			continue
		}
		b.WriteString(l + "\n")
	}
	return b.String()
}

// profileCmd reruns one mode of the load generator with the relay's CPU profile on (the relay
// runs in a child process of the same binary) and returns the top frames.
func profileCmd(ctx context.Context, o *options, j *job, mode, workload string) string {
	var b strings.Builder
	var args []string
	for _, a := range j.cmdRuns(o) {
		if len(a) > 1 && a[1] == mode {
			args = a
		}
	}
	fmt.Fprintf(&b, "\n### %s\n\n", workload)
	if args == nil {
		b.WriteString("no load-generator run for this figure.\n")
		return b.String()
	}
	prof := filepath.Join(o.tmp, "relay-"+mode+".prof")
	full := append(append([]string(nil), args...), "-cpuprofile", prof)
	fmt.Fprintf(&b, "`go run ./cmd/sotto-load %s` (the relay's own CPU profile) then `go tool pprof -top`:\n\n```\n", strings.Join(full[:len(full)-1], " ")+" cpu.prof")
	cmd := command(ctx, j.bin, full...)
	cmd.Dir = j.dir
	out, err := cmd.Output()
	b.WriteString(strings.TrimSpace(string(out)) + "\n")
	if err != nil {
		fmt.Fprintf(&b, "load run failed: %v\n```\n", err)
		return b.String()
	}
	for _, m := range [][]string{{"-top", "-nodecount=12"}, {"-top", "-cum", "-nodecount=20"}} {
		pc := exec.CommandContext(ctx, "go", append(append([]string{"tool", "pprof"}, m...), j.bin, prof)...)
		po, _ := pc.CombinedOutput()
		b.WriteString(trimPprof(string(po)))
	}
	b.WriteString("```\n")
	return b.String()
}
