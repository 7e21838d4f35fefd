package token

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// JWKS is the JSON Web Key Set document (RFC 7517) holding OKP/Ed25519 keys
// (RFC 8037).
type JWKS struct {
	Keys []JWK `json:"keys"`
}

// JWK is one public key of a JWKS.
type JWK struct {
	Kty string `json:"kty"`           // "OKP"
	Crv string `json:"crv"`           // "Ed25519"
	X   string `json:"x"`             // unpadded base64url of the public key
	Kid string `json:"kid"`           // see KeyIDOf
	Use string `json:"use,omitempty"` // "sig"
	Alg string `json:"alg,omitempty"` // "EdDSA"
}

// NewJWKS returns the JWKS publishing keys under their derived key IDs.
func NewJWKS(keys ...ed25519.PublicKey) JWKS {
	s := JWKS{Keys: make([]JWK, 0, len(keys))}
	for _, k := range keys {
		s.Keys = append(s.Keys, JWK{
			Kty: "OKP",
			Crv: "Ed25519",
			X:   base64.RawURLEncoding.EncodeToString(k),
			Kid: KeyIDOf(k),
			Use: "sig",
			Alg: "EdDSA",
		})
	}
	return s
}

// maxJWKSSize bounds a fetched JWKS document.
const maxJWKSSize = 1 << 20

// ParseJWKS decodes a JWKS document and returns its Ed25519 signing keys by
// key ID. Keys of other types, curves, uses or algorithms are ignored; a
// malformed document, a malformed Ed25519 key or a duplicate key ID is an
// error.
func ParseJWKS(doc []byte) (StaticKeys, error) {
	var s JWKS
	if err := json.Unmarshal(doc, &s); err != nil {
		return nil, fmt.Errorf("token: parse JWKS: %w", err)
	}
	keys := make(StaticKeys, len(s.Keys))
	for _, k := range s.Keys {
		if k.Kty != "OKP" || k.Crv != "Ed25519" || (k.Use != "" && k.Use != "sig") || (k.Alg != "" && k.Alg != "EdDSA") {
			continue
		}
		x, err := base64.RawURLEncoding.Strict().DecodeString(k.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("token: parse JWKS: key %q: bad x", k.Kid)
		}
		if k.Kid == "" {
			return nil, errors.New("token: parse JWKS: key without kid")
		}
		if _, dup := keys[k.Kid]; dup {
			return nil, fmt.Errorf("token: parse JWKS: duplicate kid %q", k.Kid)
		}
		keys[k.Kid] = ed25519.PublicKey(x)
	}
	return keys, nil
}

// RemoteKeys is a KeySource that fetches a JWKS URL and caches it. An
// unknown key ID triggers a refetch, at most once per MinInterval, so that
// keys added by a rotation are picked up while a flood of tokens with made-up
// key IDs cannot turn into a flood of requests. The cache is also refreshed
// when older than MaxAge so that retired keys stop verifying.
type RemoteKeys struct {
	url    string
	client *http.Client

	// MinInterval is the least time between two fetches (default 1 minute).
	// Set it before first use.
	MinInterval time.Duration
	// MaxAge is the longest a fetched set is used (default 1 hour). Set it
	// before first use.
	MaxAge time.Duration

	fetchMu sync.Mutex // serialises fetches; held across the HTTP request
	mu      struct {
		sync.Mutex
		keys    StaticKeys
		fetched time.Time // when keys were fetched (zero: never)
		tried   time.Time // when a fetch was last attempted
	}
}

// NewRemoteKeys returns a RemoteKeys fetching url with client (nil means
// http.DefaultClient; give one with a timeout in production).
func NewRemoteKeys(url string, client *http.Client) *RemoteKeys {
	if client == nil {
		client = http.DefaultClient
	}
	return &RemoteKeys{url: url, client: client, MinInterval: time.Minute, MaxAge: time.Hour}
}

// lookup returns the key if cached and fresh, and whether a fetch is
// allowed now.
func (r *RemoteKeys) lookup(kid string, now time.Time) (pub ed25519.PublicKey, found, stale, mayFetch bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pub, found = r.mu.keys[kid]
	stale = r.mu.fetched.IsZero() || now.Sub(r.mu.fetched) > r.MaxAge
	mayFetch = r.mu.tried.IsZero() || now.Sub(r.mu.tried) >= r.MinInterval
	return pub, found, stale, mayFetch
}

// Key implements KeySource.
func (r *RemoteKeys) Key(ctx context.Context, kid string) (ed25519.PublicKey, error) {
	pub, found, stale, mayFetch := r.lookup(kid, time.Now())
	if found && !stale {
		return pub, nil
	}
	if !mayFetch {
		if stale {
			return nil, fmt.Errorf("token: JWKS at %s unavailable", r.url)
		}
		return nil, fmt.Errorf("%w %q", ErrUnknownKey, kid)
	}
	r.fetchMu.Lock()
	defer r.fetchMu.Unlock()
	// Another caller may have fetched while this one waited.
	pub, found, stale, mayFetch = r.lookup(kid, time.Now())
	if found && !stale {
		return pub, nil
	}
	if mayFetch {
		if err := r.fetch(ctx); err != nil {
			return nil, err
		}
		pub, found, _, _ = r.lookup(kid, time.Now())
		if found {
			return pub, nil
		}
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownKey, kid)
}

func (r *RemoteKeys) fetch(ctx context.Context) error {
	r.mu.Lock()
	r.mu.tried = time.Now()
	r.mu.Unlock()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url, nil)
	if err != nil {
		return fmt.Errorf("token: fetch JWKS: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return fmt.Errorf("token: fetch JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("token: fetch JWKS: status %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSSize+1))
	if err != nil {
		return fmt.Errorf("token: fetch JWKS: %w", err)
	}
	if len(body) > maxJWKSSize {
		return errors.New("token: fetch JWKS: document too large")
	}
	keys, err := ParseJWKS(body)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.mu.keys = keys
	r.mu.fetched = time.Now()
	r.mu.Unlock()
	return nil
}
