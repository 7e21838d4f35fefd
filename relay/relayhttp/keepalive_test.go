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

// TestKeepalive checks both sides of the keepalive: a device that reads
// answers the relay's pings and stays connected through many of them (with
// a generous pong timeout, so that a loaded machine's scheduling delays do
// not close it), and a device that stops reading misses a pong and is
// closed as idle (with a short pong timeout, which it misses by design).
func TestKeepalive(t *testing.T) {
	t.Run("answered", func(t *testing.T) {
		e := newEnv(t, envOptions{cfg: server.Config{PingInterval: 20 * time.Millisecond, PongTimeout: 10 * time.Second}})
		from := e.token(store.QueueID{Account: e.account(1), Device: 1})
		live := store.QueueID{Account: e.account(1), Device: 1}
		pings := make(chan struct{}, 100)
		h := http.Header{}
		h.Set("Authorization", "Bearer "+e.token(live))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.hs.URL, "http")+"/v1/relay/ws",
			&websocket.DialOptions{HTTPHeader: h, Subprotocols: []string{wire.Subprotocol},
				OnPingReceived: func(context.Context, []byte) bool {
					select {
					case pings <- struct{}{}:
					default:
					}
					return true // answer it
				}})
		if err != nil {
			t.Fatal(err)
		}
		d := newDevice(t, c)
		t.Cleanup(func() { c.CloseNow() })
		d.drained()
		// A ping is only scheduled after the previous one's pong, so
		// several pings mean several answered ones.
		for i := range 5 {
			select {
			case <-pings:
			case <-time.After(10 * time.Second):
				t.Fatalf("only %d pings", i)
			}
		}
		e.mustSend(from, msg(live, 0, "still here"))
		if m := d.deliver(); string(m.Body) != "still here" {
			t.Fatalf("got %q", m.Body)
		}
	})

	t.Run("missed", func(t *testing.T) {
		e := newEnv(t, envOptions{cfg: server.Config{PingInterval: 50 * time.Millisecond, PongTimeout: 100 * time.Millisecond}})
		silent := store.QueueID{Account: e.account(1), Device: 1}
		h := http.Header{}
		h.Set("Authorization", "Bearer "+e.token(silent))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
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
	})
}

// TestSendSocketIdle checks that the anonymous send socket is closed (1000)
// once it has sent nothing for SendIdleTimeout, and not while it sends.
func TestSendSocketIdle(t *testing.T) {
	const idle = 500 * time.Millisecond
	e := newEnv(t, envOptions{cfg: server.Config{PingInterval: 20 * time.Millisecond, PongTimeout: 10 * time.Second, SendIdleTimeout: idle}})
	bob := store.QueueID{Account: e.account(1), Device: 1}
	key := [32]byte{4}
	e.setAccessKey(bob, key)
	d := e.dialSend()
	// Busy for two idle timeouts: stays open.
	for start := time.Now(); time.Since(start) < 2*idle; {
		allOK(t, "busy", pipeline(t, d, []*wire.Send{sealedMsg(bob, key, "x")}))
		time.Sleep(idle / 10)
	}
	opened := time.Now()
	if code := d.closeStatus(); code != websocket.StatusNormalClosure {
		t.Fatalf("idle send socket closed with %d, want 1000", code)
	}
	if waited := time.Since(opened); waited < idle/2 {
		t.Fatalf("closed %v after the last send, before the idle timeout %v", waited, idle)
	}
}
