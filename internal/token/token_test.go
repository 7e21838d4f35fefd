package token

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/sotto-im/sotto/crypto"
)

const (
	testIssuer   = "https://keys.example"
	testAudience = "sotto-relay"
)

var testNow = time.Date(2026, 11, 22, 21, 0, 0, 0, time.UTC)

func newKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

func testAccount() crypto.AccountID {
	var a crypto.AccountID
	for i := range a {
		a[i] = byte(i * 7)
	}
	return a
}

func TestIssueVerify(t *testing.T) {
	s := NewSigner(newKey(t), testIssuer, testAudience)
	v := NewVerifier(KeysOf(s.Public()), testIssuer, testAudience)
	tok, c, err := s.Issue(testAccount(), 3, testNow, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	got, err := v.Verify(context.Background(), tok, testNow.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if got != c {
		t.Fatalf("claims = %+v, want %+v", got, c)
	}
	if got.Account != testAccount() || got.Device != 3 || len(got.ID) != 22 {
		t.Fatalf("bad claims %+v", got)
	}
	if !got.Expires.Equal(testNow.Add(10 * time.Minute)) {
		t.Fatalf("expires %v", got.Expires)
	}
	// jti differs per token.
	tok2, c2, _ := s.Issue(testAccount(), 3, testNow, time.Minute)
	if tok2 == tok || c2.ID == c.ID {
		t.Fatal("token IDs repeat")
	}
}

func TestIssueCapsLifetime(t *testing.T) {
	s := NewSigner(newKey(t), testIssuer, testAudience)
	_, c, err := s.Issue(testAccount(), 1, testNow, 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if c.Expires.Sub(c.IssuedAt) != MaxLifetime {
		t.Fatalf("lifetime %v", c.Expires.Sub(c.IssuedAt))
	}
	if _, _, err := s.Issue(testAccount(), 1, testNow, 0); err == nil {
		t.Fatal("zero ttl accepted")
	}
	if _, _, err := s.Issue(testAccount(), 0, testNow, time.Minute); err == nil {
		t.Fatal("device 0 accepted")
	}
}

func TestKeyRotation(t *testing.T) {
	old := NewSigner(newKey(t), testIssuer, testAudience)
	cur := NewSigner(newKey(t), testIssuer, testAudience)
	v := NewVerifier(KeysOf(old.Public(), cur.Public()), testIssuer, testAudience)
	for _, s := range []*Signer{old, cur} {
		tok, _, err := s.Issue(testAccount(), 2, testNow, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verify(context.Background(), tok, testNow); err != nil {
			t.Fatalf("key %s: %v", s.KeyID(), err)
		}
	}
	// Once the old key is dropped its tokens stop verifying.
	v = NewVerifier(KeysOf(cur.Public()), testIssuer, testAudience)
	tok, _, _ := old.Issue(testAccount(), 2, testNow, time.Hour)
	if _, err := v.Verify(context.Background(), tok, testNow); !errors.Is(err, ErrInvalidToken) || !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("old key after rotation: %v", err)
	}
}

// sign builds a token with arbitrary claims and header, signed by key with
// method.
func sign(t *testing.T, method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tk := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tk.Header["kid"] = kid
	}
	s, err := tk.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestVerifyRejects(t *testing.T) {
	key := newKey(t)
	s := NewSigner(key, testIssuer, testAudience)
	other := newKey(t)
	v := NewVerifier(KeysOf(s.Public()), testIssuer, testAudience)
	sub := crypto.Address{Account: testAccount(), Device: 5}.String()
	claims := func(mod func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{
			"iss": testIssuer, "aud": testAudience, "sub": sub,
			"iat": testNow.Unix(), "nbf": testNow.Unix(), "exp": testNow.Add(30 * time.Minute).Unix(),
			"jti": "abc",
		}
		if mod != nil {
			mod(c)
		}
		return c
	}
	good := sign(t, jwt.SigningMethodEdDSA, key, s.KeyID(), claims(nil))
	if _, err := v.Verify(context.Background(), good, testNow); err != nil {
		t.Fatalf("control token refused: %v", err)
	}
	parts := strings.Split(good, ".")
	sig := []byte(parts[2])
	if sig[5] == 'A' {
		sig[5] = 'B'
	} else {
		sig[5] = 'A'
	}
	flipped := parts[0] + "." + parts[1] + "." + string(sig)

	tests := []struct {
		name string
		tok  string
		now  time.Time
	}{
		{"forged signature (other key, same kid)", sign(t, jwt.SigningMethodEdDSA, other, s.KeyID(), claims(nil)), testNow},
		{"flipped signature byte", flipped, testNow},
		{"alg none", sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, s.KeyID(), claims(nil)), testNow},
		{"HS256 keyed with public key", sign(t, jwt.SigningMethodHS256, []byte(s.Public()), s.KeyID(), claims(nil)), testNow},
		{"expired", good, testNow.Add(31*time.Minute + Leeway)},
		{"not yet valid", good, testNow.Add(-time.Minute - Leeway)},
		{"wrong audience", sign(t, jwt.SigningMethodEdDSA, key, s.KeyID(), claims(func(c jwt.MapClaims) { c["aud"] = "other" })), testNow},
		{"no audience", sign(t, jwt.SigningMethodEdDSA, key, s.KeyID(), claims(func(c jwt.MapClaims) { delete(c, "aud") })), testNow},
		{"wrong issuer", sign(t, jwt.SigningMethodEdDSA, key, s.KeyID(), claims(func(c jwt.MapClaims) { c["iss"] = "https://evil.example" })), testNow},
		{"lifetime too long", sign(t, jwt.SigningMethodEdDSA, key, s.KeyID(), claims(func(c jwt.MapClaims) { c["exp"] = testNow.Add(2 * time.Hour).Unix() })), testNow},
		{"lifetime too long via nbf", sign(t, jwt.SigningMethodEdDSA, key, s.KeyID(), claims(func(c jwt.MapClaims) {
			c["nbf"] = testNow.Add(-3 * time.Hour).Unix()
			c["iat"] = testNow.Add(-time.Minute).Unix()
		})), testNow},
		{"no exp", sign(t, jwt.SigningMethodEdDSA, key, s.KeyID(), claims(func(c jwt.MapClaims) { delete(c, "exp") })), testNow},
		{"no nbf", sign(t, jwt.SigningMethodEdDSA, key, s.KeyID(), claims(func(c jwt.MapClaims) { delete(c, "nbf") })), testNow},
		{"no iat", sign(t, jwt.SigningMethodEdDSA, key, s.KeyID(), claims(func(c jwt.MapClaims) { delete(c, "iat") })), testNow},
		{"iat in future", sign(t, jwt.SigningMethodEdDSA, key, s.KeyID(), claims(func(c jwt.MapClaims) { c["iat"] = testNow.Add(10 * time.Minute).Unix() })), testNow},
		{"no jti", sign(t, jwt.SigningMethodEdDSA, key, s.KeyID(), claims(func(c jwt.MapClaims) { delete(c, "jti") })), testNow},
		{"bad subject: no device", sign(t, jwt.SigningMethodEdDSA, key, s.KeyID(), claims(func(c jwt.MapClaims) { c["sub"] = testAccount().String() })), testNow},
		{"bad subject: device 0", sign(t, jwt.SigningMethodEdDSA, key, s.KeyID(), claims(func(c jwt.MapClaims) { c["sub"] = testAccount().String() + ".0" })), testNow},
		{"bad subject: leading zero", sign(t, jwt.SigningMethodEdDSA, key, s.KeyID(), claims(func(c jwt.MapClaims) { c["sub"] = testAccount().String() + ".05" })), testNow},
		{"bad subject: sign", sign(t, jwt.SigningMethodEdDSA, key, s.KeyID(), claims(func(c jwt.MapClaims) { c["sub"] = testAccount().String() + ".+5" })), testNow},
		{"bad subject: overflow", sign(t, jwt.SigningMethodEdDSA, key, s.KeyID(), claims(func(c jwt.MapClaims) { c["sub"] = testAccount().String() + ".4294967296" })), testNow},
		{"bad subject: upper case", sign(t, jwt.SigningMethodEdDSA, key, s.KeyID(), claims(func(c jwt.MapClaims) { c["sub"] = strings.ToUpper(sub) })), testNow},
		{"bad subject: two dots", sign(t, jwt.SigningMethodEdDSA, key, s.KeyID(), claims(func(c jwt.MapClaims) { c["sub"] = sub + ".1" })), testNow},
		{"bad subject: empty", sign(t, jwt.SigningMethodEdDSA, key, s.KeyID(), claims(func(c jwt.MapClaims) { c["sub"] = "" })), testNow},
		{"bad subject: not a string", sign(t, jwt.SigningMethodEdDSA, key, s.KeyID(), claims(func(c jwt.MapClaims) { c["sub"] = 12 })), testNow},
		{"unknown kid", sign(t, jwt.SigningMethodEdDSA, other, KeyIDOf(other.Public().(ed25519.PublicKey)), claims(nil)), testNow},
		{"no kid", sign(t, jwt.SigningMethodEdDSA, key, "", claims(nil)), testNow},
		{"garbage", "not a token", testNow},
		{"empty", "", testNow},
		{"two parts", parts[0] + "." + parts[1], testNow},
		{"padded base64", parts[0] + "=." + parts[1] + "." + parts[2], testNow},
		{"header not JSON", "bm90anNvbg." + parts[1] + "." + parts[2], testNow},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := v.Verify(context.Background(), tt.tok, tt.now)
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("Verify = %+v, %v; want ErrInvalidToken", c, err)
			}
		})
	}
}

