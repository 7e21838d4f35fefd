package keyserver

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/internal/token"
	"github.com/sotto-im/sotto/keyserver/store"
)

// ErrUnknownAccount is returned by [Server.DeviceIDs] for an account that
// is not registered (or was deleted).
var ErrUnknownAccount = errors.New("keyserver: unknown account")

// Server is the key server. Its methods are safe for concurrent use.
type Server struct {
	cfg      Config
	store    Store
	log      *slog.Logger
	metrics  *metrics
	signer   *token.Signer
	verifier *token.Verifier
	jwks     token.JWKS

	challenges   challenges
	provisioning provisioning
	tokens       tokenCache
	revoked      revocations
	limits       struct {
		ip, account, unauth, handleIP, handleAccount *limiter
	}
}

// New returns a server over st. logger receives structured logs (nil
// discards them); reg receives the metrics (nil registers nothing).
func New(cfg Config, st Store, logger *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if st == nil {
		return nil, errors.New("keyserver: nil store")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("keyserver: metrics: %w", err)
	}
	pubs := append([]ed25519.PublicKey{cfg.TokenKey.Public().(ed25519.PublicKey)}, cfg.PreviousTokenKeys...)
	s := &Server{
		cfg:      cfg,
		store:    st,
		log:      logger,
		metrics:  m,
		signer:   token.NewSigner(cfg.TokenKey, cfg.Issuer, cfg.Audience),
		verifier: token.NewVerifier(token.KeysOf(pubs...), cfg.Issuer, cfg.Audience),
		jwks:     token.NewJWKS(pubs...),
	}
	s.challenges.m = make(map[[challengeSize]byte]time.Time)
	s.provisioning.m = make(map[string]*provisioningSlot)
	s.tokens.m = make(map[string]token.Claims)
	s.revoked.m = make(map[crypto.Address]time.Time)
	hit := func(name string) { m.rateLimited.WithLabelValues(name).Inc() }
	l := cfg.Limits
	s.limits.ip = newLimiter("ip", l.IP, l.MaxTrackedKeys, hit)
	s.limits.account = newLimiter("account", l.Account, l.MaxTrackedKeys, hit)
	s.limits.unauth = newLimiter("unauthenticated", l.Unauthenticated, l.MaxTrackedKeys, hit)
	s.limits.handleIP = newLimiter("handle_ip", l.HandleLookup, l.MaxTrackedKeys, hit)
	s.limits.handleAccount = newLimiter("handle_account", l.HandleLookup, l.MaxTrackedKeys, hit)
	return s, nil
}

// TrustRoot returns the sender-certificate trust root clients pin.
func (s *Server) TrustRoot() crypto.TrustRoot { return s.cfg.CertificateSigner.TrustRoot() }

// DeviceIDs returns the devices of the account's current device list, or
// ErrUnknownAccount. The relay uses it to fan messages out and to refuse
// messages for devices that do not exist.
func (s *Server) DeviceIDs(ctx context.Context, id crypto.AccountID) ([]crypto.DeviceID, error) {
	a, err := s.store.Account(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrUnknownAccount
	}
	if err != nil {
		return nil, fmt.Errorf("keyserver: device IDs: %w", err)
	}
	ids := make([]crypto.DeviceID, len(a.Devices))
	for i, d := range a.Devices {
		ids[i] = d.ID
	}
	return ids, nil
}

