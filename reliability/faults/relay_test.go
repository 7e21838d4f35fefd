// Package faults injects storage faults (failed WAL writes, failed syncs, a
// full disk) under the relay's and the key server's Pebble stores while
// real HTTP and WebSocket traffic flows, and checks what the servers promise:
// new writes are refused with a clear error, reads go on, and nothing the
// relay answered "accepted" is lost.
package faults

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/coder/websocket"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/internal/token"
	"github.com/sotto-im/sotto/relay/relayhttp"
	"github.com/sotto-im/sotto/relay/server"
	"github.com/sotto-im/sotto/relay/store"
	"github.com/sotto-im/sotto/relay/store/blobstore"
	"github.com/sotto-im/sotto/relay/store/pebblestore"
	"github.com/sotto-im/sotto/relay/store/recovering"
	"github.com/sotto-im/sotto/relay/wire"
)

// fault is a switchable storage fault: while on, the operations it matches
// fail with its error.
type fault struct {
	on    atomic.Bool
	match func(errorfs.Op) bool
	err   error
}

func (f *fault) MaybeError(op errorfs.Op) error {
	if f.on.Load() && f.match(op) {
		return f.err
	}
	return nil
}

func (f *fault) String() string { return "reliability fault" }

// walWrite and walSync match the WAL and the relay store's recovery probe
// (relay/store/recovering writes and syncs a probe file before it reopens
// a failed store): a disk that fails the one fails the other.
func walWrite(op errorfs.Op) bool {
	return op.Kind.ReadOrWrite() == errorfs.OpIsWrite && walOrProbe(op.Path)
}

func walSync(op errorfs.Op) bool {
	switch op.Kind {
	case errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo:
		return walOrProbe(op.Path)
	}
	return false
}

func walOrProbe(path string) bool {
	return strings.HasSuffix(path, ".log") || strings.HasSuffix(path, recovering.ProbeFile)
}

func anyWrite(op errorfs.Op) bool { return op.Kind.ReadOrWrite() == errorfs.OpIsWrite }

// errNoSpace is what a full disk answers.
var errNoSpace = fmt.Errorf("injected: %w", syscall.ENOSPC)

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
	return devs, nil
}

// relayEnv is a relay on a Pebble store over fs, behind a real HTTP server.
type relayEnv struct {
	t      *testing.T
	fs     vfs.FS
	dir    string
	db     *recovering.DB
	srv    *server.Server
	hs     *httptest.Server
	signer *token.Signer
	verify *token.Verifier
	dirs   *directory
	blobs  *blobstore.Store

	mu      sync.Mutex
	handler http.Handler
}

func newRelayEnv(t *testing.T, fs vfs.FS, dir string) *relayEnv {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	e := &relayEnv{t: t, fs: fs, dir: dir, signer: token.NewSigner(priv, "sotto-test", "relay"),
		dirs: &directory{accounts: map[crypto.AccountID][]crypto.DeviceID{}}}
	e.verify = token.NewVerifier(token.KeysOf(e.signer.Public()), "sotto-test", "relay")
	var err error
	if e.blobs, err = blobstore.Open(t.TempDir(), blobstore.Options{}); err != nil {
		t.Fatal(err)
	}
	e.open()
	e.hs = httptest.NewServer(e)
	t.Cleanup(func() {
		e.hs.CloseClientConnections()
		e.hs.Close()
		e.closeRelay()
	})
	return e
}

// ServeHTTP serves with the current relay, which restart swaps as a process
// restart would.
func (e *relayEnv) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	h := e.handler
	e.mu.Unlock()
	h.ServeHTTP(w, r)
}