func TestJWKSRoundTrip(t *testing.T) {
	a, b := NewSigner(newKey(t), testIssuer, testAudience), NewSigner(newKey(t), testIssuer, testAudience)
	doc, err := json.Marshal(NewJWKS(a.Public(), b.Public()))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), `"kty":"OKP"`) || !strings.Contains(string(doc), `"crv":"Ed25519"`) {
		t.Fatalf("unexpected JWKS %s", doc)
	}
	keys, err := ParseJWKS(doc)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || !keys[a.KeyID()].Equal(a.Public()) || !keys[b.KeyID()].Equal(b.Public()) {
		t.Fatalf("parsed %v", keys)
	}
}

func TestParseJWKSHostile(t *testing.T) {
	for _, doc := range []string{
		``, `null x`, `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AAAA","kid":"k"}]}`,
		`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"` + strings.Repeat("A", 43) + `=","kid":"k"}]}`,
		`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"` + strings.Repeat("A", 43) + `"}]}`,
		`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"` + strings.Repeat("A", 43) + `","kid":"k"},{"kty":"OKP","crv":"Ed25519","x":"` + strings.Repeat("B", 43) + `","kid":"k"}]}`,
		`{"keys":"no"}`,
	} {
		if _, err := ParseJWKS([]byte(doc)); err == nil {
			t.Errorf("ParseJWKS(%q) accepted", doc)
		}
	}
	// Foreign key types are skipped, not errors.
	keys, err := ParseJWKS([]byte(`{"keys":[{"kty":"RSA","n":"x","e":"AQAB","kid":"r"},{"kty":"OKP","crv":"X25519","x":"AA","kid":"x"}]}`))
	if err != nil || len(keys) != 0 {
		t.Fatalf("foreign keys: %v %v", keys, err)
	}
}

