package relayhttp_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/internal/token"
	"github.com/sotto-im/sotto/relay/relayhttp"
	"github.com/sotto-im/sotto/relay/server"
	"github.com/sotto-im/sotto/relay/store"
	"github.com/sotto-im/sotto/relay/store/blobstore"
	"github.com/sotto-im/sotto/relay/store/pebblestore"
	"github.com/sotto-im/sotto/relay/wire"
)

// clock is a settable clock shared by the server and the store, so that
// expiry can be tested without sleeping.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// directory is the test's stand-in for the key server: accounts and their
// current devices.
type directory struct {
	mu       sync.Mutex
	accounts map[crypto.AccountID][]crypto.DeviceID
}

func (d *directory) Devices(_ context.Context, a crypto.AccountID) ([]crypto.DeviceID, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	devs, ok := d.accounts[a]
	if !ok {
		return nil, server.ErrUnknownAccount
	}
	return append([]crypto.DeviceID(nil), devs...), nil
}

func (d *directory) set(a crypto.AccountID, devs ...crypto.DeviceID) {
	d.mu.Lock()
	d.accounts[a] = devs
	d.mu.Unlock()
}

// env is one relay on a real Pebble directory behind a real HTTP server on
// 127.0.0.1.
type env struct {
	t      *testing.T
	dir    string
	db     *pebblestore.DB
	blobs  *blobstore.Store
	clock  *clock
	direct *directory
	srv    *server.Server
	hs     *httptest.Server
	signer *token.Signer
}

