package keyserver

import (
	"context"
	"crypto/rand"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/internal/token"
	"github.com/sotto-im/sotto/keyserver/store"
)

// Login protocol (API.md "Authentication"):
//
//	client                                   key server
//	POST /v1/auth/challenge            →     32 random bytes, kept for ChallengeLifetime
//	sig = SignLoginChallenge(challenge)
//	POST /v1/auth/login {account, device, challenge, sig}
//	                                   →     challenge removed (single use, whatever the outcome),
//	                                         device looked up in the stored device list,
//	                                         signature verified with its identity key,
//	                                         JWT issued (EdDSA, iss, aud, exp, jti)

// challengeSize is the length of a login challenge.
const challengeSize = 32

// challenges holds outstanding login challenges in memory: they live a
// minute, so losing them on restart costs a retry.
type challenges struct {
	mu sync.Mutex
	m  map[[challengeSize]byte]time.Time // challenge → expiry
}

func (c *challenges) issue(now time.Time) ([]byte, time.Time, bool) {
	var ch [challengeSize]byte
	rand.Read(ch[:])
	exp := now.Add(ChallengeLifetime)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= MaxChallenges {
		for k, e := range c.m {
			if !now.Before(e) {
				delete(c.m, k)
			}
		}
		if len(c.m) >= MaxChallenges {
			return nil, time.Time{}, false
		}
	}
	c.m[ch] = exp
	return ch[:], exp, true
}

// take removes the challenge and reports whether it was outstanding and
// unexpired.
func (c *challenges) take(ch []byte, now time.Time) bool {
	if len(ch) != challengeSize {
		return false
	}
	k := [challengeSize]byte(ch)
	c.mu.Lock()
	exp, ok := c.m[k]
	delete(c.m, k)
	c.mu.Unlock()
	return ok && now.Before(exp)
}

// tokenCache remembers tokens whose signature verified, so that the
// Ed25519 verification (the largest cost of an authenticated request) is
// paid once per token rather than per request. It is keyed by the whole
// token, holds at most maxCachedTokens, and an entry is used only before
// the token's expiry; revocation (device removed, account deleted) is
// checked on every request, cached or not.
type tokenCache struct {
	mu sync.Mutex
	m  map[string]token.Claims
}

// maxCachedTokens bounds the token cache (about 300 bytes an entry).
const maxCachedTokens = 50_000

func (c *tokenCache) get(tok string, now time.Time) (token.Claims, bool) {
	c.mu.Lock()
	cl, ok := c.m[tok]
	c.mu.Unlock()
	if !ok || !now.Before(cl.Expires) {
		return token.Claims{}, false
	}
	return cl, true
}

func (c *tokenCache) put(tok string, cl token.Claims) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= maxCachedTokens {
		// Drop an arbitrary quarter: simple, bounded, and a dropped token
		// is only verified again.
		n := maxCachedTokens / 4
		for k := range c.m {
			delete(c.m, k)
			if n--; n == 0 {
				break
			}
		}
	}
	c.m[tok] = cl
}

// revocations remembers when devices were removed (and accounts deleted),
// so that a token issued to a removed device stays refused even if its
// device ID is later given to a new device of the same account. Entries
// are needed only while such tokens can live, so they are dropped after
// token.MaxLifetime plus the leeway; they are kept in memory, so a restart
// forgets them (device IDs are not meant to be reused: the primary assigns
// increasing IDs, and this only closes the gap when one is).
type revocations struct {
	mu sync.Mutex
	m  map[crypto.Address]time.Time
}

func (r *revocations) revoke(addr crypto.Address, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for a, t := range r.m {
		if now.Sub(t) > token.MaxLifetime+token.Leeway {
			delete(r.m, a)
		}
	}
	r.m[addr] = now
}

// revoked reports whether a token issued at issued for addr predates the
// device's removal.
func (r *revocations) revoked(addr crypto.Address, issued time.Time) bool {
	r.mu.Lock()
	t, ok := r.m[addr]
	r.mu.Unlock()
	// Token times have second precision: a token of the removal's second
	// counts as issued before it.
	return ok && !issued.After(t.Truncate(time.Second))
}

type ctxKey int

const (
	ctxAuth ctxKey = iota
)

// authInfo is what the auth middleware established about a request.
type authInfo struct {
	Claims  token.Claims
	Account *store.Account // as stored when the request was authenticated
	Device  store.Device
}

func authFrom(ctx context.Context) *authInfo {
	a, _ := ctx.Value(ctxAuth).(*authInfo)
	return a
}