// Handler returns the HTTP handler serving the API of API.md.
func (s *Server) Handler() http.Handler {
	r := chi.NewRouter()
	r.Use(middleware.RequestID)
	r.Use(s.observe)
	r.Use(s.recoverer)
	r.Use(middleware.Timeout(RequestTimeout))
	r.Use(s.limitIP)
	// A hard cap for every route; routes that take small bodies lower it.
	r.Use(bodyLimit(MaxPreKeyBody))
	small := bodyLimit(MaxSmallBody)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) { writeError(w, errNotFound) })
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) { writeError(w, errMethodNotAllowed) })

	r.Get("/.well-known/jwks.json", s.handleJWKS) // GET /.well-known/jwks.json - token verification keys (current and previous)

	r.Route("/v1", func(r chi.Router) {
		r.Get("/trust-root", s.handleTrustRoot) // GET /v1/trust-root - the sender-certificate trust root

		r.Route("/auth", func(r chi.Router) {
			r.Use(s.limitUnauthenticated, small)
			r.Post("/challenge", s.handleChallenge) // POST /v1/auth/challenge - a single-use login challenge
			r.Post("/login", s.handleLogin)         // POST /v1/auth/login - signed challenge → token
		})

		r.Route("/accounts", func(r chi.Router) {
			r.With(s.limitUnauthenticated).
				Post("/", s.handleRegister) // POST /v1/accounts - register an account with its first device
			r.Route("/{account}", func(r chi.Router) {
				r.Use(small)
				r.Get("/devicelist", s.handleGetDeviceList) // GET /v1/accounts/{account}/devicelist - the signed device list
				r.Get("/devices", s.handleDeviceIDs)        // GET /v1/accounts/{account}/devices - device IDs (for a relay)
				r.Group(func(r chi.Router) {
					r.Use(s.authenticate)
					r.Put("/devicelist", s.handlePutDeviceList) // PUT /v1/accounts/{account}/devicelist - publish a new device list
					r.Delete("/", s.handleDeleteAccount)        // DELETE /v1/accounts/{account} - erase the account everywhere
				})
			})
		})

		r.Route("/prekeys", func(r chi.Router) {
			r.Use(s.authenticate)
			r.Post("/", s.handleUploadPreKeys) // POST /v1/prekeys - upload signed, last-resort and one-time prekeys
			r.Get("/count", s.handleCounts)    // GET /v1/prekeys/count - one-time prekeys left
		})

		r.Route("/bundles", func(r chi.Router) {
			r.Use(small, s.authenticate)
			r.Post("/{account}", s.handleBundles)          // POST /v1/bundles/{account} - claim bundles of every device
			r.Post("/{account}/{device}", s.handleBundles) // POST /v1/bundles/{account}/{device} - claim one device's bundle
		})

		r.Route("/certificate", func(r chi.Router) {
			r.Use(small, s.authenticate)
			r.Get("/", s.handleCertificate)  // GET /v1/certificate - a sender certificate for the caller
			r.Post("/", s.handleCertificate) // POST /v1/certificate - same, for clients that prefer POST
		})

		r.Route("/provisioning", func(r chi.Router) {
			r.With(s.limitUnauthenticated, small).Post("/", s.handleNewProvisioning) // POST /v1/provisioning - a new provisioning address
			r.With(s.limitUnauthenticated, small).Get("/{address}", s.handleGetProvisioning)
			// GET /v1/provisioning/{address} - the new device fetches the message once
			r.With(s.authenticate, bodyLimit(MaxProvisioningBody)).Put("/{address}", s.handlePutProvisioning)
			// PUT /v1/provisioning/{address} - the primary posts the encrypted provisioning message
		})

		r.Route("/handle", func(r chi.Router) {
			r.Use(small, s.authenticate)
			r.Put("/", s.handleClaimHandle)      // PUT /v1/handle - claim a handle for the caller's account
			r.Delete("/", s.handleReleaseHandle) // DELETE /v1/handle - release it
		})
		r.With(small, s.authenticate, s.limitHandleLookup).
			Get("/handles/{handle}", s.handleLookupHandle) // GET /v1/handles/{handle} - exact lookup
	})
	return r
}

// clientIP is the peer address of the connection. Headers such as
// X-Forwarded-For are not trusted: a deployment behind a proxy must rewrite
// RemoteAddr before this handler (cmd/sottod documents how).
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func (s *Server) limitIP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if e := s.limits.ip.check(clientIP(r), s.cfg.Now()); e != nil {
			writeError(w, e)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) limitUnauthenticated(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if e := s.limits.unauth.check(clientIP(r), s.cfg.Now()); e != nil {
			writeError(w, e)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// limitHandleLookup applies the lookup limit by IP and by account (it runs
// after authenticate).
func (s *Server) limitHandleLookup(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := s.cfg.Now()
		if e := s.limits.handleIP.check(clientIP(r), now); e != nil {
			writeError(w, e)
			return
		}
		if e := s.limits.handleAccount.check(authFrom(r.Context()).Claims.Account.String(), now); e != nil {
			writeError(w, e)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// bodyLimit caps the request body; nested limits: the smallest applies.
func bodyLimit(n int64) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ContentLength > n {
				writeError(w, errBodyTooLarge)
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, n)
			next.ServeHTTP(w, r)
		})
	}
}

// statusWriter records the status for metrics and logs.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// observe counts and times requests by route pattern, and logs them at
// debug level without paths (which hold account IDs and handles).
func (s *Server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		route := "unmatched"
		if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
			route = rc.RoutePattern()
		}
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		d := time.Since(start)
		s.metrics.requests.WithLabelValues(route, statusText(sw.status)).Inc()
		s.metrics.duration.WithLabelValues(route).Observe(d.Seconds())
		if s.log.Enabled(r.Context(), slog.LevelDebug) {
			s.log.Debug("request", "id", middleware.GetReqID(r.Context()), "method", r.Method,
				"route", route, "status", sw.status, "duration", d)
		}
	})
}

func statusText(code int) string { return strconv.Itoa(code) }

// recoverer turns a panic into a logged 500 with a JSON body, so that a
// bug in one handler neither kills the server nor leaks its message.
func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("panic in handler", "id", middleware.GetReqID(r.Context()), "panic", fmt.Sprint(v))
				writeError(w, errInternal)
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// internal logs err and answers a generic 500, or 503 when the store is
// temporarily unable to write (a storage failure it recovers from by
// itself). err must not carry secrets; the store's errors do not.
func (s *Server) internal(w http.ResponseWriter, r *http.Request, what string, err error) {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		s.log.Warn("request timed out", "id", middleware.GetReqID(r.Context()), "op", what)
		writeError(w, errBusy)
		return
	}
	if errors.Is(err, store.ErrUnavailable) {
		s.log.Warn("store unavailable", "id", middleware.GetReqID(r.Context()), "op", what, "err", err)
		writeError(w, errUnavailable)
		return
	}
	s.log.Error("internal error", "id", middleware.GetReqID(r.Context()), "op", what, "err", err)
	writeError(w, errInternal)
}