type envOptions struct {
	cfg   server.Config
	store pebblestore.Options
	// unordered hides the store's store.OrderedPutter from the server,
	// as a store without it would.
	unordered bool
	blobs     int64 // max blob size (default 1 MiB)
	quota     int64 // per-account blob quota (default 4 MiB)
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	leakCheck(t)
	e := &env{t: t, dir: t.TempDir(), clock: &clock{t: time.Now()},
		direct: &directory{accounts: make(map[crypto.AccountID][]crypto.DeviceID)}}
	o.store.Now = e.clock.Now
	db, err := pebblestore.Open(filepath.Join(e.dir, "queues"), o.store)
	if err != nil {
		t.Fatal(err)
	}
	e.db = db
	if o.blobs == 0 {
		o.blobs = 1 << 20
	}
	if o.quota == 0 {
		o.quota = 4 << 20
	}
	e.blobs, err = blobstore.Open(filepath.Join(e.dir, "blobs"), blobstore.Options{MaxSize: o.blobs, Quota: o.quota, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	e.signer = token.NewSigner(priv, "sotto-test", "relay")
	auth := server.TokenAuthenticator{Verifier: token.NewVerifier(token.KeysOf(e.signer.Public()), "sotto-test", "relay")}
	o.cfg.Now = e.clock.Now
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var queues store.Queues = db
	if o.unordered {
		queues = struct{ store.Queues }{db}
	}
	e.srv, err = server.New(o.cfg, queues, db, e.blobs, e.direct, auth, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.hs = httptest.NewServer(relayhttp.Handler(e.srv))
	t.Cleanup(func() {
		e.hs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.srv.Close(ctx); err != nil {
			t.Errorf("server Close: %v", err)
		}
		if err := db.Close(); err != nil {
			t.Errorf("store Close: %v", err)
		}
	})
	return e
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// leakCheck fails the test if goroutines started during it outlive it.
// Registered first, it runs after every other cleanup.
func leakCheck(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("%d goroutines before, %d after:\n%s", before, n, buf)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// account makes a fresh account with the given devices in the directory.
func (e *env) account(devices ...crypto.DeviceID) crypto.AccountID {
	var a crypto.AccountID
	rand.Read(a[:])
	e.direct.set(a, devices...)
	return a
}

func (e *env) token(q store.QueueID) string {
	tok, _, err := e.signer.Issue(q.Account, q.Device, time.Now(), 10*time.Minute)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

func (e *env) url(path string) string { return e.hs.URL + path }

// do sends an HTTP request and returns the status and the body.
func (e *env) do(method, path, bearer string, body []byte, header ...string) (int, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url(path), bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// send posts a Send frame; from is the identified sender ("" for sealed).
func (e *env) send(from string, m *wire.Send) (int, []byte) {
	e.t.Helper()
	return e.do("POST", "/v1/messages", from, m.Marshal())
}

// msg builds a single-recipient identified Send.
func msg(to store.QueueID, prio uint8, body string) *wire.Send {
	m := &wire.Send{Priority: prio, Body: []byte(body),
		Accounts: []wire.SendAccount{{Account: to.Account, Devices: []wire.SendDevice{{Device: uint32(to.Device), Header: []byte("h")}}}}}
	rand.Read(m.ID[:])
	return m
}

func (e *env) mustSend(from string, m *wire.Send) {
	e.t.Helper()
	if status, body := e.send(from, m); status != http.StatusOK {
		e.t.Fatalf("send: %d %s", status, body)
	}
}

func (e *env) depth(q store.QueueID) int {
	e.t.Helper()
	n, _, err := e.db.Depth(context.Background(), q)
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

// device is a WebSocket client of the relay.
//
// A goroutine reads frames into a channel: coder/websocket closes the
// connection when a Read's context ends, so reads with a timeout must not
// be done on the connection itself.
type device struct {
	t      *testing.T
	c      *websocket.Conn
	frames chan []byte
	err    chan error // the read error that ended the reader
}

func newDevice(t *testing.T, c *websocket.Conn) *device {
	d := &device{t: t, c: c, frames: make(chan []byte, 1024), err: make(chan error, 1)}
	go func() {
		for {
			_, b, err := c.Read(context.Background())
			if err != nil {
				d.err <- err
				close(d.frames)
				return
			}
			d.frames <- b
		}
	}()
	return d
}

func (e *env) dialErr(q store.QueueID) (*device, *http.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h := http.Header{}
	h.Set("Authorization", "Bearer "+e.token(q))
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.hs.URL, "http")+"/v1/relay/ws",
		&websocket.DialOptions{HTTPHeader: h, Subprotocols: []string{wire.Subprotocol}})
	if err != nil {
		return nil, resp, err
	}
	c.SetReadLimit(2 * wire.MaxFrameSize)
	d := newDevice(e.t, c)
	e.t.Cleanup(func() { c.CloseNow() })
	return d, resp, nil
}

func (e *env) dial(q store.QueueID) *device {
	e.t.Helper()
	d, _, err := e.dialErr(q)
	if err != nil {
		e.t.Fatal(err)
	}
	return d
}

// read returns the next frame, or an error (a timeout included).
func (d *device) read(timeout time.Duration) ([]byte, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case b, ok := <-d.frames:
		if !ok {
			err := <-d.err
			d.err <- err
			return nil, err
		}
		return b, nil
	case <-t.C:
		return nil, context.DeadlineExceeded
	}
}

func (d *device) next() []byte {
	d.t.Helper()
	b, err := d.read(5 * time.Second)
	if err != nil {
		d.t.Fatalf("read: %v", err)
	}
	return b
}

func (d *device) deliver() *wire.Deliver {
	d.t.Helper()
	f := d.next()
	m, err := wire.ParseDeliver(f)
	if err != nil {
		d.t.Fatalf("want Deliver, got %x: %v", f[:min(len(f), 16)], err)
	}
	return m
}

func (d *device) drained() {
	d.t.Helper()
	if err := wire.ParseDrained(d.next()); err != nil {
		d.t.Fatalf("want Drained: %v", err)
	}
}

// quiet asserts that nothing arrives for a while.
func (d *device) quiet(wait time.Duration) {
	d.t.Helper()
	if f, err := d.read(wait); err == nil {
		d.t.Fatalf("unexpected frame %x", f[:min(len(f), 16)])
	}
}

func (d *device) write(frame []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return d.c.Write(ctx, websocket.MessageBinary, frame)
}

func (d *device) ack(c [wire.CursorSize]byte) {
	d.t.Helper()
	if err := d.write((&wire.Ack{Cursor: c}).Marshal()); err != nil {
		d.t.Fatal(err)
	}
}

// closeStatus reads until the connection ends and returns its close code.
func (d *device) closeStatus() websocket.StatusCode {
	d.t.Helper()
	for {
		_, err := d.read(10 * time.Second)
		if errors.Is(err, context.DeadlineExceeded) {
			return -1
		}
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code
			}
			return -1
		}
	}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
