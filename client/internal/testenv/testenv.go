// Package testenv starts, in the calling process, the servers a Sotto
// client talks to — a relay on a real Pebble directory behind real HTTP and
// WebSocket, and a key server — on 127.0.0.1, for the client's tests,
// examples and benchmarks. It is for tests only.
package testenv

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"time"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/internal/token"
	"github.com/sotto-im/sotto/relay/relayhttp"
	"github.com/sotto-im/sotto/relay/server"
	rstore "github.com/sotto-im/sotto/relay/store"
	"github.com/sotto-im/sotto/relay/store/pebblestore"
)

// Env is a running relay and key server.
type Env struct {
	KeyServerURL string
	RelayURL     string
	TrustRoots   []crypto.TrustRoot

	dir     string
	relayDB *pebblestore.DB
	relay   *server.Server
	relayHS *httptest.Server
	ksHS    *httptest.Server
	ks      *keyServer

	mu      sync.Mutex
	stopped bool
}

// New starts the servers, with the relay's Pebble data in a new temporary
// directory (removed by Close).
func New() (*Env, error) {
	dir, err := os.MkdirTemp("", "sotto-testenv-")
	if err != nil {
		return nil, err
	}
	e := &Env{dir: dir}
	seed := make([]byte, 32)
	rand.Read(seed)
	signer, err := crypto.NewCertificateSigner(seed)
	if err != nil {
		return nil, err
	}
	_, tokKey, _ := ed25519.GenerateKey(rand.Reader)
	tokSigner := token.NewSigner(tokKey, "sotto-test", "sotto")
	e.ks = newKeyServer(signer, tokSigner)
	e.ksHS = httptest.NewServer(e.ks.handler())
	e.KeyServerURL = e.ksHS.URL
	e.TrustRoots = []crypto.TrustRoot{signer.TrustRoot()}
	if err := e.startRelay(); err != nil {
		e.Close()
		return nil, err
	}
	// The relay verifies the key server's tokens with its public key.
	return e, nil
}

func (e *Env) startRelay() error {
	db, err := pebblestore.Open(e.dir+"/relay", pebblestore.Options{})
	if err != nil {
		return fmt.Errorf("testenv: relay store: %w", err)
	}
	verifier := token.NewVerifier(token.KeysOf(e.ks.tokens.Public()), "sotto-test", "sotto")
	blobs, err := newFileBlobs(e.dir + "/blobs")
	if err != nil {
		db.Close()
		return err
	}
	rs, err := server.New(server.Config{}, db, db, blobs, e.ks, tokenAuth{verifier},
		slog.New(slog.DiscardHandler), nil)
	if err != nil {
		db.Close()
		return err
	}
	e.relayDB, e.relay = db, rs
	h := relayhttp.Handler(rs)
	if e.relayHS == nil {
		e.relayHS = httptest.NewServer(h)
		e.RelayURL = e.relayHS.URL
	} else {
		e.relayHS.Config.Handler = h
	}
	return nil
}

// StopRelay stops the relay (its connections drop, and sends fail with 503)
// until StartRelay; its stored queues survive.
func (e *Env) StopRelay() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.relayHS.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, `{"error":{"code":"unavailable","message":"relay stopped"}}`, http.StatusServiceUnavailable)
	})
	e.relayHS.CloseClientConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e.relay.Close(ctx)
	return e.relayDB.Close()
}

// StartRelay restarts a relay stopped by StopRelay on the same data.
func (e *Env) StartRelay() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.startRelay()
}

// Close stops everything and removes the data.
func (e *Env) Close() {
	if e.relayHS != nil {
		e.relayHS.CloseClientConnections()
		e.relayHS.Close()
	}
	if e.relay != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		e.relay.Close(ctx)
		cancel()
		e.relayDB.Close()
	}
	if e.ksHS != nil {
		e.ksHS.Close()
	}
	os.RemoveAll(e.dir)
}

// OneTimePreKeys reports how many one-time EC prekeys the key server holds
// for a device.
func (e *Env) OneTimePreKeys(addr crypto.Address) int { return e.ks.count(addr) }

// DrainPreKeys makes the key server forget every one-time prekey (EC and
// KEM) of a device, as if other clients had claimed them all.
func (e *Env) DrainPreKeys(addr crypto.Address) {
	e.ks.mu.Lock()
	defer e.ks.mu.Unlock()
	if d := e.ks.keys[addr]; d != nil {
		d.otk, d.kem = nil, nil
	}
}

// tokenAuth authenticates relay connections with the key server's device
// tokens.
type tokenAuth struct{ v *token.Verifier }

func (a tokenAuth) Authenticate(ctx context.Context, bearer string) (rstore.QueueID, error) {
	c, err := a.v.Verify(ctx, bearer, time.Now())
	if err != nil {
		return rstore.QueueID{}, err
	}
	return rstore.QueueID{Account: c.Account, Device: c.Device}, nil
}
