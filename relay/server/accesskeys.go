package server

import (
	"context"
	"sync"
	"time"

	"github.com/sotto-im/sotto/crypto"
)

// Access-key cache bounds. Every sealed send checks each recipient
// account's key hash; reading it from the store each time costs a store
// lookup per send, so a short-lived cache holds the answers. A key that
// changes through this relay takes effect at once; one changed through
// another relay of a cluster within accessKeyTTL.
const (
	accessKeyTTL        = 10 * time.Second
	maxCachedAccessKeys = 100_000 // ~10 MB; beyond it the cache starts over
)

type accessKeyEntry struct {
	hash    [32]byte
	ok      bool
	fetched time.Time
}

type accessKeyCache struct {
	mu sync.Mutex
	m  map[crypto.AccountID]accessKeyEntry
}

// accessKeyHash returns the account's registered access key hash through
// the cache.
func (s *Server) accessKeyHash(ctx context.Context, account crypto.AccountID) ([32]byte, bool, error) {
	now := time.Now()
	c := &s.akCache
	c.mu.Lock()
	e, hit := c.m[account]
	c.mu.Unlock()
	if hit && now.Sub(e.fetched) < accessKeyTTL {
		return e.hash, e.ok, nil
	}
	hash, ok, err := s.devices.AccessKeyHash(ctx, account)
	if err != nil {
		return hash, ok, err
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCachedAccessKeys {
		c.m = make(map[crypto.AccountID]accessKeyEntry)
	}
	c.m[account] = accessKeyEntry{hash: hash, ok: ok, fetched: now}
	c.mu.Unlock()
	return hash, ok, nil
}

// forgetAccessKey drops the account's cached hash after a change.
func (s *Server) forgetAccessKey(account crypto.AccountID) {
	s.akCache.mu.Lock()
	delete(s.akCache.m, account)
	s.akCache.mu.Unlock()
}
