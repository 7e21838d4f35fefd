package loadtest

import (
	"context"
	"net/http"
	"testing"
	"time"
)

// TestSmoke runs each mode briefly against an in-process relay: the tool
// must keep working, whatever its figures on a loaded test machine.
func TestSmoke(t *testing.T) {
	f := Fixture{Seed: "smoke", Accounts: 30}
	r, err := StartRelay(t.TempDir(), "127.0.0.1:0", f, nil, map[string]http.Handler{MemPath: MemHandler()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := r.Close(); err != nil {
			t.Error(err)
		}
	}()
	ctx := context.Background()
	res, err := Run(ctx, Options{URL: r.URL, Fixture: f, Devices: 20, Senders: 2, InFlight: 8, Payload: 256,
		Warmup: 100 * time.Millisecond, Duration: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Received == 0 || res.Refused != 0 || res.P50us <= 0 {
		t.Fatalf("throughput run: %+v", res)
	}
	res, err = Run(ctx, Options{URL: r.URL, Fixture: f, Devices: 20, Senders: 2, InFlight: 8, Payload: 256, Rate: 200,
		Warmup: 100 * time.Millisecond, Duration: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Received == 0 || res.Mode != "latency" {
		t.Fatalf("latency run: %+v", res)
	}
	g, err := Group(ctx, r.URL, f, 25, 3, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if g.AcceptP50ms <= 0 || g.FanoutP50ms < g.AcceptP50ms/2 {
		t.Fatalf("group run: %+v", g)
	}
	idle, err := Idle(ctx, r.URL, f, 25, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Client and relay share this process: one goroutine each (the
	// relay's reader, the client's CloseRead).
	if idle.GoroutinesConn < 1.9 || idle.GoroutinesConn > 2.1 {
		t.Fatalf("idle connections cost %.2f goroutines each, want 2", idle.GoroutinesConn)
	}
}
