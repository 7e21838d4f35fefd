package main

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/internal/token"
	"github.com/sotto-im/sotto/keyserver"
	ksstore "github.com/sotto-im/sotto/keyserver/store"
	"github.com/sotto-im/sotto/relay/relayhttp"
	"github.com/sotto-im/sotto/relay/server"
	"github.com/sotto-im/sotto/relay/store"
	"github.com/sotto-im/sotto/relay/store/blobstore"
	"github.com/sotto-im/sotto/relay/store/pebblestore"
	"github.com/sotto-im/sotto/relay/store/recovering"
)

// Data directory layout (OPERATIONS.md repeats it):
//
//	<data>/keys/       server secrets, mode 0600
//	<data>/keyserver/  the key server's Pebble database
//	<data>/relay/      the relay's Pebble database (queues, device records)
//	<data>/blobs/      attachment blobs, one file each
//	<data>/admin.sock  the admin socket `sottod backup` talks to
const (
	keysDir      = "keys"
	keyserverDir = "keyserver"
	relayDir     = "relay"
	blobsDir     = "blobs"
)

// tokenAudience is the aud of device tokens: the relay and the key server
// of one deployment accept the same tokens.
const tokenAudience = "sotto"

// services is what one sottod process runs.
type services struct {
	handler  http.Handler
	ready    func(ctx context.Context) error
	targets  []backupTarget
	closers  []func(ctx context.Context) error // in order
	trust    crypto.TrustRoot
	hasTrust bool
	// sockets are the relay's WebSockets, closed when its store reopens.
	sockets *socketSet
	// relayStore is the relay's store (nil without a relay), for tests.
	relayStore *recovering.DB
}

// buildOptions are what tests change in buildServices; the zero value is
// what sottod runs with.
type buildOptions struct {
	relayFS         vfs.FS        // the relay store's filesystem (nil: the OS's)
	recoveryBackoff time.Duration // first wait before reopening a failed relay store
}

func (s *services) close(ctx context.Context) error {
	var errs []error
	for _, c := range s.closers {
		errs = append(errs, c(ctx))
	}
	return errors.Join(errs...)
}

// serve runs sottod until ctx ends.
func serve(ctx context.Context, cfg *config, getenv func(string) string, logger *slog.Logger, stdout io.Writer) error {
	keys, err := loadOrCreateKeys(cfg.dataPath(keysDir), getenv("SOTTO_INTERNAL_KEY"))
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	svc, err := buildServices(cfg, keys, logger, reg, buildOptions{})
	if err != nil {
		return err
	}
	svc.targets = append(svc.targets, backupTarget{name: keysDir, dir: cfg.dataPath(keysDir)})

	stopAdmin, err := serveAdmin(ctx, cfg.DataDir, svc.targets, logger)
	if err != nil {
		svc.close(context.Background())
		return err
	}
	defer stopAdmin()

	mux := http.NewServeMux()
	ops := opsHandler(svc, reg)
	if cfg.AdminListen == "" {
		mux.Handle("/healthz", ops)
		mux.Handle("/readyz", ops)
		mux.Handle("/metrics", ops)
	}
	mux.Handle("/", svc.handler)
	handler := http.Handler(mux)
	if len(cfg.TrustedProxies) > 0 {
		handler = trustProxies(cfg.TrustedProxies, handler)
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		svc.close(context.Background())
		return usagef("cannot listen on %s: %v", cfg.Listen, err)
	}
	srv := &http.Server{
		Handler:           handler,
		ConnContext:       withConn,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
	tlsOn := cfg.TLSCert != ""
	if tlsOn {
		reloader, err := newCertReloader(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			ln.Close()
			svc.close(context.Background())
			return err
		}
		go reloader.watchSIGHUP(ctx, logger)
		// HTTP/2 is negotiated by ALPN when TLS is on.
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: reloader.getCertificate, NextProtos: []string{"h2", "http/1.1"}}
	}

	var adminErr chan error
	if cfg.AdminListen != "" {
		aln, err := net.Listen("tcp", cfg.AdminListen)
		if err != nil {
			ln.Close()
			svc.close(context.Background())
			return usagef("cannot listen on %s: %v", cfg.AdminListen, err)
		}
		adminErr = make(chan error, 1)
		admin := &http.Server{Handler: ops, ReadHeaderTimeout: 10 * time.Second}
		go func() { adminErr <- listenAndServe(ctx, admin, aln, false, cfg.ShutdownTimeout) }()
	}

	url := cfg.PublicURL
	if strings.HasSuffix(cfg.Listen, ":0") { // tests ask for a free port
		scheme := "http"
		if tlsOn {
			scheme = "https"
		}
		url = scheme + "://" + ln.Addr().String()
	}
	fmt.Fprintf(stdout, "sottod %s serving %s at %s\n", version, cfg.Mode, url)
	if svc.hasTrust {
		fmt.Fprintf(stdout, "sender-certificate trust root: %s\n", svc.trust)
		fmt.Fprintf(stdout, "trust root fingerprint: %s\n", svc.trust.Fingerprint())
	}
	logger.Info("serving", "mode", cfg.Mode, "addr", ln.Addr().String(), "tls", tlsOn, "data", cfg.DataDir)

	serveErr := listenAndServe(ctx, srv, ln, tlsOn, cfg.ShutdownTimeout)
	if errors.Is(serveErr, http.ErrServerClosed) {
		serveErr = nil
	}
	logger.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	closeErr := svc.close(sctx)
	if adminErr != nil {
		if err := <-adminErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
			closeErr = errors.Join(closeErr, err)
		}
	}
	return errors.Join(serveErr, closeErr)
}