// authenticate verifies the bearer token and that its device is still in
// the account's device list, then applies the per-account rate limit.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := s.cfg.Now()
		h := r.Header.Get("Authorization")
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok || tok == "" || len(tok) > MaxTokenLength {
			s.metrics.authFailures.WithLabelValues("missing").Inc()
			writeError(w, errUnauthorized)
			return
		}
		cl, ok := s.tokens.get(tok, now)
		if !ok {
			var err error
			cl, err = s.verifier.Verify(r.Context(), tok, now)
			if err != nil {
				s.metrics.authFailures.WithLabelValues("token").Inc()
				writeError(w, errUnauthorized)
				return
			}
			s.tokens.put(tok, cl)
		}
		acct, err := s.store.Account(r.Context(), cl.Account)
		if errors.Is(err, store.ErrNotFound) {
			s.metrics.authFailures.WithLabelValues("account_gone").Inc()
			writeError(w, errUnauthorized)
			return
		} else if err != nil {
			s.internal(w, r, "auth: load account", err)
			return
		}
		dev, ok := acct.Device(cl.Device)
		if !ok || s.revoked.revoked(crypto.Address{Account: cl.Account, Device: cl.Device}, cl.IssuedAt) {
			s.metrics.authFailures.WithLabelValues("device_removed").Inc()
			writeError(w, errUnauthorized)
			return
		}
		if e := s.limits.account.check(cl.Account.String(), now); e != nil {
			writeError(w, e)
			return
		}
		ctx := context.WithValue(r.Context(), ctxAuth, &authInfo{Claims: cl, Account: acct, Device: dev})
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// sameAccount refuses requests whose {account} path parameter is not the
// authenticated account.
func (s *Server) sameAccount(w http.ResponseWriter, r *http.Request, id crypto.AccountID) bool {
	if authFrom(r.Context()).Claims.Account != id {
		writeError(w, errForbidden)
		return false
	}
	return true
}

type challengeResponse struct {
	Challenge []byte    `json:"challenge"`
	ExpiresAt time.Time `json:"expires_at"`
}

// handleChallenge issues a login challenge.
func (s *Server) handleChallenge(w http.ResponseWriter, r *http.Request) {
	ch, exp, ok := s.challenges.issue(s.cfg.Now())
	if !ok {
		writeError(w, errBusy)
		return
	}
	writeJSON(w, http.StatusOK, challengeResponse{Challenge: ch, ExpiresAt: exp})
}

type loginRequest struct {
	Account   string          `json:"account"`
	Device    crypto.DeviceID `json:"device"`
	Challenge []byte          `json:"challenge"`
	Signature []byte          `json:"signature"`
}

type loginResponse struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// parseLogin decodes and checks the shape of a login request.
func parseLogin(r *http.Request) (crypto.Address, *loginRequest, *apiError) {
	var req loginRequest
	if e := decodeBody(r, &req); e != nil {
		return crypto.Address{}, nil, e
	}
	id, err := crypto.ParseAccountID(req.Account)
	if err != nil {
		return crypto.Address{}, nil, errInvalidAccountID
	}
	if req.Device == 0 {
		return crypto.Address{}, nil, errInvalidDeviceID
	}
	if len(req.Challenge) != challengeSize || len(req.Signature) != crypto.SignatureSize {
		return crypto.Address{}, nil, errInvalidRequest
	}
	return crypto.Address{Account: id, Device: req.Device}, &req, nil
}

// handleLogin answers a signed challenge with a token.
func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	addr, req, e := parseLogin(r)
	if e != nil {
		writeError(w, e)
		return
	}
	now := s.cfg.Now()
	// The challenge is spent by this attempt whatever its outcome.
	if !s.challenges.take(req.Challenge, now) {
		s.metrics.authFailures.WithLabelValues("challenge").Inc()
		writeError(w, errUnauthorized)
		return
	}
	acct, err := s.store.Account(r.Context(), addr.Account)
	if errors.Is(err, store.ErrNotFound) {
		s.metrics.authFailures.WithLabelValues("login_unknown").Inc()
		writeError(w, errUnauthorized)
		return
	} else if err != nil {
		s.internal(w, r, "login: load account", err)
		return
	}
	dev, ok := acct.Device(addr.Device)
	if !ok {
		s.metrics.authFailures.WithLabelValues("login_unknown").Inc()
		writeError(w, errUnauthorized)
		return
	}
	ik, err := crypto.NewIdentityKey(dev.Identity[:])
	if err != nil || ik.VerifyLoginChallenge(req.Challenge, req.Signature) != nil {
		s.metrics.authFailures.WithLabelValues("login_signature").Inc()
		writeError(w, errUnauthorized)
		return
	}
	tok, cl, err := s.signer.Issue(addr.Account, addr.Device, now, s.cfg.TokenLifetime)
	if err != nil {
		s.internal(w, r, "login: issue token", err)
		return
	}
	writeJSON(w, http.StatusOK, loginResponse{Token: tok, ExpiresAt: cl.Expires})
}