// open opens the relay's store as sottod does: a pebblestore that reopens
// itself after a storage failure (with short waits, for the test).
func (e *relayEnv) open() {
	fs, dir := e.fs, e.dir
	db, err := recovering.Open(recovering.Options{
		Dir: dir,
		FS:  fs,
		Open: func() (recovering.Store, error) {
			return pebblestore.Open(dir, pebblestore.Options{FS: fs, Logf: func(string, ...any) {}})
		},
		MinBackoff: 50 * time.Millisecond,
		MaxBackoff: 250 * time.Millisecond,
	})
	if err != nil {
		e.t.Fatalf("open relay store: %v", err)
	}
	srv, err := server.New(server.Config{IdentifiedRate: 1e6, IdentifiedBurst: 1 << 20}, db, db, e.blobs, e.dirs, server.TokenAuthenticator{Verifier: e.verify},
		slog.New(slog.DiscardHandler), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	e.mu.Lock()
	e.db, e.srv, e.handler = db, srv, relayhttp.Handler(srv)
	e.mu.Unlock()
}

func (e *relayEnv) closeRelay() {
	if e.hs != nil {
		e.hs.CloseClientConnections()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e.srv.Close(ctx)
	_ = e.db.Close() // reports the failure that failed the store, if any
}

// restart is what an operator (or a supervisor) does: close and reopen the
// store on the same directory.
func (e *relayEnv) restart() {
	e.closeRelay()
	// The server closed every connection; a POST on a kept-alive one
	// that the client has not yet seen closed would fail with EOF (POSTs
	// are not retried).
	http.DefaultClient.CloseIdleConnections()
	e.open()
}

func (e *relayEnv) account(devs ...crypto.DeviceID) crypto.AccountID {
	var a crypto.AccountID
	rand.Read(a[:])
	e.dirs.mu.Lock()
	e.dirs.accounts[a] = devs
	e.dirs.mu.Unlock()
	return a
}

func (e *relayEnv) token(q store.QueueID) string {
	tok, _, err := e.signer.Issue(q.Account, q.Device, time.Now(), 10*time.Minute)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// send posts one identified message to q and returns the status and the
// error code of a refusal.
func (e *relayEnv) send(from string, to store.QueueID, id [16]byte, body []byte) (int, string, error) {
	m := &wire.Send{ID: id, Body: body,
		Accounts: []wire.SendAccount{{Account: to.Account, Devices: []wire.SendDevice{{Device: uint32(to.Device), Header: []byte("h")}}}}}
	req, _ := http.NewRequest("POST", e.hs.URL+"/v1/messages", bytes.NewReader(m.Marshal()))
	req.Header.Set("Authorization", "Bearer "+from)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK {
		return resp.StatusCode, "", nil
	}
	var ae apiError
	if err := json.Unmarshal(b, &ae); err != nil || ae.Error.Code == "" {
		return resp.StatusCode, "", fmt.Errorf("status %d without a JSON error: %q", resp.StatusCode, b)
	}
	return resp.StatusCode, ae.Error.Code, nil
}

// receiver reads a device's queue over the WebSocket.
type receiver struct {
	c      *websocket.Conn
	frames chan []byte
	// lastCursor is the cursor of the last message delivered.
	lastCursor [wire.CursorSize]byte
}

func (e *relayEnv) dial(q store.QueueID) (*receiver, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h := http.Header{}
	h.Set("Authorization", "Bearer "+e.token(q))
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.hs.URL, "http")+"/v1/relay/ws",
		&websocket.DialOptions{HTTPHeader: h, Subprotocols: []string{wire.Subprotocol}})
	if err != nil {
		return nil, err
	}
	c.SetReadLimit(2 * wire.MaxFrameSize)
	r := &receiver{c: c, frames: make(chan []byte, 256)}
	go func() {
		defer close(r.frames)
		for {
			_, b, err := c.Read(context.Background())
			if err != nil {
				return
			}
			r.frames <- b
		}
	}()
	e.t.Cleanup(func() { c.CloseNow() })
	return r, nil
}

// drain reads every stored message until Drained (or max messages, if max
// > 0), acknowledging each one if ack, and returns their IDs in order. It
// stops early if the connection ends.
func (r *receiver) drain(t *testing.T, ack bool, max int) (ids [][16]byte, closed bool) {
	t.Helper()
	for max <= 0 || len(ids) < max {
		select {
		case f, ok := <-r.frames:
			if !ok {
				return ids, true
			}
			if wire.ParseDrained(f) == nil {
				return ids, false
			}
			d, err := wire.ParseDeliver(f)
			if err != nil {
				continue // other frames (results, pings) are not ours
			}
			ids = append(ids, d.ID)
			r.lastCursor = d.Cursor
			if ack {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := r.c.Write(ctx, websocket.MessageBinary, (&wire.Ack{Cursor: d.Cursor}).Marshal())
				cancel()
				if err != nil {
					return ids, true
				}
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no Drained after %d messages", len(ids))
		}
	}
	return ids, false
}

func newID() (id [16]byte) {
	rand.Read(id[:])
	return id
}