// opsHandler serves /healthz (the process is alive), /readyz (storage is
// open and writable) and /metrics.
func opsHandler(svc *services, reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "text/plain")
		if err := svc.ready(ctx); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "not ready\n")
			return
		}
		io.WriteString(w, "ready\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}

// buildServices opens the stores and builds the relay and/or key server of
// cfg.Mode.
func buildServices(cfg *config, keys *serverKeys, logger *slog.Logger, reg *prometheus.Registry, opts buildOptions) (*services, error) {
	if opts.recoveryBackoff <= 0 {
		opts.recoveryBackoff = recovering.DefaultMinBackoff
	}
	svc := &services{sockets: newSocketSet()}
	ok := false
	defer func() {
		if !ok {
			svc.close(context.Background())
		}
	}()
	var readies []func(ctx context.Context) error
	var ks *keyserver.Server
	var relay *server.Server
	purger := &relayPurger{}

	if cfg.Mode == "all" || cfg.Mode == "keyserver" {
		// The key server's store also reopens itself after a storage
		// failure (keyserver/store, recover.go).
		db, err := ksstore.Open(cfg.dataPath(keyserverDir), ksstore.Options{Logger: logger.With("component", "keyserver-store"),
			RecoveryBackoff: opts.recoveryBackoff})
		if err != nil {
			return nil, err
		}
		svc.closers = append(svc.closers, func(context.Context) error { return db.Close() })
		svc.targets = append(svc.targets, backupTarget{name: keyserverDir, db: asCheckpointer(db)})
		kcfg := keyserver.Config{
			Issuer:            cfg.PublicURL,
			Audience:          tokenAudience,
			TokenKey:          keys.token,
			CertificateSigner: keys.certSigner,
		}
		if keys.previousToken != nil {
			kcfg.PreviousTokenKeys = append(kcfg.PreviousTokenKeys, keys.previousToken.Public().(ed25519.PublicKey))
		}
		if cfg.Mode == "keyserver" {
			kcfg.Purger = newRemotePurger(cfg.RelayURL, keys.internal)
		} else {
			kcfg.Purger = purger // the relay is built below
		}
		ks, err = keyserver.New(kcfg, db, logger.With("component", "keyserver"), reg)
		if err != nil {
			return nil, err
		}
		svc.trust, svc.hasTrust = ks.TrustRoot(), true
		readies = append(readies, func(ctx context.Context) error {
			// After a failed write the store refuses writes until it has
			// reopened itself: not ready meanwhile.
			if err := db.Failed(); err != nil {
				return err
			}
			if _, err := db.Account(ctx, crypto.AccountID{}); err != nil && !errors.Is(err, ksstore.ErrNotFound) {
				return err
			}
			return nil
		})
	}

	if cfg.Mode == "all" || cfg.Mode == "relay" {
		// The relay store reopens itself after a storage failure (a full
		// disk, an I/O error) once the disk takes a synced write again;
		// the relay's WebSockets are closed then, so that devices
		// reconnect to the reopened store (see relay/store/recovering).
		relayPath := cfg.dataPath(relayDir)
		storeReg := recovering.Reregisterer(reg)
		db, err := recovering.Open(recovering.Options{
			Dir: relayPath,
			FS:  opts.relayFS,
			Open: func() (recovering.Store, error) {
				return pebblestore.Open(relayPath, pebblestore.Options{
					FS:               opts.relayFS,
					MaxQueueMessages: cfg.QueueMessages,
					MaxQueueBytes:    cfg.QueueBytes,
					DefaultRetention: cfg.Retention,
					Registerer:       storeReg,
					Logf: func(format string, args ...any) {
						logger.Error(fmt.Sprintf(format, args...), "component", "relay-store")
					},
				})
			},
			OnRecover: func() {
				n := svc.sockets.closeAll()
				logger.Info("relay store reopened; closed the relay's WebSockets", "component", "relay-store", "closed", n)
			},
			MinBackoff: opts.recoveryBackoff,
			MaxBackoff: 5 * opts.recoveryBackoff,
			Logger:     logger.With("component", "relay-store"),
			Registerer: reg,
		})
		if err != nil {
			return nil, err
		}
		svc.relayStore = db
		svc.closers = append(svc.closers, func(context.Context) error { return db.Close() })
		svc.targets = append(svc.targets, backupTarget{name: relayDir, db: asCheckpointer(db)})
		blobs, err := openBlobs(cfg)
		if err != nil {
			return nil, err
		}
		svc.closers = append(svc.closers, func(context.Context) error { return blobs.Close() })
		svc.targets = append(svc.targets, backupTarget{name: blobsDir, dir: cfg.dataPath(blobsDir)})

		var dir server.Directory
		var auth server.Authenticator
		if ks != nil {
			dir = localDirectory{ks}
			auth = &server.TokenAuthenticator{Verifier: token.NewVerifier(token.KeysOf(keys.tokenPublics()...), cfg.PublicURL, tokenAudience)}
		} else {
			rd, err := newRemoteDirectory(cfg.KeyServerURL, logger.With("component", "relay-directory"), reg)
			if err != nil {
				return nil, err
			}
			dir = rd
			auth = &server.TokenAuthenticator{Verifier: token.NewVerifier(token.NewRemoteKeys(strings.TrimSuffix(cfg.KeyServerURL, "/")+"/.well-known/jwks.json", http.DefaultClient), strings.TrimSuffix(cfg.KeyServerURL, "/"), tokenAudience)}
		}
		relay, err = server.New(server.Config{
			DefaultTTL: cfg.Retention,
			BlobTTL:    cfg.Retention,
			PushHosts:  cfg.PushAllowHosts,
		}, db, db, blobs, dir, auth, logger.With("component", "relay"), reg)
		if err != nil {
			return nil, err
		}
		// The relay closes before its stores: prepend.
		svc.closers = append([]func(context.Context) error{relay.Close}, svc.closers...)
		readies = append(readies, func(ctx context.Context) error {
			// After a failed WAL write the store refuses writes until it
			// has reopened itself: not ready meanwhile.
			if err := db.Failed(); err != nil {
				return err
			}
			_, _, err := db.Depth(ctx, store.QueueID{})
			return err
		})
		purger.relay = relay
	}

	svc.handler = route(ks, relay, keys.internal, svc.sockets)
	readies = append(readies, func(context.Context) error { return checkWritableDir(cfg.DataDir) })
	svc.ready = func(ctx context.Context) error {
		for _, r := range readies {
			if err := r(ctx); err != nil {
				return err
			}
		}
		return nil
	}
	ok = true
	return svc, nil
}

// route sends relay paths to the relay and everything else to the key
// server, so that both share one port without knowing of each other.
func route(ks *keyserver.Server, relay *server.Server, internalKey []byte, sockets *socketSet) http.Handler {
	var ksH, relayH http.Handler
	if ks != nil {
		ksH = ks.Handler()
	}
	var purgeH http.Handler
	if relay != nil {
		relayH = sockets.track(relayhttp.Handler(relay))
		purgeH = purgeHandler(relay, internalKey)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		switch {
		case relayH != nil && isRelayPath(p):
			relayH.ServeHTTP(w, r)
		case purgeH != nil && strings.HasPrefix(p, internalPurgePrefix):
			purgeH.ServeHTTP(w, r)
		case ksH != nil:
			ksH.ServeHTTP(w, r)
		default:
			writeJSONError(w, http.StatusNotFound, "not_found", "no such endpoint")
		}
	})
}

