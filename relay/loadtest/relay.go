// Package loadtest drives simulated devices against a relay over real
// WebSockets on loopback and measures what the relay's performance targets
// ask for: durable end-to-end throughput, latency at a fixed rate, and
// memory per idle connection.
//
// A load run needs a relay whose tokens and directory it can satisfy
// without a key server. [StartRelay] builds one on a real Pebble directory
// from a [Fixture]: a seed from which the token key, the accounts and their
// delivery access keys are derived, so that a relay started in one process
// (cmd/sotto-load -serve) and the load generator in another agree on them.
package loadtest

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/internal/token"
	"github.com/sotto-im/sotto/relay/relayhttp"
	"github.com/sotto-im/sotto/relay/server"
	"github.com/sotto-im/sotto/relay/store/blobstore"
	"github.com/sotto-im/sotto/relay/store/pebblestore"
)

// Token issuer and audience of the load test's tokens.
const (
	issuer   = "sotto-load"
	audience = "sotto-relay"
)

// Fixture derives everything both sides of a load run must agree on from a
// seed. It is for load tests only: its keys are predictable.
type Fixture struct {
	Seed string
	// Accounts is how many accounts (one device each) exist.
	Accounts int
}

func (f Fixture) derive(label string, i int) [32]byte {
	h := sha256.New()
	h.Write([]byte("sotto-load/" + label + "/" + f.Seed))
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(i)))
	return [32]byte(h.Sum(nil))
}

// Account returns the i-th account's ID.
func (f Fixture) Account(i int) crypto.AccountID {
	k := f.derive("account", i)
	return crypto.AccountID(k[:crypto.AccountIDSize])
}

// AccessKey returns the i-th account's delivery access key.
func (f Fixture) AccessKey(i int) [32]byte { return f.derive("access-key", i) }

func (f Fixture) signingKey() ed25519.PrivateKey {
	k := f.derive("token-key", 0)
	return ed25519.NewKeyFromSeed(k[:])
}

// Token returns a device token for the i-th account's device 1.
func (f Fixture) Token(i int, now time.Time) (string, error) {
	tok, _, err := token.NewSigner(f.signingKey(), issuer, audience).Issue(f.Account(i), 1, now, token.MaxLifetime)
	return tok, err
}

// directory knows the fixture's accounts, each with device 1.
type directory map[crypto.AccountID]struct{}

func (d directory) Devices(_ context.Context, a crypto.AccountID) ([]crypto.DeviceID, error) {
	if _, ok := d[a]; !ok {
		return nil, server.ErrUnknownAccount
	}
	return []crypto.DeviceID{1}, nil
}

// Relay is a relay started for a load run.
type Relay struct {
	URL  string // http://127.0.0.1:port
	srv  *server.Server
	db   *pebblestore.DB
	http *http.Server
	ln   net.Listener
	done chan error
}

// StartRelay starts a relay on addr (e.g. "127.0.0.1:0") with its Pebble
// store in dir (durable: every accepted send is synced), knowing the
// fixture's accounts and their access keys. extra, if not nil, is mounted
// beside the relay's routes (the load tool's memory endpoint).
func StartRelay(dir, addr string, f Fixture, logger *slog.Logger, extra map[string]http.Handler) (*Relay, error) {
	db, err := pebblestore.Open(filepath.Join(dir, "queues"), pebblestore.Options{})
	if err != nil {
		return nil, err
	}
	blobs, err := blobstore.Open(filepath.Join(dir, "blobs"), blobstore.Options{})
	if err != nil {
		db.Close()
		return nil, err
	}
	dirx := make(directory, f.Accounts)
	for i := range f.Accounts {
		dirx[f.Account(i)] = struct{}{}
	}
	signer := token.NewSigner(f.signingKey(), issuer, audience)
	auth := server.TokenAuthenticator{Verifier: token.NewVerifier(token.KeysOf(signer.Public()), issuer, audience)}
	srv, err := server.New(server.Config{}, db, db, blobs, dirx, auth, logger, prometheus.NewRegistry())
	if err != nil {
		db.Close()
		return nil, err
	}
	ctx := context.Background()
	for i := range f.Accounts {
		if err := srv.SetAccessKey(ctx, f.Account(i), f.AccessKey(i)); err != nil {
			srv.Close(ctx)
			db.Close()
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		srv.Close(ctx)
		db.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/", relayhttp.Handler(srv))
	for p, h := range extra {
		mux.Handle(p, h)
	}
	r := &Relay{URL: "http://" + ln.Addr().String(), srv: srv, db: db, ln: ln, done: make(chan error, 1),
		http: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	go func() { r.done <- r.http.Serve(ln) }()
	return r, nil
}

// Close shuts the relay down and closes its store.
func (r *Relay) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := r.http.Shutdown(ctx)
	if e := <-r.done; !errors.Is(e, http.ErrServerClosed) && err == nil {
		err = e
	}
	if e := r.srv.Close(ctx); err == nil {
		err = e
	}
	if e := r.db.Close(); err == nil {
		err = e
	}
	if err != nil {
		return fmt.Errorf("loadtest: close relay: %w", err)
	}
	return nil
}