func TestRemoteKeys(t *testing.T) {
	old := NewSigner(newKey(t), testIssuer, testAudience)
	cur := NewSigner(newKey(t), testIssuer, testAudience)
	var published atomic.Value
	published.Store(NewJWKS(old.Public()))
	var fetches atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(published.Load())
	}))
	defer srv.Close()
	rk := NewRemoteKeys(srv.URL, srv.Client())
	rk.MinInterval = 0
	v := NewVerifier(rk, testIssuer, testAudience)
	ctx := context.Background()

	tok, _, _ := old.Issue(testAccount(), 1, testNow, time.Hour)
	for range 3 {
		if _, err := v.Verify(ctx, tok, testNow); err != nil {
			t.Fatal(err)
		}
	}
	if n := fetches.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1 (cached)", n)
	}
	// Rotation: the new kid is unknown, which triggers a refetch.
	published.Store(NewJWKS(old.Public(), cur.Public()))
	tok2, _, _ := cur.Issue(testAccount(), 1, testNow, time.Hour)
	if _, err := v.Verify(ctx, tok2, testNow); err != nil {
		t.Fatal(err)
	}
	if n := fetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
	// With a minimum interval, unknown kids do not hammer the server.
	rk.MinInterval = time.Hour
	stranger := NewSigner(newKey(t), testIssuer, testAudience)
	tok3, _, _ := stranger.Issue(testAccount(), 1, testNow, time.Hour)
	for range 5 {
		if _, err := v.Verify(ctx, tok3, testNow); !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("stranger's token: %v", err)
		}
	}
	if n := fetches.Load(); n != 2 {
		t.Fatalf("%d fetches after unknown kids, want 2", n)
	}
}

func TestRemoteKeysServerDown(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	s := NewSigner(newKey(t), testIssuer, testAudience)
	v := NewVerifier(NewRemoteKeys(srv.URL, srv.Client()), testIssuer, testAudience)
	tok, _, _ := s.Issue(testAccount(), 1, testNow, time.Hour)
	if _, err := v.Verify(context.Background(), tok, testNow); !errors.Is(err, ErrInvalidToken) || errors.Is(err, ErrUnknownKey) {
		t.Fatalf("server down: %v", err)
	}
}

func FuzzVerify(f *testing.F) {
	key := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	s := NewSigner(key, testIssuer, testAudience)
	v := NewVerifier(KeysOf(s.Public()), testIssuer, testAudience)
	tok, _, err := s.Issue(testAccount(), 9, testNow, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tok)
	f.Add("")
	f.Add("a.b.c")
	f.Add(strings.ReplaceAll(tok, ".", ".."))
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := v.Verify(context.Background(), tok, testNow)
		if err != nil {
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("error does not wrap ErrInvalidToken: %v", err)
			}
			return
		}
		// Whatever verified must be a well-formed device claim set.
		if c.Device == 0 || c.ID == "" || c.Expires.Sub(c.IssuedAt) > MaxLifetime {
			t.Fatalf("accepted bad claims %+v", c)
		}
	})
}

func FuzzParseJWKS(f *testing.F) {
	doc, _ := json.Marshal(NewJWKS(ed25519.NewKeyFromSeed(make([]byte, 32)).Public().(ed25519.PublicKey)))
	f.Add(doc)
	f.Add([]byte(`{"keys":[]}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		keys, err := ParseJWKS(doc)
		if err != nil {
			return
		}
		for kid, k := range keys {
			if kid == "" || len(k) != ed25519.PublicKeySize {
				t.Fatalf("bad key %q %x", kid, k)
			}
		}
	})
}
