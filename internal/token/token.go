// Package token issues and verifies Sotto's short-lived device tokens (JWT,
// EdDSA/Ed25519) and publishes their keys as a JWKS.
//
// The key server issues a token to a device once it has proved possession of
// its identity key; the relay, possibly in another process, verifies the
// token with the keys the key server publishes at its JWKS URL.
//
// A token's claims are iss, aud, sub, exp, nbf, iat and jti. The subject
// names the device as "<account ID text>.<device>" (the form of
// crypto.Address.String). Verification pins the algorithm to EdDSA, so a
// token signed with "none" or with an HMAC keyed by the public key is
// refused, and requires every time claim, checking that the token lives no
// longer than [MaxLifetime].
package token

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/sotto-im/sotto/crypto"
)

// MaxLifetime is the longest a token may live (exp - iat and exp - nbf).
// Issue caps longer lifetimes; Verify refuses tokens that claim one.
const MaxLifetime = time.Hour

// Leeway is the clock skew tolerated between the issuing key server and the
// verifying relay when checking exp, nbf and iat.
const Leeway = 30 * time.Second

// ErrInvalidToken is wrapped by every error of [Verifier.Verify].
var ErrInvalidToken = errors.New("token: invalid token")

// ErrUnknownKey is returned by a [KeySource] that has no key of the given
// ID; Verify wraps it (with ErrInvalidToken).
var ErrUnknownKey = errors.New("token: unknown key ID")

// Claims are the verified contents of a token.
type Claims struct {
	Account  crypto.AccountID
	Device   crypto.DeviceID
	ID       string // jti: random, unique per token
	IssuedAt time.Time
	Expires  time.Time
}

// KeyIDOf derives the key ID of an Ed25519 public key: the unpadded
// base64url encoding of the first 8 bytes of its SHA-256.
func KeyIDOf(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return base64.RawURLEncoding.EncodeToString(sum[:8])
}

// Signer signs tokens with one Ed25519 key. It is safe for concurrent use.
type Signer struct {
	key      ed25519.PrivateKey
	kid      string
	issuer   string
	audience string
}

// NewSigner returns a Signer issuing tokens from issuer for audience. Its
// KeyID is derived from the public key (see [KeyIDOf]). key must be a valid
// Ed25519 private key and stays secret.
func NewSigner(key ed25519.PrivateKey, issuer, audience string) *Signer {
	return &Signer{
		key:      key,
		kid:      KeyIDOf(key.Public().(ed25519.PublicKey)),
		issuer:   issuer,
		audience: audience,
	}
}

// KeyID returns the key ID placed in the "kid" header of every token.
func (s *Signer) KeyID() string { return s.kid }

// Public returns the verification key, to publish in a JWKS.
func (s *Signer) Public() ed25519.PublicKey { return s.key.Public().(ed25519.PublicKey) }

// Issue returns a signed token for the device, valid from now for ttl
// (capped at MaxLifetime), and its claims. Times are truncated to whole
// seconds, as JWT carries them, and in UTC.
func (s *Signer) Issue(account crypto.AccountID, device crypto.DeviceID, now time.Time, ttl time.Duration) (string, Claims, error) {
	if device == 0 {
		return "", Claims{}, errors.New("token: issue: device 0 is not a device")
	}
	if ttl <= 0 {
		return "", Claims{}, fmt.Errorf("token: issue: non-positive lifetime %v", ttl)
	}
	ttl = min(ttl, MaxLifetime)
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", Claims{}, fmt.Errorf("token: issue: %w", err)
	}
	iat := now.UTC().Truncate(time.Second)
	c := Claims{
		Account:  account,
		Device:   device,
		ID:       base64.RawURLEncoding.EncodeToString(jti[:]),
		IssuedAt: iat,
		Expires:  iat.Add(ttl),
	}
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.RegisteredClaims{
		Issuer:    s.issuer,
		Subject:   subject(account, device),
		Audience:  jwt.ClaimStrings{s.audience},
		ExpiresAt: jwt.NewNumericDate(c.Expires),
		NotBefore: jwt.NewNumericDate(iat),
		IssuedAt:  jwt.NewNumericDate(iat),
		ID:        c.ID,
	})
	t.Header["kid"] = s.kid
	signed, err := t.SignedString(s.key)
	if err != nil {
		return "", Claims{}, fmt.Errorf("token: issue: %w", err)
	}
	return signed, c, nil
}

