package keyserver

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/keyserver/store"
)

const (
	testIssuer   = "https://keys.test"
	testAudience = "sotto-relay.test"
)

// testEnv is a key server on a real Pebble directory behind a real HTTP
// server on 127.0.0.1.
type testEnv struct {
	t       testing.TB
	db      *store.DB
	srv     *Server
	http    *httptest.Server
	tokenSK ed25519.PrivateKey
	signer  *crypto.CertificateSigner
	offset  atomic.Int64 // added to the real clock, in nanoseconds
	purger  *recordingPurger
}

type recordingPurger struct {
	mu       sync.Mutex
	accounts []crypto.AccountID
	devices  []crypto.Address
	fail     bool
}

func (p *recordingPurger) PurgeAccount(_ context.Context, id crypto.AccountID) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail {
		return fmt.Errorf("relay unreachable")
	}
	p.accounts = append(p.accounts, id)
	return nil
}

func (p *recordingPurger) PurgeDevice(_ context.Context, a crypto.Address) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.devices = append(p.devices, a)
	return nil
}

func unlimited() Limits {
	inf := Rate{Limit: rate.Inf}
	return Limits{IP: inf, Account: inf, Unauthenticated: inf, HandleLookup: inf}
}

func newEnv(t testing.TB, mod func(*Config)) *testEnv {
	t.Helper()
	opts := store.Options{}
	if os.Getenv("KS_MEMFS") != "" {
		opts.FS = vfs.NewMem()
	}
	db, err := store.Open(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	_, sk, _ := ed25519.GenerateKey(nil)
	seed := make([]byte, 32)
	seed[0] = 1
	cs, _ := crypto.NewCertificateSigner(seed)
	env := &testEnv{t: t, db: db, tokenSK: sk, signer: cs, purger: &recordingPurger{}}
	cfg := Config{
		Issuer: testIssuer, Audience: testAudience,
		TokenKey: sk, CertificateSigner: cs, Purger: env.purger,
		Now:    env.now,
		Limits: unlimited(),
	}
	if mod != nil {
		mod(&cfg)
	}
	var logger *slog.Logger
	if tt, ok := t.(*testing.T); ok {
		logger = slog.New(slog.NewTextHandler(tWriter{tt}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	env.srv, err = New(cfg, db, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	env.http = httptest.NewServer(env.srv.Handler())
	t.Cleanup(func() {
		env.http.Close()
		db.Close()
	})
	return env
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(string(bytes.TrimSpace(b)))
	return len(b), nil
}

func (e *testEnv) now() time.Time { return time.Now().Add(time.Duration(e.offset.Load())) }

// response is a decoded answer.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) errorCode() string {
	var v struct {
		Error struct{ Code, Message string }
	}
	_ = json.Unmarshal(r.body, &v)
	return v.Error.Code
}

func (r response) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// do sends a request; body is JSON-encoded unless it is []byte or string.
func (e *testEnv) do(method, path, tok string, body any) response {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = bytes.NewReader([]byte(b))
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.http.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	res, err := e.http.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return response{status: res.StatusCode, header: res.Header, body: b}
}

func (e *testEnv) must(want int, r response) response {
	e.t.Helper()
	if r.status != want {
		e.t.Fatalf("status %d, want %d: %s", r.status, want, r.body)
	}
	return r
}

// testAccount is a client's view of an account.
type testAccount struct {
	key     *crypto.AccountPrivateKey
	version uint64
	devices map[crypto.DeviceID]*crypto.IdentityPrivateKey
	nextID  uint32 // next prekey ID
}

func (a *testAccount) id() string { return a.key.ID().String() }

// signList signs a list of the given devices at version v.
func (a *testAccount) signList(t testing.TB, v uint64, ids ...crypto.DeviceID) []byte {
	t.Helper()
	l := &crypto.DeviceList{AccountKey: a.key.Public(), Version: v}
	for _, id := range ids {
		l.Devices = append(l.Devices, crypto.Device{ID: id, Identity: a.devices[id].Public(), Added: time.Unix(1700000000, 0)})
	}
	signed, err := crypto.SignDeviceList(a.key, l)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

// preKeys makes an upload with nEC and nKEM one-time prekeys and, if full,
// a signed and a last-resort prekey.
func (a *testAccount) preKeys(ik *crypto.IdentityPrivateKey, full bool, nEC, nKEM int) preKeysRequest {
	var p preKeysRequest
	if full {
		a.nextID++
		p.SignedPreKey, _ = crypto.GenerateSignedPreKey(ik, a.nextID).MarshalBinary()
		a.nextID++
		p.LastResortPreKey, _ = crypto.GenerateKEMPreKey(ik, a.nextID, true).MarshalBinary()
	}
	for range nEC {
		a.nextID++
		b, _ := crypto.GenerateOneTimePreKey(a.nextID).MarshalBinary()
		p.OneTimeEC = append(p.OneTimeEC, b)
	}
	for range nKEM {
		a.nextID++
		b, _ := crypto.GenerateKEMPreKey(ik, a.nextID, false).MarshalBinary()
		p.OneTimeKEM = append(p.OneTimeKEM, b)
	}
	return p
}

// registerRequest builds a registration of a new account with device 1.
func newTestAccount(t testing.TB, nEC, nKEM int) (*testAccount, registerRequest) {
	a := &testAccount{key: crypto.GenerateAccountKey(), version: 1, devices: map[crypto.DeviceID]*crypto.IdentityPrivateKey{}}
	ik := crypto.GenerateIdentityKey()
	a.devices[1] = ik
	req := registerRequest{
		AccountKey: a.key.Public().Bytes(),
		DeviceList: a.signList(t, 1, 1),
		PreKeys:    a.preKeys(ik, true, nEC, nKEM),
	}
	return a, req
}

func (e *testEnv) register(nEC, nKEM int) *testAccount {
	e.t.Helper()
	a, req := newTestAccount(e.t, nEC, nKEM)
	e.must(http.StatusCreated, e.do("POST", "/v1/accounts", "", req))
	return a
}

// login runs the challenge-response login for a device.
func (e *testEnv) login(a *testAccount, dev crypto.DeviceID) string {
	e.t.Helper()
	var ch challengeResponse
	e.must(http.StatusOK, e.do("POST", "/v1/auth/challenge", "", nil)).decode(e.t, &ch)
	var lr loginResponse
	e.must(http.StatusOK, e.do("POST", "/v1/auth/login", "", loginRequest{
		Account: a.id(), Device: dev, Challenge: ch.Challenge, Signature: a.devices[dev].SignLoginChallenge(ch.Challenge),
	})).decode(e.t, &lr)
	return lr.Token
}

// deletion signs a fresh challenge with the account key, authorising the
// deletion of the account (signer is the key that signs: the account's own,
// or another to test refusals).
func (e *testEnv) deletion(signer *crypto.AccountPrivateKey) deleteAccountRequest {
	e.t.Helper()
	var ch challengeResponse
	e.must(http.StatusOK, e.do("POST", "/v1/auth/challenge", "", nil)).decode(e.t, &ch)
	return deleteAccountRequest{Challenge: ch.Challenge, Signature: signer.SignAccountDeletion(ch.Challenge)}
}

// addDevice publishes a list with a new device and uploads its prekeys.
func (e *testEnv) addDevice(a *testAccount, tok string, id crypto.DeviceID, nEC, nKEM int) string {
	e.t.Helper()
	a.devices[id] = crypto.GenerateIdentityKey()
	var ids []crypto.DeviceID
	for d := crypto.DeviceID(1); d <= 64; d++ {
		if _, ok := a.devices[d]; ok {
			ids = append(ids, d)
		}
	}
	a.version++
	e.must(http.StatusOK, e.do("PUT", "/v1/accounts/"+a.id()+"/devicelist", tok, putDeviceListRequest{DeviceList: a.signList(e.t, a.version, ids...)}))
	dtok := e.login(a, id)
	e.must(http.StatusOK, e.do("POST", "/v1/prekeys", dtok, a.preKeys(a.devices[id], true, nEC, nKEM)))
	return dtok
}

func newHTTPServer(t testing.TB, s *Server) *httptest.Server {
	h := httptest.NewServer(s.Handler())
	t.Cleanup(h.Close)
	return h
}
