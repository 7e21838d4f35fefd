package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/relay/server"
	"github.com/sotto-im/sotto/relay/store"
)

// Split deployment: `sottod keyserver` and `sottod relay` in two processes.
//
// The relay verifies device tokens with the key server's JWKS (fetched and
// cached by token.RemoteKeys, refreshed on an unknown key ID) and learns
// device lists from GET /v1/accounts/{account}/devices (cached briefly;
// while the key server cannot be reached, the last list fetched is used for
// up to directoryStale, so that messages keep flowing through a key-server
// outage).
// The key server asks the relay to purge an account or a device with
// POST /internal/v1/purge, authenticated by an HMAC-SHA256 over the body
// and a timestamp under the shared internal key (SOTTO_INTERNAL_KEY, or
// keys/internal.key copied to both data directories).

const (
	internalPurgePrefix = "/internal/v1/purge"
	// purgeSkew bounds how old a signed purge request may be, limiting
	// replays of a captured one.
	purgeSkew = time.Minute
	// directoryTTL is how long the relay trusts a fetched device list: a
	// device added or removed is seen by the relay within this time, as
	// long as the key server can be reached.
	directoryTTL = 5 * time.Second
	// directoryStale bounds how old a device list the relay still uses
	// while the key server cannot be reached (stale-while-error). The
	// trade-off (OPERATIONS.md, THREAT_MODEL.md): during an outage a device
	// removed in the meantime is still accepted as a recipient, and its
	// token still accepted, for up to this long; without it every send
	// would be refused 5 s into the outage.
	directoryStale = time.Hour
	// directoryRetry is how long after a failed fetch the relay uses
	// cached lists without asking the key server again, so that an
	// unreachable key server (connection timeouts) does not slow every
	// send.
	directoryRetry = 2 * time.Second
)

type purgeRequest struct {
	Account string `json:"account"`
	Device  uint32 `json:"device,omitempty"` // 0: the whole account
	Time    int64  `json:"time"`
}

func purgeMAC(key, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("sotto/v1 internal purge\x00"))
	m.Write(body)
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// remotePurger is the key server's Purger for a relay in another process.
type remotePurger struct {
	url    string
	key    []byte
	client *http.Client
}

func newRemotePurger(relayURL string, key []byte) *remotePurger {
	return &remotePurger{url: strings.TrimSuffix(relayURL, "/") + internalPurgePrefix, key: key, client: &http.Client{Timeout: 10 * time.Second}}
}

func (p *remotePurger) PurgeAccount(ctx context.Context, account crypto.AccountID) error {
	return p.send(ctx, purgeRequest{Account: account.String()})
}

func (p *remotePurger) PurgeDevice(ctx context.Context, addr crypto.Address) error {
	return p.send(ctx, purgeRequest{Account: addr.Account.String(), Device: uint32(addr.Device)})
}

func (p *remotePurger) send(ctx context.Context, pr purgeRequest) error {
	pr.Time = time.Now().Unix()
	body, _ := json.Marshal(pr)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Sotto-Internal "+purgeMAC(p.key, body))
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("sottod: purge at relay: %w", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("sottod: purge at relay: status %d", resp.StatusCode)
	}
	return nil
}

// purgeHandler serves POST /internal/v1/purge on a relay.
func purgeHandler(relay *server.Server, key []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != internalPurgePrefix {
			writeJSONError(w, http.StatusNotFound, "not_found", "no such endpoint")
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 4096))
		if err != nil {
			writeJSONError(w, http.StatusBadRequest, "bad_request", "unreadable body")
			return
		}
		mac, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Sotto-Internal ")
		if !hmac.Equal([]byte(mac), []byte(purgeMAC(key, body))) {
			writeJSONError(w, http.StatusUnauthorized, "unauthorized", "bad internal authentication")
			return
		}
		var pr purgeRequest
		if err := json.Unmarshal(body, &pr); err != nil {
			writeJSONError(w, http.StatusBadRequest, "bad_request", "malformed purge request")
			return
		}
		if d := time.Since(time.Unix(pr.Time, 0)); d > purgeSkew || d < -purgeSkew {
			writeJSONError(w, http.StatusUnauthorized, "unauthorized", "stale purge request")
			return
		}
		account, err := crypto.ParseAccountID(pr.Account)
		if err != nil {
			writeJSONError(w, http.StatusBadRequest, "bad_request", "bad account ID")
			return
		}
		if pr.Device == 0 {
			err = relay.PurgeAccount(r.Context(), account)
		} else {
			err = relay.PurgeDevice(r.Context(), store.QueueID{Account: account, Device: crypto.DeviceID(pr.Device)})
		}
		if err != nil {
			writeJSONError(w, http.StatusInternalServerError, "internal", "purge failed")
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

// remoteDirectory is the relay's Directory for a key server in another
// process, with a short cache that it uses past its TTL while the key
// server cannot be reached.
type remoteDirectory struct {
	base   string
	client *http.Client
	log    *slog.Logger
	now    func() time.Time
	// stale counts lookups answered from an entry past its TTL.
	stale prometheus.Counter

	mu    sync.Mutex
	cache map[crypto.AccountID]directoryEntry
	// failedAt is the time of the last failed fetch; zero while the key
	// server answers.
	failedAt time.Time
}

type directoryEntry struct {
	devices []crypto.DeviceID
	gone    bool
	fetched time.Time
}

// maxDirectoryCache bounds the cache; it is emptied when full.
const maxDirectoryCache = 100_000

func newRemoteDirectory(keyserverURL string, logger *slog.Logger, reg prometheus.Registerer) (*remoteDirectory, error) {
	d := &remoteDirectory{base: strings.TrimSuffix(keyserverURL, "/"), client: &http.Client{Timeout: 10 * time.Second},
		log: logger, now: time.Now, cache: map[crypto.AccountID]directoryEntry{},
		stale: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "sotto", Subsystem: "relay", Name: "directory_stale_total",
			Help: "Device-list lookups answered from a cached list past its TTL because the key server could not be reached.",
		})}
	if reg != nil {
		if err := reg.Register(d.stale); err != nil {
			return nil, fmt.Errorf("sottod: register metrics: %w", err)
		}
	}
	return d, nil
}

