package main

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/relay/server"
)

// fakeKeyServer serves GET /v1/accounts/{account}/devices from a map, and
// answers 502 while down (as a proxy in front of a dead key server does).
type fakeKeyServer struct {
	down    atomic.Bool
	fetches atomic.Int64
	mu      sync.Mutex
	devices map[string][]crypto.DeviceID
}

func (k *fakeKeyServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	k.fetches.Add(1)
	if k.down.Load() {
		http.Error(w, "bad gateway", http.StatusBadGateway)
		return
	}
	id := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/v1/accounts/"), "/devices")
	k.mu.Lock()
	devs, ok := k.devices[id]
	k.mu.Unlock()
	if !ok {
		http.Error(w, `{"error":{"code":"not_found","message":"not found"}}`, http.StatusNotFound)
		return
	}
	json.NewEncoder(w).Encode(map[string]any{"devices": devs})
}

func (k *fakeKeyServer) set(a crypto.AccountID, devs ...crypto.DeviceID) {
	k.mu.Lock()
	k.devices[a.String()] = devs
	k.mu.Unlock()
}

// TestRemoteDirectoryStaleWhileError: the relay's device-list cache serves
// the last list fetched while the key server cannot be reached (for up to
// directoryStale, counted in a metric), and follows the key server again
// as soon as it answers: a device removed during the outage is refused
// once the key server is back.
func TestRemoteDirectoryStaleWhileError(t *testing.T) {
	ks := &fakeKeyServer{devices: map[string][]crypto.DeviceID{}}
	hs := httptest.NewServer(ks)
	defer hs.Close()
	reg := prometheus.NewRegistry()
	d, err := newRemoteDirectory(hs.URL, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	var clock atomic.Int64
	start := time.Now()
	d.now = func() time.Time { return start.Add(time.Duration(clock.Load())) }
	advance := func(by time.Duration) { clock.Add(int64(by)) }
	ctx := t.Context()
	var alice, bob, unknown crypto.AccountID
	alice[0], bob[0], unknown[0] = 1, 2, 3
	ks.set(alice, 1, 2)
	ks.set(bob, 1)

	devices := func(a crypto.AccountID) ([]crypto.DeviceID, error) {
		t.Helper()
		return d.Devices(ctx, a)
	}
	want := func(a crypto.AccountID, want ...crypto.DeviceID) {
		t.Helper()
		got, err := devices(a)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("Devices = %v, %v; want %v", got, err, want)
		}
	}
	want(alice, 1, 2)
	want(bob, 1)
	if _, err := devices(unknown); !errors.Is(err, server.ErrUnknownAccount) {
		t.Fatalf("unknown account: %v", err)
	}

	// The key server goes down; during the outage alice removes device 2
	// (the relay cannot learn it).
	ks.down.Store(true)
	ks.set(alice, 1)
	advance(directoryTTL + time.Second)
	want(alice, 1, 2) // stale, served
	if _, err := devices(unknown); !errors.Is(err, server.ErrUnknownAccount) {
		t.Fatalf("unknown account during the outage: %v", err)
	}
	// Within directoryRetry of the failure, lookups do not wait for the
	// key server again.
	n := ks.fetches.Load()
	for range 10 {
		want(bob, 1)
	}
	if ks.fetches.Load() != n {
		t.Fatalf("%d fetches within the retry pause", ks.fetches.Load()-n)
	}
	// An account never fetched cannot be answered.
	var carol crypto.AccountID
	carol[0] = 4
	if _, err := devices(carol); err == nil || errors.Is(err, server.ErrUnknownAccount) {
		t.Fatalf("uncached account during the outage: %v", err)
	}
	if got := counterValue(t, reg, "sotto_relay_directory_stale_total"); got < 12 {
		t.Fatalf("directory_stale_total = %v", got)
	}

	// Half an hour later, still down: still served.
	advance(30 * time.Minute)
	want(alice, 1, 2)

	// The key server is back: the removed device is refused again.
	ks.down.Store(false)
	advance(directoryRetry)
	want(alice, 1)

	// An outage longer than directoryStale: the lists expire.
	ks.down.Store(true)
	advance(directoryStale + directoryTTL)
	if _, err := devices(alice); err == nil {
		t.Fatal("a list older than directoryStale was used")
	}
	advance(directoryRetry)
	if _, err := devices(bob); err == nil {
		t.Fatal("a list older than directoryStale was used")
	}
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
