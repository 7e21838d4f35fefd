package keyserver

import (
	"bytes"
	"encoding/base64"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestLogsAndMetrics runs a session with debug logging and checks that the
// logs hold no token, key, handle or account ID, and that the metrics count
// what happened.
func TestLogsAndMetrics(t *testing.T) {
	e := newEnv(t, nil)
	var logs lockedBuffer
	reg := prometheus.NewRegistry()
	cfg := e.srv.cfg
	s, err := New(cfg, e.db, slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})), reg)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = s
	e.http.Close()
	e.http = httptest.NewServer(s.Handler())
	defer e.http.Close()

	alice := e.register(2, 2)
	tok := e.login(alice, 1)
	e.must(200, e.do("PUT", "/v1/handle", tok, handleRequest{Handle: "secretname"}))
	bob := e.register(0, 0)
	btok := e.login(bob, 1)
	for range 3 {
		fetchBundles(t, e, btok, alice.id(), 1)
	}
	e.must(401, e.do("GET", "/v1/prekeys/count", "garbage", nil))
	e.must(200, e.do("GET", "/v1/handles/secretname", btok, nil))

	out := logs.String()
	if !strings.Contains(out, `"route":"/v1/bundles/{account}/{device}"`) {
		t.Fatalf("expected request logs by route pattern, got:\n%s", out)
	}
	for name, secret := range map[string]string{
		"token":       tok,
		"handle":      "secretname",
		"account ID":  alice.id(),
		"account key": base64.StdEncoding.EncodeToString(alice.key.Public().Bytes()),
		"identity":    base64.StdEncoding.EncodeToString(alice.devices[1].Public().Bytes()),
	} {
		if strings.Contains(out, secret) {
			t.Errorf("logs contain the %s", name)
		}
	}

	if n := counterValue(s.metrics.claims.WithLabelValues("ec")); n != 2 {
		t.Errorf("ec claims = %v, want 2", n)
	}
	if n := counterValue(s.metrics.claims.WithLabelValues("last_resort")); n != 1 {
		t.Errorf("last-resort claims = %v, want 1", n)
	}
	if n := counterValue(s.metrics.authFailures.WithLabelValues("token")); n != 1 {
		t.Errorf("token failures = %v, want 1", n)
	}
	if n := counterValue(s.metrics.requests.WithLabelValues("/v1/bundles/{account}/{device}", "200")); n != 3 {
		t.Errorf("bundle requests = %v, want 3", n)
	}
	// A second server on the same registerer is refused, not silently merged.
	if _, err := New(cfg, e.db, nil, reg); err == nil {
		t.Error("registering the metrics twice succeeded")
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}
