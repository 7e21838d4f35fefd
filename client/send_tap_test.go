package client_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/sotto-im/sotto/relay/wire"
)

// sendTap stands between a client and the relay. It forwards every request
// as it is (WebSocket upgrades included) except the anonymous send socket,
// which it terminates so that it can read each frame: it records what the
// relay was sent there (never an identified send, never a token) and how
// deep the pipeline was, and it can refuse the socket, hold a frame back,
// or cut the socket after a number of frames.
type sendTap struct {
	t     testing.TB
	relay string // the relay's base URL
	srv   *httptest.Server
	proxy *httputil.ReverseProxy

	mu          sync.Mutex
	sockets     int            // send sockets opened
	frames      int            // Send frames forwarded
	identified  int            // Send frames without the sealed flag
	withToken   int            // send socket upgrades with an Authorization header
	inFlight    int            // frames forwarded and not yet answered
	maxInFlight int            // the deepest the pipeline was
	statuses    map[uint16]int // SendResult statuses
	// midPipeline counts refusals answered while other frames were still
	// unanswered.
	midPipeline int
	refuse      bool          // answer the socket upgrade with 503
	holdAt      int           // frame number (from 1) to hold back until release is closed; 0: none
	held        chan struct{} // closed when the held frame arrives
	release     chan struct{}
	cutAt       int // frame number after which both sockets are cut; 0: never
}

func newSendTap(t testing.TB, relayURL string) *sendTap {
	t.Helper()
	u, err := url.Parse(relayURL)
	if err != nil {
		t.Fatal(err)
	}
	tap := &sendTap{t: t, relay: relayURL, proxy: httputil.NewSingleHostReverseProxy(u), statuses: map[uint16]int{},
		held: make(chan struct{}), release: make(chan struct{})}
	tap.srv = httptest.NewServer(tap)
	t.Cleanup(func() {
		tap.srv.CloseClientConnections()
		tap.srv.Close()
	})
	return tap
}

// URL is the relay URL to give the client.
func (tap *sendTap) URL() string { return tap.srv.URL }

func (tap *sendTap) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v1/relay/ws/send" {
		tap.serveSend(w, r)
		return
	}
	tap.proxy.ServeHTTP(w, r)
}

func (tap *sendTap) serveSend(w http.ResponseWriter, r *http.Request) {
	tap.mu.Lock()
	if r.Header.Get("Authorization") != "" {
		tap.withToken++
	}
	refuse := tap.refuse
	tap.mu.Unlock()
	if refuse {
		http.Error(w, `{"error":{"code":"unavailable","message":"tap refuses"}}`, http.StatusServiceUnavailable)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	up, resp, err := websocket.Dial(ctx, strings.Replace(tap.relay, "http", "ws", 1)+"/v1/relay/ws/send",
		&websocket.DialOptions{Subprotocols: []string{wire.Subprotocol}, CompressionMode: websocket.CompressionDisabled})
	cancel()
	if err != nil {
		status := http.StatusBadGateway
		if resp != nil {
			status = resp.StatusCode
		}
		http.Error(w, `{"error":{"code":"unavailable","message":"upstream"}}`, status)
		return
	}
	down, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{wire.Subprotocol},
		CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		up.CloseNow()
		return
	}
	up.SetReadLimit(wire.MaxFrameSize)
	down.SetReadLimit(wire.MaxFrameSize)
	tap.mu.Lock()
	tap.sockets++
	tap.mu.Unlock()
	cut := func() {
		up.CloseNow()
		down.CloseNow()
	}
	bg := context.Background()
	// Relay to client: the results.
	go func() {
		defer cut()
		for {
			typ, b, err := up.Read(bg)
			if err != nil {
				return
			}
			if t, _ := wire.TypeOf(b); t == wire.FrameSendResult {
				if res, err := wire.ParseSendResult(b); err == nil {
					tap.mu.Lock()
					tap.statuses[res.Status]++
					tap.inFlight--
					if res.Status != http.StatusOK && tap.inFlight > 0 {
						tap.midPipeline++
					}
					tap.mu.Unlock()
				}
			}
			if err := down.Write(bg, typ, b); err != nil {
				return
			}
		}
	}()
	// Client to relay: the sends.
	defer cut()
	for {
		typ, b, err := down.Read(bg)
		if err != nil {
			return
		}
		if t, _ := wire.TypeOf(b); t == wire.FrameSend {
			s, err := wire.ParseSend(b)
			if err != nil {
				tap.t.Errorf("send socket: malformed Send frame: %v", err)
				return
			}
			tap.mu.Lock()
			tap.frames++
			n := tap.frames
			if !s.Sealed {
				tap.identified++
			}
			hold := n == tap.holdAt
			cutHere := n == tap.cutAt
			tap.mu.Unlock()
			if hold {
				close(tap.held)
				<-tap.release
			}
			tap.mu.Lock()
			tap.inFlight++
			tap.maxInFlight = max(tap.maxInFlight, tap.inFlight)
			tap.mu.Unlock()
			if err := up.Write(bg, typ, b); err != nil {
				return
			}
			if cutHere {
				// Let the relay take the frame, then drop both sides:
				// the answers to what is in flight are lost.
				time.Sleep(20 * time.Millisecond)
				tap.mu.Lock()
				tap.inFlight = 0
				tap.mu.Unlock()
				return
			}
			continue
		}
		if err := up.Write(bg, typ, b); err != nil {
			return
		}
	}
}

// check fails the test if the send socket ever carried an identified send
// or a token, and returns a snapshot of the counters.
func (tap *sendTap) check() (sockets, frames, maxInFlight, midPipeline int) {
	tap.t.Helper()
	tap.mu.Lock()
	defer tap.mu.Unlock()
	if tap.identified != 0 {
		tap.t.Errorf("the anonymous send socket carried %d identified sends", tap.identified)
	}
	if tap.withToken != 0 {
		tap.t.Errorf("%d send socket upgrades carried a token", tap.withToken)
	}
	return tap.sockets, tap.frames, tap.maxInFlight, tap.midPipeline
}
