package faults

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/sotto-im/sotto/client"
	"github.com/sotto-im/sotto/client/store/memstore"
	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/internal/token"
	"github.com/sotto-im/sotto/keyserver"
	ksstore "github.com/sotto-im/sotto/keyserver/store"
	"github.com/sotto-im/sotto/relay/relayhttp"
	"github.com/sotto-im/sotto/relay/server"
	"github.com/sotto-im/sotto/relay/store/blobstore"
	"github.com/sotto-im/sotto/relay/store/pebblestore"
)

// ksEnv is a key server on a fault-injecting filesystem and a healthy
// relay, behind one HTTP server, wired as sottod wires them.
type ksEnv struct {
	t      *testing.T
	dir    string
	fs     vfs.FS
	tokKey ed25519.PrivateKey
	signer *crypto.CertificateSigner
	hs     *httptest.Server
	relay  *server.Server
	rdb    *pebblestore.DB

	// retryAfter is the Retry-After of the key server's last 503.
	retryAfter atomic.Value

	mu  sync.Mutex
	db  *ksstore.DB
	ks  *keyserver.Server
	ksH http.Handler
	rH  http.Handler
}

const ksIssuer, ksAudience = "sotto-faults", "sotto"

func newKSEnv(t *testing.T, fs vfs.FS) *ksEnv {
	e := &ksEnv{t: t, dir: t.TempDir(), fs: fs}
	_, e.tokKey, _ = ed25519.GenerateKey(rand.Reader)
	seed := make([]byte, 32)
	rand.Read(seed)
	var err error
	if e.signer, err = crypto.NewCertificateSigner(seed); err != nil {
		t.Fatal(err)
	}
	e.openKS()
	if e.rdb, err = pebblestore.Open(t.TempDir(), pebblestore.Options{}); err != nil {
		t.Fatal(err)
	}
	blobs, err := blobstore.Open(t.TempDir(), blobstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	verifier := token.NewVerifier(token.KeysOf(e.tokKey.Public().(ed25519.PublicKey)), ksIssuer, ksAudience)
	e.relay, err = server.New(server.Config{}, e.rdb, e.rdb, blobs, ksDirectory{e}, server.TokenAuthenticator{Verifier: verifier},
		slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	e.rH = relayhttp.Handler(e.relay)
	e.hs = httptest.NewServer(e)
	t.Cleanup(func() {
		e.hs.CloseClientConnections()
		e.hs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e.relay.Close(ctx)
		e.rdb.Close()
		e.mu.Lock()
		e.db.Close()
		e.mu.Unlock()
	})
	return e
}

func (e *ksEnv) openKS() {
	db, err := ksstore.Open(e.dir, ksstore.Options{FS: e.fs, RecoveryBackoff: 50 * time.Millisecond})
	if err != nil {
		e.t.Fatalf("open key server store: %v", err)
	}
	generous := keyserver.Rate{Limit: 1e6, Burst: 1e6}
	ks, err := keyserver.New(keyserver.Config{Issuer: ksIssuer, Audience: ksAudience, TokenKey: e.tokKey, CertificateSigner: e.signer,
		Limits: keyserver.Limits{IP: generous, Account: generous, Unauthenticated: generous, HandleLookup: generous}}, db, nil, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	e.mu.Lock()
	e.db, e.ks, e.ksH = db, ks, ks.Handler()
	e.mu.Unlock()
}

func (e *ksEnv) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if strings.HasPrefix(p, "/v1/relay/") || p == "/v1/messages" || strings.HasPrefix(p, "/v1/blobs") {
		e.rH.ServeHTTP(w, r)
		return
	}
	e.mu.Lock()
	h := e.ksH
	e.mu.Unlock()
	h.ServeHTTP(&statusRecorder{ResponseWriter: w, e: e}, r)
}

// statusRecorder notes the Retry-After of 503 answers.
type statusRecorder struct {
	http.ResponseWriter
	e *ksEnv
}

func (s *statusRecorder) WriteHeader(code int) {
	if code == http.StatusServiceUnavailable {
		s.e.retryAfter.Store(s.Header().Get("Retry-After"))
	}
	s.ResponseWriter.WriteHeader(code)
}

type ksDirectory struct{ e *ksEnv }

func (d ksDirectory) Devices(ctx context.Context, a crypto.AccountID) ([]crypto.DeviceID, error) {
	d.e.mu.Lock()
	ks := d.e.ks
	d.e.mu.Unlock()
	ids, err := ks.DeviceIDs(ctx, a)
	if errors.Is(err, keyserver.ErrUnknownAccount) {
		return nil, server.ErrUnknownAccount
	}
	return ids, err
}

func (e *ksEnv) create(ctx context.Context, handle string) (*client.Client, error) {
	return client.Create(ctx, client.Options{Store: memstore.New(), KeyServerURL: e.hs.URL, RelayURL: e.hs.URL,
		TrustRoots: []crypto.TrustRoot{e.signer.TrustRoot()}, Handle: handle})
}

// TestKeyServerStorageFaults fills the key server's disk: registration
// fails with 503 "unavailable" and a Retry-After (not a 500, not a hang,
// not a success), reading device lists and messaging between existing
// accounts go on, and once the disk has space again the store reopens
// itself: registration works without a restart and nothing registered
// before is lost.
func TestKeyServerStorageFaults(t *testing.T) {
	f := &fault{match: anyWrite, err: errNoSpace}
	e := newKSEnv(t, errorfs.Wrap(vfs.Default, f))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	alice, err := e.create(ctx, "alice_f")
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	bob, err := e.create(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	ab, err := alice.AddContact(ctx, bob.Invite(false).String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.AddContact(ctx, alice.Invite(false).String()); err != nil {
		t.Fatal(err)
	}
	events := bob.Events()
	// A first message claims a prekey bundle (a write): before the fault.
	if _, err := alice.Send(ctx, ab.Conversation, client.Text("before the fault")); err != nil {
		t.Fatal(err)
	}
	waitText(t, events, "before the fault")

	f.on.Store(true)
	_, err = e.create(ctx, "carol_f")
	var apiErr *client.APIError
	if err == nil {
		t.Fatal("registration succeeded on a full disk")
	}
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusServiceUnavailable || apiErr.Code != "unavailable" {
		t.Fatalf("registration on a full disk: %v (want 503 unavailable)", err)
	}
	if ra, _ := e.retryAfter.Load().(string); ra == "" {
		t.Fatal("503 without Retry-After")
	}
	t.Logf("registration on a full disk: %v (Retry-After %v)", err, e.retryAfter.Load())
	resp, err := http.Get(e.hs.URL + "/v1/accounts/" + alice.Account().String() + "/devicelist")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("device list read on a full disk: %v %v", resp, err)
	}
	resp.Body.Close()
	if _, err := alice.Send(ctx, ab.Conversation, client.Text("during the fault")); err != nil {
		t.Fatal(err)
	}
	waitText(t, events, "during the fault")

	// Space returns: the store reopens itself; registration works again
	// within seconds, without a restart.
	f.on.Store(false)
	cleared := time.Now()
	for {
		carol, err := e.create(ctx, "carol_f")
		if err == nil {
			carol.Close()
			break
		}
		if !errors.As(err, &apiErr) || apiErr.Status != http.StatusServiceUnavailable {
			t.Fatalf("registration while the store recovers: %v (want success or 503)", err)
		}
		if time.Since(cleared) > 15*time.Second {
			t.Fatalf("registration still refused 15 s after the disk recovered: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("registration works again %v after the disk recovered (store reopened %d times, no restart)",
		time.Since(cleared).Round(time.Millisecond), e.db.Recoveries())
	if e.db.Recoveries() != 1 {
		t.Fatalf("store reopened %d times, want 1", e.db.Recoveries())
	}
	for _, a := range []crypto.AccountID{alice.Account(), bob.Account()} {
		if _, err := e.db.Account(ctx, a); err != nil {
			t.Fatalf("account registered before the fault: %v", err)
		}
	}
	if h, err := e.db.Handle(ctx, alice.Account()); err != nil || h != "alice_f" {
		t.Fatalf("handle after recovery: %q %v", h, err)
	}
	// Messaging, including a first message to a new contact (a prekey
	// claim, a write), works after the recovery.
	dave, err := e.create(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	defer dave.Close()
	ad, err := alice.AddContact(ctx, dave.Invite(false).String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Send(ctx, ad.Conversation, client.Text("after the recovery")); err != nil {
		t.Fatal(err)
	}
	waitText(t, dave.Events(), "after the recovery")
}

func waitText(t *testing.T, events <-chan client.Event, text string) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case ev := <-events:
			if m, ok := ev.(client.MessageEvent); ok && m.Message.Text == text {
				return
			}
		case <-timeout:
			t.Fatalf("no message %q", text)
		}
	}
}
