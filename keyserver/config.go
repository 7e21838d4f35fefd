package keyserver

import (
	"context"
	"crypto/ed25519"
	"errors"
	"time"

	"golang.org/x/time/rate"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/internal/token"
	"github.com/sotto-im/sotto/keyserver/store"
)

// Store is the storage the server runs on; store.Open returns the Pebble
// implementation.
type Store = store.Store

// Purger erases what the relay holds for an account or a device: its
// queues and blobs. The relay implements it; cmd/sottod wires it in.
type Purger interface {
	PurgeAccount(ctx context.Context, account crypto.AccountID) error
	PurgeDevice(ctx context.Context, addr crypto.Address) error
}

// Implementation constants.
const (
	// DefaultTokenLifetime is how long a login token lives; short so that a
	// removed device's tokens die soon even at a relay that cannot ask.
	DefaultTokenLifetime = time.Hour
	// DefaultCertificateLifetime is how long a sender certificate lives:
	// long enough to send for a day offline, short enough that a removed
	// device's certificate stops working soon.
	DefaultCertificateLifetime = 24 * time.Hour
	// ChallengeLifetime is how long a login challenge may be answered.
	ChallengeLifetime = time.Minute
	// MaxChallenges bounds the outstanding challenges held in memory.
	MaxChallenges = 100_000
	// ProvisioningLifetime is how long a provisioning address lives: the
	// time a person has to scan a link code and confirm on the primary.
	ProvisioningLifetime = 10 * time.Minute
	// MaxProvisioning bounds the outstanding provisioning addresses.
	MaxProvisioning = 10_000
	// MaxProvisioningMessage bounds one provisioning message (ciphertext
	// of the account key and what a new device needs to start).
	MaxProvisioningMessage = 64 << 10
	// MaxPreKeyBatch bounds the one-time prekeys of each kind in one upload.
	MaxPreKeyBatch = 100
	// MaxSmallBody caps request bodies of routes that take small JSON.
	MaxSmallBody = 16 << 10
	// MaxPreKeyBody caps bodies that carry prekeys: two full batches of
	// 100 (an ML-KEM-768 prekey is 1,255 bytes, 1,676 in base64) and room.
	MaxPreKeyBody = 512 << 10
	// MaxProvisioningBody caps a provisioning upload (base64 of the message).
	MaxProvisioningBody = MaxProvisioningMessage*4/3 + 1024
	// MaxTokenLength bounds the Authorization header's token.
	MaxTokenLength = 4096
	// RequestTimeout bounds the work of one request.
	RequestTimeout = 10 * time.Second
	// DefaultMaxTrackedKeys bounds each rate limiter's table of clients.
	DefaultMaxTrackedKeys = 100_000
)

// Rate is a token-bucket rate: Limit events per second with bursts of
// Burst. The zero Rate means the default; rate.Inf disables the limit.
type Rate struct {
	Limit rate.Limit
	Burst int
}

// Limits are the server's rate limits. Zero fields take the defaults.
type Limits struct {
	// IP limits every request by client IP.
	IP Rate
	// Account limits every authenticated request by account.
	Account Rate
	// Unauthenticated limits registration, challenges, logins and
	// provisioning addresses by client IP.
	Unauthenticated Rate
	// HandleLookup limits handle lookups, by account and by IP, against
	// enumeration of the directory.
	HandleLookup Rate
	// MaxTrackedKeys bounds each limiter's table of clients; the least
	// recently seen are evicted first.
	MaxTrackedKeys int
}

func (l *Limits) setDefaults() {
	def := func(r *Rate, lim rate.Limit, burst int) {
		if r.Limit == 0 {
			r.Limit = lim
		}
		if r.Burst == 0 {
			r.Burst = burst
		}
	}
	def(&l.IP, 100, 200)
	def(&l.Account, 50, 100)
	def(&l.Unauthenticated, 5, 20)
	def(&l.HandleLookup, rate.Every(6*time.Second), 10)
	if l.MaxTrackedKeys == 0 {
		l.MaxTrackedKeys = DefaultMaxTrackedKeys
	}
}

// Config configures a [Server].
type Config struct {
	// Issuer and Audience are the iss and aud of the tokens the server
	// issues and accepts; the relay verifies them too.
	Issuer, Audience string
	// TokenKey signs new tokens. Required.
	TokenKey ed25519.PrivateKey
	// PreviousTokenKeys still verify tokens (and are published in the
	// JWKS) after a rotation, until the tokens they signed have expired.
	PreviousTokenKeys []ed25519.PublicKey
	// TokenLifetime defaults to DefaultTokenLifetime; at most
	// token.MaxLifetime.
	TokenLifetime time.Duration
	// CertificateSigner signs sender certificates; its trust root is
	// published at /v1/trust-root. Required.
	CertificateSigner *crypto.CertificateSigner
	// CertificateLifetime defaults to DefaultCertificateLifetime; at most
	// crypto.MaxSenderCertLifetime.
	CertificateLifetime time.Duration
	// Purger erases the relay's data of deleted accounts and removed
	// devices. Nil means there is no relay to tell (tests, key server alone).
	Purger Purger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Limits are the rate limits.
	Limits Limits
}

func (c *Config) check() error {
	if c.Issuer == "" || c.Audience == "" {
		return errors.New("keyserver: config: issuer and audience are required")
	}
	if len(c.TokenKey) != ed25519.PrivateKeySize {
		return errors.New("keyserver: config: token key is required")
	}
	for _, k := range c.PreviousTokenKeys {
		if len(k) != ed25519.PublicKeySize {
			return errors.New("keyserver: config: previous token key of wrong length")
		}
	}
	if c.CertificateSigner == nil {
		return errors.New("keyserver: config: certificate signer is required")
	}
	if c.TokenLifetime == 0 {
		c.TokenLifetime = DefaultTokenLifetime
	}
	if c.TokenLifetime < 0 || c.TokenLifetime > token.MaxLifetime {
		return errors.New("keyserver: config: token lifetime out of range")
	}
	if c.CertificateLifetime == 0 {
		c.CertificateLifetime = DefaultCertificateLifetime
	}
	if c.CertificateLifetime < 0 || c.CertificateLifetime > crypto.MaxSenderCertLifetime {
		return errors.New("keyserver: config: certificate lifetime out of range")
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	c.Limits.setDefaults()
	return nil
}
