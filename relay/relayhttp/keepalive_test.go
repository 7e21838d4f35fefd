package relayhttp_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/sotto-im/sotto/relay/server"
	"github.com/sotto-im/sotto/relay/store"
	"github.com/sotto-im/sotto/relay/wire"
)

func TestKeepalive(t *testing.T) {
	e := newEnv(t, envOptions{cfg: server.Config{PingInterval: 50 * time.Millisecond, PongTimeout: 100 * time.Millisecond}})
	from := e.token(store.QueueID{Account: e.account(1), Device: 1})

	// A device that reads (and so answers pings) stays connected.
	live := store.QueueID{Account: e.account(1), Device: 1}
	d := e.dial(live)
	d.drained()
	time.Sleep(400 * time.Millisecond)
	e.mustSend(from, msg(live, 0, "still here"))
	if m := d.deliver(); string(m.Body) != "still here" {
		t.Fatalf("got %q", m.Body)
	}

	// A device that stops reading misses its pongs and is closed as idle.
	silent := store.QueueID{Account: e.account(1), Device: 1}
	h := http.Header{}
	h.Set("Authorization", "Bearer "+e.token(silent))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.hs.URL, "http")+"/v1/relay/ws",
		&websocket.DialOptions{HTTPHeader: h, Subprotocols: []string{wire.Subprotocol}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	time.Sleep(500 * time.Millisecond) // not reading: pings go unanswered
	for {
		_, _, err := c.Read(ctx)
		if err == nil {
			continue
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.StatusCode(server.CloseIdle) {
			t.Fatalf("silent device: %v, want close %d", err, server.CloseIdle)
		}
		break
	}
}