func isRelayPath(p string) bool {
	return strings.HasPrefix(p, "/v1/relay/") || p == "/v1/messages" || p == "/v1/blobs" || strings.HasPrefix(p, "/v1/blobs/")
}

func writeJSONError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, "{\"error\":{\"code\":%q,\"message\":%q}}\n", code, msg)
}

// localDirectory adapts the in-process key server to the relay's
// Directory.
type localDirectory struct{ ks *keyserver.Server }

func (d localDirectory) Devices(ctx context.Context, account crypto.AccountID) ([]crypto.DeviceID, error) {
	ids, err := d.ks.DeviceIDs(ctx, account)
	if errors.Is(err, keyserver.ErrUnknownAccount) {
		return nil, fmt.Errorf("%w", server.ErrUnknownAccount)
	}
	return ids, err
}

// relayPurger adapts the in-process relay to the key server's Purger. Its
// relay is set once built (the relay needs the key server first).
type relayPurger struct{ relay *server.Server }

func (p *relayPurger) PurgeAccount(ctx context.Context, account crypto.AccountID) error {
	return p.relay.PurgeAccount(ctx, account)
}

func (p *relayPurger) PurgeDevice(ctx context.Context, addr crypto.Address) error {
	return p.relay.PurgeDevice(ctx, store.QueueID{Account: addr.Account, Device: addr.Device})
}