func subject(account crypto.AccountID, device crypto.DeviceID) string {
	return crypto.Address{Account: account, Device: device}.String()
}

// parseSubject accepts only the canonical form Issue produces: lowercase
// account ID, '.', decimal device without sign or leading zeros, not 0.
func parseSubject(sub string) (crypto.AccountID, crypto.DeviceID, error) {
	acct, dev, ok := strings.Cut(sub, ".")
	if !ok {
		return crypto.AccountID{}, 0, errors.New("subject has no device")
	}
	id, err := crypto.ParseAccountID(acct)
	if err != nil || id.String() != acct {
		return crypto.AccountID{}, 0, errors.New("subject has a bad account ID")
	}
	d, err := strconv.ParseUint(dev, 10, 32)
	if err != nil || d == 0 || strconv.FormatUint(d, 10) != dev {
		return crypto.AccountID{}, 0, errors.New("subject has a bad device")
	}
	return id, crypto.DeviceID(d), nil
}

// KeySource resolves a key ID to a verification key. Implementations return
// an error wrapping ErrUnknownKey for an ID they do not know.
type KeySource interface {
	Key(ctx context.Context, kid string) (ed25519.PublicKey, error)
}

// StaticKeys is a fixed set of verification keys by key ID. Holding the
// previous and the current key verifies tokens of both during a rotation.
type StaticKeys map[string]ed25519.PublicKey

// KeysOf returns the StaticKeys holding pubs under their derived key IDs.
func KeysOf(pubs ...ed25519.PublicKey) StaticKeys {
	m := make(StaticKeys, len(pubs))
	for _, p := range pubs {
		m[KeyIDOf(p)] = p
	}
	return m
}

// Key implements KeySource.
func (k StaticKeys) Key(_ context.Context, kid string) (ed25519.PublicKey, error) {
	if p, ok := k[kid]; ok {
		return p, nil
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownKey, kid)
}

// Verifier verifies tokens. It is safe for concurrent use.
type Verifier struct {
	keys     KeySource
	issuer   string
	audience string
}

// NewVerifier returns a Verifier accepting tokens of issuer for audience
// signed by a key of keys.
func NewVerifier(keys KeySource, issuer, audience string) *Verifier {
	return &Verifier{keys: keys, issuer: issuer, audience: audience}
}

// Verify checks tok at time now and returns its claims. Every error wraps
// ErrInvalidToken; when the key source failed, the error also wraps the key
// source's error (so a caller can tell an unreachable JWKS from a bad token).
func (v *Verifier) Verify(ctx context.Context, tok string, now time.Time) (Claims, error) {
	p := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithIssuer(v.issuer),
		jwt.WithAudience(v.audience),
		jwt.WithExpirationRequired(),
		jwt.WithNotBeforeRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(Leeway),
		jwt.WithTimeFunc(func() time.Time { return now }),
		jwt.WithStrictDecoding(),
	)
	var keyErr error
	var rc jwt.RegisteredClaims
	_, err := p.ParseWithClaims(tok, &rc, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		if kid == "" {
			keyErr = errors.New("token: no key ID")
			return nil, keyErr
		}
		pub, err := v.keys.Key(ctx, kid)
		if err != nil {
			keyErr = err
			return nil, err
		}
		return pub, nil
	})
	if err != nil {
		if keyErr != nil {
			return Claims{}, fmt.Errorf("%w: %w", ErrInvalidToken, keyErr)
		}
		return Claims{}, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	// The parser checked presence and bounds of exp, nbf and iat.
	if rc.IssuedAt == nil {
		return Claims{}, fmt.Errorf("%w: no issued-at time", ErrInvalidToken)
	}
	exp, nbf, iat := rc.ExpiresAt.UTC(), rc.NotBefore.UTC(), rc.IssuedAt.UTC()
	if exp.Sub(iat) > MaxLifetime || exp.Sub(nbf) > MaxLifetime {
		return Claims{}, fmt.Errorf("%w: lifetime longer than %v", ErrInvalidToken, MaxLifetime)
	}
	if rc.ID == "" {
		return Claims{}, fmt.Errorf("%w: no token ID", ErrInvalidToken)
	}
	acct, dev, err := parseSubject(rc.Subject)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	return Claims{Account: acct, Device: dev, ID: rc.ID, IssuedAt: iat, Expires: exp}, nil
}
