package main

import (
	"math"
	"sort"
)

// results holds every sample: key ("job:benchmark") -> metric unit -> values, one per run.
type results struct {
	m map[string]map[string][]float64
}

func newResults() *results { return &results{m: map[string]map[string][]float64{}} }

func (r *results) add(key, metric string, v float64) {
	mm := r.m[key]
	if mm == nil {
		mm = map[string][]float64{}
		r.m[key] = mm
	}
	mm[metric] = append(mm[metric], v)
}

func (r *results) samples(key, metric string) []float64 { return r.m[key][metric] }

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// spread is (max - min) / median: how much the runs disagreed.
func spread(xs []float64) float64 {
	if len(xs) < 2 {
		return math.NaN()
	}
	lo, hi := xs[0], xs[0]
	for _, x := range xs {
		lo, hi = math.Min(lo, x), math.Max(hi, x)
	}
	return (hi - lo) / median(xs)
}

// src names one figure: a result key and metric, scaled into the row's unit, or a value computed
// from other figures.
type src struct {
	key, metric string
	scale       float64
	compute     func(r *results) (float64, []float64, bool)
	note        string
	alts        []*src // tried in order when set: the first with samples wins
}

// firstOf is the first of several places a figure may be reported.
func firstOf(alts ...*src) *src { return &src{alts: alts, key: alts[0].key} }

func (s *src) value(r *results) (v float64, xs []float64, ok bool) {
	if s == nil {
		return 0, nil, false
	}
	if s.compute != nil {
		return s.compute(r)
	}
	for _, a := range s.alts {
		if v, xs, ok := a.value(r); ok {
			return v, xs, ok
		}
	}
	if len(s.alts) > 0 {
		return 0, nil, false
	}
	xs = r.samples(s.key, s.metric)
	if len(xs) == 0 {
		return 0, nil, false
	}
	sc := s.scale
	if sc == 0 {
		sc = 1
	}
	scaled := make([]float64, len(xs))
	for i, x := range xs {
		scaled[i] = x * sc
	}
	return median(scaled), scaled, true
}

// goNs is a Go benchmark's ns/op in µs.
func goUs(job, name string) *src { return &src{key: job + ":" + name, metric: "ns/op", scale: 1e-3} }

// goMs is a Go benchmark's ns/op in ms.
func goMs(job, name string) *src { return &src{key: job + ":" + name, metric: "ns/op", scale: 1e-6} }

// goMetric is a custom b.ReportMetric (or MB/s) figure.
func goMetric(job, name, metric string) *src { return &src{key: job + ":" + name, metric: metric} }

// nodeUs is a libsignal (Node) figure in µs.
func nodeUs(name string) *src { return &src{key: "libsignal/node:" + name, metric: "us/op", scale: 1} }

// nodeMs is a libsignal (Node) figure in ms.
func nodeMs(name string) *src {
	return &src{key: "libsignal/node:" + name, metric: "us/op", scale: 1e-3}
}

func nodeBytes(name string) *src { return &src{key: "libsignal/node:" + name, metric: "B"} }

// rateFromUs turns the sum of per-op costs (µs) into operations per second.
func rateFromUs(note string, parts ...*src) *src {
	return &src{note: note, compute: func(r *results) (float64, []float64, bool) {
		sum := 0.0
		for _, p := range parts {
			v, _, ok := p.value(r)
			if !ok {
				return 0, nil, false
			}
			sum += v
		}
		return 1e6 / sum, nil, true
	}}
}