func (d *remoteDirectory) Devices(ctx context.Context, account crypto.AccountID) ([]crypto.DeviceID, error) {
	now := d.now()
	d.mu.Lock()
	e, ok := d.cache[account]
	failedAt := d.failedAt
	d.mu.Unlock()
	usable := ok && now.Sub(e.fetched) <= directoryStale
	switch {
	case ok && now.Sub(e.fetched) <= directoryTTL:
		return e.answer()
	case !failedAt.IsZero() && now.Sub(failedAt) < directoryRetry:
		// The key server failed a moment ago: do not wait for it again.
		if usable {
			d.stale.Inc()
			return e.answer()
		}
		return nil, errors.New("sottod: device list from key server: key server unreachable")
	}
	fresh, err := d.fetch(ctx, account)
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		d.mu.Lock()
		if d.failedAt.IsZero() {
			d.log.Warn("key server unreachable; using cached device lists", "max_age", directoryStale.String(), "err", err)
		}
		d.failedAt = now
		d.mu.Unlock()
		if usable {
			d.stale.Inc()
			return e.answer()
		}
		return nil, err
	}
	d.mu.Lock()
	if !d.failedAt.IsZero() {
		d.log.Info("key server reachable again", "down_for", now.Sub(d.failedAt).Round(time.Second).String())
		d.failedAt = time.Time{}
	}
	if len(d.cache) >= maxDirectoryCache {
		clear(d.cache)
	}
	d.cache[account] = fresh
	d.mu.Unlock()
	return fresh.answer()
}

func (e directoryEntry) answer() ([]crypto.DeviceID, error) {
	if e.gone {
		return nil, server.ErrUnknownAccount
	}
	return e.devices, nil
}

func (d *remoteDirectory) fetch(ctx context.Context, account crypto.AccountID) (directoryEntry, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.base+"/v1/accounts/"+account.String()+"/devices", nil)
	if err != nil {
		return directoryEntry{}, err
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return directoryEntry{}, fmt.Errorf("sottod: device list from key server: %w", err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		var body struct {
			Devices []crypto.DeviceID `json:"devices"`
		}
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&body); err != nil {
			return directoryEntry{}, fmt.Errorf("sottod: device list from key server: %w", err)
		}
		return directoryEntry{devices: body.Devices, fetched: d.now()}, nil
	case http.StatusNotFound:
		return directoryEntry{gone: true, fetched: d.now()}, nil
	default:
		return directoryEntry{}, fmt.Errorf("sottod: device list from key server: status %d", resp.StatusCode)
	}
}

// trustProxies replaces r.RemoteAddr with the client address a trusted
// proxy reports in X-Forwarded-For (the right-most address not itself a
// trusted proxy), so that rate limits apply to clients, not to the proxy.
func trustProxies(trusted []netip.Prefix, next http.Handler) http.Handler {
	isTrusted := func(a netip.Addr) bool {
		for _, p := range trusted {
			if p.Contains(a.Unmap()) {
				return true
			}
		}
		return false
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peer, err := netip.ParseAddrPort(r.RemoteAddr)
		if err == nil && isTrusted(peer.Addr()) {
			hops := strings.Split(r.Header.Get("X-Forwarded-For"), ",")
			for i := len(hops) - 1; i >= 0; i-- {
				a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
				if err != nil {
					break
				}
				if !isTrusted(a) || i == 0 {
					r.RemoteAddr = net.JoinHostPort(a.String(), "0")
					break
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}
