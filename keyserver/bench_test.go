package keyserver

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/keyserver/store"
)

// benchKeys are prekeys generated once: every benchmark device shares one
// identity key (the server does not mind), so the ML-KEM keys are
// generated and signed once, not per device.
var benchKeys = sync.OnceValues(func() (*crypto.IdentityPrivateKey, store.DeviceKeys) {
	ik := crypto.GenerateIdentityKey()
	enc := func(m interface{ MarshalBinary() ([]byte, error) }) []byte { b, _ := m.MarshalBinary(); return b }
	k := store.DeviceKeys{
		SignedPreKey: &store.PreKey{ID: 1, Encoded: enc(&crypto.GenerateSignedPreKey(ik, 1).SignedPreKey)},
		LastResort:   &store.PreKey{ID: 2, Encoded: enc(&crypto.GenerateKEMPreKey(ik, 2, true).KEMPreKey)},
	}
	for i := range uint32(store.MaxOneTimePreKeys) {
		k.OneTimeEC = append(k.OneTimeEC, store.PreKey{ID: 10 + i, Encoded: enc(&crypto.GenerateOneTimePreKey(10 + i).OneTimePreKey)})
		k.OneTimeKEM = append(k.OneTimeKEM, store.PreKey{ID: 10 + i, Encoded: enc(&crypto.GenerateKEMPreKey(ik, 10+i, false).KEMPreKey)})
	}
	return ik, k
})

// benchClients is the main number of concurrent HTTP clients of the
// benchmarks.
const benchClients = 64

// BenchmarkBundleFetch measures bundle fetches that claim a one-time EC
// and a one-time ML-KEM prekey each, over HTTP on 127.0.0.1 from 8, 64 and 256
// concurrent clients (one keep-alive connection each), against a Pebble
// store in a real directory with synced claims. Each fetch is one claim of
// a one-time prekey pair; "claims/s" counts fetches per second.
func BenchmarkBundleFetch(b *testing.B) {
	for _, c := range []int{8, benchClients, 4 * benchClients} {
		b.Run(fmt.Sprintf("clients=%d", c), func(b *testing.B) { benchBundleFetch(b, c) })
	}
}

func benchBundleFetch(b *testing.B, clients int) {
	ik, keys := benchKeys()
	e := newEnv(b, nil)
	// Enough devices that no fetch finds its device drained.
	nAccounts := b.N/store.MaxOneTimePreKeys + 1
	accounts := make([]string, nAccounts)
	for i := range accounts {
		ak := crypto.GenerateAccountKey()
		l := &crypto.DeviceList{AccountKey: ak.Public(), Version: 1,
			Devices: []crypto.Device{{ID: 1, Identity: ik.Public(), Added: time.Unix(1700000000, 0)}}}
		signed, err := crypto.SignDeviceList(ak, l)
		if err != nil {
			b.Fatal(err)
		}
		if err := e.db.CreateAccount(b.Context(), accountRecord(l, signed), 1, keys); err != nil {
			b.Fatal(err)
		}
		accounts[i] = "/v1/bundles/" + ak.ID().String() + "/1"
	}
	if err := e.db.Compact(b.Context()); err != nil {
		b.Fatal(err)
	}
	fetcher := e.register(0, 0)
	tok := e.login(fetcher, 1)
	runFetchLoad(b, clients, e.http.URL, tok, accounts)
}

// BenchmarkHTTPFloor is the same load against a handler that only answers
// a fixed body of a bundle response's size: what HTTP on loopback costs on
// this machine in the same sitting, the floor under BenchmarkBundleFetch.
func BenchmarkHTTPFloor(b *testing.B) {
	for _, c := range []int{8, benchClients, 4 * benchClients} {
		b.Run(fmt.Sprintf("clients=%d", c), func(b *testing.B) { benchHTTPFloor(b, c) })
	}
}

func benchHTTPFloor(b *testing.B, clients int) {
	body := bytes.Repeat([]byte("x"), 2600)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}))
	defer srv.Close()
	runFetchLoad(b, clients, srv.URL, "token", []string{"/v1/bundles/x/1"})
}

// runFetchLoad posts b.N requests to base+paths[i%len] from clients
// concurrent clients and reports throughput, latency and CPU.
func runFetchLoad(b *testing.B, clients int, base, tok string, paths []string) {
	nAccounts := len(paths)
	accounts := paths
	tr := &http.Transport{MaxIdleConns: clients, MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	var next atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	var failed atomic.Int64
	b.SetParallelism((clients + 1) / max(1, runtimeProcs()))
	b.ResetTimer()
	cpu0 := processCPU()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		for pb.Next() {
			path := accounts[int(next.Add(1)-1)%nAccounts]
			req, _ := http.NewRequest("POST", base+path, nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			t0 := time.Now()
			res, err := client.Do(req)
			if err != nil {
				failed.Add(1)
				continue
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			mine = append(mine, time.Since(t0))
			if res.StatusCode != 200 {
				failed.Add(1)
			}
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	cpu := processCPU() - cpu0
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d fetches failed", n)
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds())
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "claims/s")
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
	// CPU of the whole process (server and clients) per fetch: on a shared
	// machine the throughput depends on the share of the cores this process
	// gets, and this figure says what an idle machine would allow.
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/claim")
	b.ReportMetric(cpu.Seconds()/elapsed.Seconds(), "cores-used")
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }

// processCPU returns the user and system CPU time of the process so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
