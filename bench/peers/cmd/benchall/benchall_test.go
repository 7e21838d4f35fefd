package main

import (
	"math"
	"regexp"
	"testing"
)

func TestParseGoBench(t *testing.T) {
	out := []byte(`goos: linux
BenchmarkRatchet/encrypt/64B/memory-2   	  138213	     14888 ns/op	   4.30 MB/s	    3300 B/op	      29 allocs/op
BenchmarkWireOverhead-2         	1000000	        57.00 steady-B	      1270 prekey-B
BenchmarkSealedSender/seal+open/256B-2 	 100	 705000 ns/op
--- FAIL: BenchmarkBroken
PASS
`)
	res := newResults()
	if n := parseGoBench(out, "j", res); n != 3 {
		t.Fatalf("parsed %d lines, want 3", n)
	}
	for _, c := range []struct {
		key, metric string
		want        float64
	}{
		{"j:Ratchet/encrypt/64B/memory", "ns/op", 14888},
		{"j:Ratchet/encrypt/64B/memory", "MB/s", 4.30},
		{"j:WireOverhead", "steady-B", 57},
		{"j:WireOverhead", "prekey-B", 1270},
		{"j:SealedSender/seal+open/256B", "ns/op", 705000},
	} {
		if got := res.samples(c.key, c.metric); len(got) != 1 || got[0] != c.want {
			t.Errorf("%s %s = %v, want %v", c.key, c.metric, got, c.want)
		}
	}
}

func TestMedianSpreadBest(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median odd = %v", m)
	}
	if m := median([]float64{4, 1, 2, 3}); m != 2.5 {
		t.Errorf("median even = %v", m)
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median of nothing should be NaN")
	}
	if s := spread([]float64{1, 2, 3}); s != 1 {
		t.Errorf("spread = %v", s)
	}
	if b := best([]float64{5, 3, 4}, false); b != "3.00" {
		t.Errorf("best cost = %q", b)
	}
	if b := best([]float64{5, 3, 4}, true); b != "5.00" {
		t.Errorf("best rate = %q", b)
	}
}

func TestAnchored(t *testing.T) {
	got := anchored("SealedSender/seal+open/256B")
	want := `^BenchmarkSealedSender$/^seal\+open$/^256B$`
	if got != want {
		t.Fatalf("anchored = %q, want %q", got, want)
	}
	for i, part := range []string{"BenchmarkSealedSender", "seal+open", "256B"} {
		re := regexp.MustCompile([]string{`^BenchmarkSealedSender$`, `^seal\+open$`, `^256B$`}[i])
		if !re.MatchString(part) {
			t.Errorf("level %d does not match %q", i, part)
		}
	}
}

// TestReportRatios checks the JSON lines: ratio to Sotto and floor ratio are plain value ratios,
// missing figures are null, and the floor gets its own line.
func TestReportRatios(t *testing.T) {
	res := newResults()
	res.add(sc+":Ratchet/encrypt/64B/memory", "ns/op", 4000)
	res.add(lg+":Ratchet/encrypt/64B/memory", "ns/op", 12000)
	res.add(fl+":Floor/derived/ratchet-msg-encrypt/64B", "ns/op", 2000)
	o := &options{}
	rep := buildReport(o, nil, res, 0)
	var found int
	for _, l := range rep.lines {
		if l.Workload != "ratchet encrypt 64B, state in memory" {
			continue
		}
		found++
		switch l.System {
		case "sotto":
			if *l.Value != 4 || *l.RatioToSotto != 1 || *l.FloorRatio != 2 {
				t.Errorf("sotto line %+v", l)
			}
		case "libsignal-go":
			if *l.Value != 12 || *l.RatioToSotto != 3 || *l.FloorRatio != 6 {
				t.Errorf("libsignal-go line %+v", l)
			}
		case "libsignal":
			if l.Value != nil || l.RatioToSotto != nil {
				t.Errorf("missing libsignal should be null: %+v", l)
			}
		case "floor":
			if *l.Value != 2 || *l.FloorRatio != 1 {
				t.Errorf("floor line %+v", l)
			}
		}
	}
	if found != 4 {
		t.Fatalf("%d lines for the row, want 4", found)
	}
	for _, ts := range rep.targets {
		if ts.design == "ratchet encrypt / decrypt, 64 B, state in memory" && ts.status != "met where measured (part not yet measured)" {
			t.Errorf("status %q", ts.status)
		}
		if ts.design == "relay: memory per idle WebSocket connection" && ts.status != "not yet measured" {
			t.Errorf("status %q", ts.status)
		}
	}
}
