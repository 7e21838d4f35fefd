package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sotto-im/sotto/relay/store"
)

// walFault fails writes to the WAL and to the recovery probe while on, as
// a failing disk fails both.
type walFault struct{ on atomic.Bool }

func (f *walFault) MaybeError(op errorfs.Op) error {
	if f.on.Load() && op.Kind.ReadOrWrite() == errorfs.OpIsWrite &&
		(strings.HasSuffix(op.Path, ".log") || strings.HasSuffix(op.Path, "RECOVERY-PROBE")) {
		return errorfs.ErrInjected
	}
	return nil
}

func (f *walFault) String() string { return "wal fault" }

// TestReadyzFollowsRelayStoreRecovery builds sottod's services on a relay
// store whose WAL can be made to fail: /readyz is 200, turns 503 once a
// write failed, and turns 200 again by itself once the disk works, with the
// store taking writes again and nothing written before lost.
func TestReadyzFollowsRelayStoreRecovery(t *testing.T) {
	dir := t.TempDir()
	cfg := &config{Mode: "all", DataDir: dir, PublicURL: "http://127.0.0.1"}
	keys, err := loadOrCreateKeys(cfg.dataPath(keysDir), "")
	if err != nil {
		t.Fatal(err)
	}
	f := &walFault{}
	reg := prometheus.NewRegistry()
	svc, err := buildServices(cfg, keys, slog.New(slog.DiscardHandler), reg,
		buildOptions{relayFS: errorfs.Wrap(vfs.Default, f), recoveryBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.close(context.Background())
	hs := httptest.NewServer(opsHandler(svc, reg))
	defer hs.Close()
	ready := func() int {
		resp, err := http.Get(hs.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := ready(); s != 200 {
		t.Fatalf("/readyz = %d on a healthy store", s)
	}
	ctx := context.Background()
	q := store.QueueID{Device: 1}
	q.Account[0] = 1
	put := func(n byte) error {
		_, err := svc.relayStore.Put(ctx, []byte("m"), []store.Entry{{Queue: q, ID: [16]byte{n}, Expires: time.Now().Add(time.Hour)}})
		return err
	}
	if err := put(1); err != nil {
		t.Fatal(err)
	}
	f.on.Store(true)
	if err := put(2); err == nil {
		t.Fatal("Put succeeded on a failing WAL")
	}
	if s := ready(); s != http.StatusServiceUnavailable {
		t.Fatalf("/readyz = %d with a failed relay store", s)
	}
	f.on.Store(false)
	deadline := time.Now().Add(10 * time.Second)
	for ready() != 200 {
		if time.Now().After(deadline) {
			t.Fatal("/readyz not 200 again 10 s after the fault cleared")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := put(3); err != nil {
		t.Fatalf("Put after recovery: %v", err)
	}
	msgs, err := svc.relayStore.Fetch(ctx, q, store.Cursor{}, 10)
	if err != nil || len(msgs) < 2 || msgs[0].ID != [16]byte{1} || msgs[len(msgs)-1].ID != [16]byte{3} {
		t.Fatalf("after recovery: %d messages, %v", len(msgs), err)
	}
	resp, err := http.Get(hs.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"sotto_relay_store_recoveries_total 1", "sotto_relay_store_failed 0", "sotto_relay_store_batches_total"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestSocketSetCloseAll: the WebSockets served through track are closed
// by closeAll (the relay's are when its store reopens); plain requests are
// not tracked.
func TestSocketSetCloseAll(t *testing.T) {
	s := newSocketSet()
	h := s.track(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.Read(context.Background()) // until the connection goes
	}))
	hs := httptest.NewUnstartedServer(h)
	hs.Config.ConnContext = withConn
	hs.Start()
	defer hs.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var conns []*websocket.Conn
	for range 3 {
		c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(hs.URL, "http"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		conns = append(conns, c)
	}
	for {
		s.mu.Lock()
		n := len(s.conns)
		s.mu.Unlock()
		if n == 3 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := s.closeAll(); n != 3 {
		t.Fatalf("closeAll closed %d, want 3", n)
	}
	for i, c := range conns {
		if _, _, err := c.Read(ctx); err == nil {
			t.Fatalf("connection %d still open", i)
		}
	}
}
