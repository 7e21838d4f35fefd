// Package testenv starts, in the calling process, the servers a Sotto
// client talks to — the key server (package keyserver) and the relay
// (relay/server behind relay/relayhttp), each on a real Pebble directory
// behind real HTTP and WebSocket on 127.0.0.1 — wired as sottod wires them,
// for the client's tests, examples and benchmarks. It is for tests only.
package testenv

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/internal/token"
	"github.com/sotto-im/sotto/keyserver"
	ksstore "github.com/sotto-im/sotto/keyserver/store"
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
	ksDB    *ksstore.DB
	ks      *keyserver.Server
	relayDB *pebblestore.DB
	relay   *server.Server
	relayHS *httptest.Server
	ksHS    *httptest.Server
	tokKey  ed25519.PublicKey
	// relayH is what relayHS serves: swapped by StopRelay and StartRelay
	// while requests are arriving, so it is atomic (the server's own
	// Config.Handler is read without a lock).
	relayH atomic.Pointer[http.Handler]

	mu sync.Mutex
}

// serveRelay serves a request with the current relay handler.
func (e *Env) serveRelay(w http.ResponseWriter, r *http.Request) { (*e.relayH.Load()).ServeHTTP(w, r) }

func (e *Env) setRelayHandler(h http.Handler) { e.relayH.Store(&h) }

// New starts the servers, with the relay's Pebble data in a new temporary
// directory (removed by Close). The key server's rate limits are lifted:
// tests run many clients from one address.
func New() (*Env, error) {
	generous := keyserver.Rate{Limit: 1e6, Burst: 1e6}
	return NewWithLimits(keyserver.Limits{IP: generous, Account: generous, Unauthenticated: generous, HandleLookup: generous})
}

// NewWithLimits is New with the key server's rate limits set to limits
// (zero fields: the production defaults).
func NewWithLimits(limits keyserver.Limits) (*Env, error) {
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
	tokPub, tokKey, _ := ed25519.GenerateKey(rand.Reader)
	e.tokKey = tokPub
	if e.ksDB, err = ksstore.Open(dir+"/keyserver", ksstore.Options{CacheSize: 8 << 20}); err != nil {
		return nil, err
	}
	e.ks, err = keyserver.New(keyserver.Config{Issuer: issuer, Audience: audience, TokenKey: tokKey, CertificateSigner: signer,
		Limits: limits}, e.ksDB, nil, nil)
	if err != nil {
		e.ksDB.Close()
		return nil, err
	}
	e.ksHS = httptest.NewServer(e.ks.Handler())
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
	verifier := token.NewVerifier(token.KeysOf(e.tokKey), issuer, audience)
	blobs, err := newFileBlobs(e.dir + "/blobs")
	if err != nil {
		db.Close()
		return err
	}
	rs, err := server.New(server.Config{}, db, db, blobs, directory{e.ks}, tokenAuth{verifier},
		slog.New(slog.DiscardHandler), nil)
	if err != nil {
		db.Close()
		return err
	}
	e.relayDB, e.relay = db, rs
	e.setRelayHandler(relayhttp.Handler(rs))
	if e.relayHS == nil {
		e.relayHS = httptest.NewServer(http.HandlerFunc(e.serveRelay))
		e.RelayURL = e.relayHS.URL
	}
	return nil
}

// StopRelay stops the relay (its connections drop, and sends fail with 503)
// until StartRelay; its stored queues survive.
func (e *Env) StopRelay() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.setRelayHandler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, `{"error":{"code":"unavailable","message":"relay stopped"}}`, http.StatusServiceUnavailable)
	}))
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
	if e.ksDB != nil {
		e.ksDB.Close()
	}
	os.RemoveAll(e.dir)
}

// OneTimePreKeys reports how many one-time EC prekeys the key server holds
// for a device.
func (e *Env) OneTimePreKeys(addr crypto.Address) int {
	c, err := e.ksDB.Counts(context.Background(), addr)
	if err != nil {
		return -1
	}
	return c.OneTimeEC
}

// DrainPreKeys claims every one-time prekey (EC and KEM) of a device, as if
// other clients had started sessions with it.
func (e *Env) DrainPreKeys(addr crypto.Address) error {
	ctx := context.Background()
	for {
		c, err := e.ksDB.Counts(ctx, addr)
		if err != nil {
			return err
		}
		if c.OneTimeEC == 0 && c.OneTimeKEM == 0 {
			return nil
		}
		if _, _, err := e.ksDB.ClaimBundles(ctx, addr.Account, []crypto.DeviceID{addr.Device}); err != nil {
			return err
		}
	}
}

const issuer, audience = "sotto-test", "sotto"

// directory adapts the key server to the relay's Directory.
type directory struct{ ks *keyserver.Server }

func (d directory) Devices(ctx context.Context, a crypto.AccountID) ([]crypto.DeviceID, error) {
	ids, err := d.ks.DeviceIDs(ctx, a)
	if errors.Is(err, keyserver.ErrUnknownAccount) {
		return nil, server.ErrUnknownAccount
	}
	return ids, err
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