func asCheckpointer(db any) checkpointer {
	if c, ok := db.(checkpointer); ok {
		return c
	}
	return nil
}

// openBlobs opens the relay's blob store in <data>/blobs.
func openBlobs(cfg *config) (*blobstore.Store, error) {
	return blobstore.Open(cfg.dataPath(blobsDir), blobstore.Options{MaxSize: cfg.MaxBlobSize})
}

// socketSet tracks the network connections of the relay's WebSockets, so
// that they can be closed when the relay store is swapped (the devices
// reconnect and fetch from the reopened store).
type socketSet struct {
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func newSocketSet() *socketSet { return &socketSet{conns: make(map[net.Conn]struct{})} }

type connKey struct{}

// withConn is the http.Server's ConnContext: it lets handlers find their
// connection.
func withConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// track records the connection of every WebSocket upgrade request next
// serves, for as long as next serves it.
func (s *socketSet) track(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, ok := r.Context().Value(connKey{}).(net.Conn)
		if !ok || !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			next.ServeHTTP(w, r)
			return
		}
		if tc, ok := c.(*tls.Conn); ok {
			// Close the TCP connection itself: closing the TLS one first
			// writes an alert, which can wait up to 5 s on a device that
			// stopped reading.
			c = tc.NetConn()
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
		next.ServeHTTP(w, r)
	})
}

// closeAll closes every tracked connection and returns how many.
func (s *socketSet) closeAll() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.Close()
	}
	return len(s.conns)
}
