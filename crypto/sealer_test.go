package crypto

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func mustSealer(t testing.TB, ik *IdentityPrivateKey, n int) *Sealer {
	t.Helper()
	s, err := NewSealer(ik, n)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSealerSameBytesAsSeal checks that a Sealer's envelope is byte for
// byte the one Seal makes with the same ephemeral key, with a cold and a
// warm cache, and that Sealer.Open opens the committed vectors.
func TestSealerSameBytesAsSeal(t *testing.T) {
	f := newEnvFixture(t)
	alice, bob := f.party(t, 1), f.party(t, 2)
	s := mustSealer(t, alice.key, 0)
	for i := range 3 {
		e, err := ecdh.X25519().GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		content := bytes.Repeat([]byte{byte(i)}, 100*i)
		want, err := sealEnvelope(keyPairFrom(e), alice.key, alice.cert, bob.key.Public(), content)
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.sealWith(keyPairFrom(e), alice.cert, bob.key.Public(), content)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("message %d: Sealer's envelope differs from Seal's", i)
		}
	}

	// The committed vectors, opened twice by one Sealer (cold, then warm).
	var roots []TrustRoot
	var now time.Time
	var recipient *Sealer
	var content []byte
	for round := range 2 {
		for _, c := range envVectorCases(t, "sealed.txt") {
			if v, ok := c["trust_root"]; ok {
				r, err := NewTrustRoot(mustHex(t, v))
				if err != nil {
					t.Fatal(err)
				}
				roots = []TrustRoot{r}
				now = time.Unix(1800000000, 0)
			}
			if v, ok := c["recipient_seed"]; ok && recipient == nil {
				k, err := NewIdentityPrivateKey(mustHex(t, v))
				if err != nil {
					t.Fatal(err)
				}
				recipient = mustSealer(t, k, 0)
			}
			if v, ok := c["content"]; ok {
				content = mustHex(t, v)
			}
			cert, got, err := recipient.Open(mustHex(t, c["envelope"]), roots, now)
			switch c["expect"] {
			case "success":
				if err != nil || !bytes.Equal(got, content) || !bytes.Equal(cert.Bytes(), mustHex(t, c["sender_certificate"])) {
					t.Fatalf("round %d: vector: %v", round, err)
				}
			case "decrypt failure":
				if !errors.Is(err, ErrDecrypt) || cert != nil || got != nil {
					t.Fatalf("round %d: tampered vector: %v", round, err)
				}
			}
		}
	}
}

// TestSealerInterop checks that Seal, Open and Sealers of both parties
// interoperate in every combination, many times (warm caches).
func TestSealerInterop(t *testing.T) {
	f := newEnvFixture(t)
	alice, bob := f.party(t, 1), f.party(t, 2)
	as, bs := mustSealer(t, alice.key, 0), mustSealer(t, bob.key, 0)
	type sealFn func(content []byte) ([]byte, error)
	type openFn func(env []byte) (*SenderCertificate, []byte, error)
	seals := map[string]sealFn{
		"Seal": func(c []byte) ([]byte, error) { return Seal(alice.key, alice.cert, bob.key.Public(), c) },
		"Sealer.Seal": func(c []byte) ([]byte, error) {
			return as.Seal(alice.cert, bob.key.Public(), c)
		},
	}
	opens := map[string]openFn{
		"Open":        func(e []byte) (*SenderCertificate, []byte, error) { return Open(bob.key, e, f.roots, envNow) },
		"Sealer.Open": func(e []byte) (*SenderCertificate, []byte, error) { return bs.Open(e, f.roots, envNow) },
	}
	for sn, seal := range seals {
		for on, open := range opens {
			for i := range 3 {
				content := fmt.Appendf(nil, "%s -> %s #%d", sn, on, i)
				env, err := seal(content)
				if err != nil {
					t.Fatal(err)
				}
				cert, got, err := open(env)
				if err != nil || !bytes.Equal(got, content) || cert.Sender != alice.addr || !cert.Identity.Equal(alice.key.Public()) {
					t.Fatalf("%s then %s: %v", sn, on, err)
				}
			}
		}
	}
	// Bob answers with his own Sealer: the cached static DH serves both
	// directions.
	env, err := bs.Seal(bob.cert, alice.key.Public(), []byte("reply"))
	if err != nil {
		t.Fatal(err)
	}
	if _, got, err := as.Open(env, f.roots, envNow); err != nil || string(got) != "reply" {
		t.Fatalf("reply: %v", err)
	}
	if len(as.dh) != 1 || len(bs.dh) != 1 {
		t.Fatalf("static DH cache sizes %d, %d, want 1, 1", len(as.dh), len(bs.dh))
	}
}

// TestSealerCachedCertificateChecks checks that a certificate found in
// the cache is still checked against each call's roots and time, and
// against the key that authenticated the envelope.
func TestSealerCachedCertificateChecks(t *testing.T) {
	f := newEnvFixture(t)
	alice, bob, carol := f.party(t, 1), f.party(t, 2), f.party(t, 3)
	bs := mustSealer(t, bob.key, 0)
	env, err := Seal(alice.key, alice.cert, bob.key.Public(), []byte("hi"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := bs.Open(env, f.roots, envNow); err != nil {
		t.Fatal(err)
	}
	if len(bs.cert) != 1 {
		t.Fatalf("certificate not cached: %d entries", len(bs.cert))
	}
	foreign, _ := NewCertificateSigner(bytes.Repeat([]byte{9}, 32))
	cases := []struct {
		name  string
		roots []TrustRoot
		now   time.Time
		want  error
	}{
		{"expired", f.roots, alice.cert.Expires, ErrCertificateExpired},
		{"long expired", f.roots, alice.cert.Expires.Add(time.Hour), ErrCertificateExpired},
		{"expiry too far ahead", f.roots, alice.cert.Expires.Add(-MaxSenderCertLifetime - time.Second), ErrUntrustedCertificate},
		{"root no longer trusted", []TrustRoot{foreign.TrustRoot()}, envNow, ErrUntrustedCertificate},
		{"no roots", nil, envNow, ErrUntrustedCertificate},
	}
	for _, c := range cases {
		cert, content, err := bs.Open(env, c.roots, c.now)
		if !errors.Is(err, c.want) || cert != nil || content != nil {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
		// Open without a cache agrees.
		if _, _, err2 := Open(bob.key, env, c.roots, c.now); !errors.Is(err2, c.want) {
			t.Errorf("%s: Open: %v, want %v", c.name, err2, c.want)
		}
	}
	// Both roots trusted: the cached entry still serves.
	if _, _, err := bs.Open(env, []TrustRoot{foreign.TrustRoot(), f.roots[0]}, envNow); err != nil {
		t.Fatal(err)
	}

	// Alice authenticates as herself but carries Carol's certificate, which
	// Bob has cached from an honest envelope of Carol's.
	honest, err := Seal(carol.key, carol.cert, bob.key.Public(), []byte("from carol"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := bs.Open(honest, f.roots, envNow); err != nil {
		t.Fatal(err)
	}
	e, _ := ecdh.X25519().GenerateKey(rand.Reader)
	forged, err := sealEnvelope(keyPairFrom(e), alice.key, carol.cert, bob.key.Public(), []byte("I am Carol"))
	if err != nil {
		t.Fatal(err)
	}
	if c, m, err := bs.Open(forged, f.roots, envNow); !errors.Is(err, ErrSenderMismatch) || c != nil || m != nil {
		t.Errorf("identity mismatch with a cached certificate: %v", err)
	}

	// The returned certificate is the caller's: changing it changes
	// nothing in the cache.
	cert, _, err := bs.Open(env, f.roots, envNow)
	if err != nil {
		t.Fatal(err)
	}
	cert.Sender = carol.addr
	cert.Identity = carol.key.Public()
	cert.Expires = envNow.Add(-time.Hour)
	again, _, err := bs.Open(env, f.roots, envNow)
	if err != nil || again.Sender != alice.addr || !again.Identity.Equal(alice.key.Public()) {
		t.Fatalf("cache changed through a returned certificate: %v", err)
	}
}

// TestSealerBounded checks the caches' bound and that forged envelopes
// do not enter the static DH cache.
func TestSealerBounded(t *testing.T) {
	f := newEnvFixture(t)
	bob := f.party(t, 2)
	bs := mustSealer(t, bob.key, 2)
	var senders []*envParty
	for i := range 5 {
		senders = append(senders, f.party(t, DeviceID(10+i)))
	}
	for round := range 2 {
		for i, p := range senders {
			env, err := Seal(p.key, p.cert, bob.key.Public(), []byte{byte(i)})
			if err != nil {
				t.Fatal(err)
			}
			if _, got, err := bs.Open(env, f.roots, envNow); err != nil || !bytes.Equal(got, []byte{byte(i)}) {
				t.Fatalf("round %d sender %d: %v", round, i, err)
			}
			if len(bs.dh) > 2 || len(bs.cert) > 2 {
				t.Fatalf("cache sizes %d, %d above the bound 2", len(bs.dh), len(bs.cert))
			}
		}
	}

	// An envelope whose first layer names an arbitrary sender key, with a
	// second layer that cannot authenticate: refused, not cached.
	fresh := mustSealer(t, bob.key, 0)
	for range 3 {
		mallory := GenerateIdentityKey()
		e, _ := ecdh.X25519().GenerateKey(rand.Reader)
		env, err := sealEnvelope(keyPairFrom(e), mallory, f.party(t, 9).cert, bob.key.Public(), []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		// Mallory's envelope carries someone else's certificate: the AEAD
		// opens but the certificate check fails.
		if _, _, err := fresh.Open(env, f.roots, envNow); !errors.Is(err, ErrSenderMismatch) {
			t.Fatalf("forged: %v", err)
		}
		env[len(env)-1] ^= 1
		if _, _, err := fresh.Open(env, f.roots, envNow); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("forged, tampered: %v", err)
		}
	}
	if len(fresh.dh) != 0 {
		t.Fatalf("%d refused envelopes entered the static DH cache", len(fresh.dh))
	}
}

// TestSealerMulti checks Sealer.OpenMulti against OpenMulti.
func TestSealerMulti(t *testing.T) {
	f := newEnvFixture(t)
	alice, bob := f.party(t, 1), f.party(t, 2)
	bs := mustSealer(t, bob.key, 0)
	for i := range 3 {
		content := []byte(fmt.Sprintf("to everyone #%d", i))
		body, headers, err := SealMulti(alice.key, alice.cert, []MultiRecipient{{Address: bob.addr, Identity: bob.key.Public()}}, content)
		if err != nil {
			t.Fatal(err)
		}
		h := headers[0].Header
		cert, got, err := bs.OpenMulti(h, body, f.roots, envNow)
		if err != nil || !bytes.Equal(got, content) || cert.Sender != alice.addr {
			t.Fatalf("OpenMulti #%d: %v", i, err)
		}
		if _, _, err := bs.OpenMulti(h, body, f.roots, alice.cert.Expires); !errors.Is(err, ErrCertificateExpired) {
			t.Fatalf("expired: %v", err)
		}
		bad := bytes.Clone(body)
		bad[len(bad)-1] ^= 1
		if c, m, err := bs.OpenMulti(h, bad, f.roots, envNow); !errors.Is(err, ErrDecrypt) || c != nil || m != nil {
			t.Fatalf("tampered body: %v", err)
		}
	}
}

// TestSealerSealMulti checks that a Sealer's multi-recipient message is
// byte for byte SealMulti's for the same message key and ephemeral key,
// cold and warm, and opens with OpenMulti.
func TestSealerSealMulti(t *testing.T) {
	f := newEnvFixture(t)
	alice := f.party(t, 1)
	var rs []MultiRecipient
	var keys []*IdentityPrivateKey
	for i := range 3 {
		p := f.party(t, DeviceID(2+i))
		rs = append(rs, MultiRecipient{Address: p.addr, Identity: p.key.Public()})
		keys = append(keys, p.key)
	}
	as := mustSealer(t, alice.key, 0)
	for round := range 2 {
		m := bytes.Repeat([]byte{byte(round + 1)}, 32)
		e, _ := ecdh.X25519().GenerateKey(rand.Reader)
		wantBody, wantHeaders, err := sealMulti(m, keyPairFrom(e), alice.key, alice.key.dh, alice.cert, rs, []byte("hello all"))
		if err != nil {
			t.Fatal(err)
		}
		body, headers, err := sealMulti(m, keyPairFrom(e), alice.key, as.sealDH, alice.cert, rs, []byte("hello all"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(body, wantBody) {
			t.Fatalf("round %d: body differs", round)
		}
		for i := range headers {
			if !bytes.Equal(headers[i].Header, wantHeaders[i].Header) || headers[i].Address != wantHeaders[i].Address {
				t.Fatalf("round %d: header %d differs", round, i)
			}
		}
	}
	body, headers, err := as.SealMulti(alice.cert, rs, []byte("via Sealer.SealMulti"))
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range headers {
		if _, got, err := OpenMulti(keys[i], h.Header, body, f.roots, envNow); err != nil || string(got) != "via Sealer.SealMulti" {
			t.Fatalf("recipient %d: %v", i, err)
		}
	}
	if len(as.dh) != len(rs) {
		t.Fatalf("%d cached static DH outputs, want %d", len(as.dh), len(rs))
	}
	if _, _, err := as.SealMulti(alice.cert, append(rs, rs[0]), nil); err == nil {
		t.Fatal("duplicate recipient accepted")
	}
}

// TestSealerConcurrent uses one Sealer from several goroutines (CI runs
// the tests with -race).
func TestSealerConcurrent(t *testing.T) {
	f := newEnvFixture(t)
	bob := f.party(t, 2)
	bs := mustSealer(t, bob.key, 3)
	parties := []*envParty{f.party(t, 1), f.party(t, 3), f.party(t, 4), f.party(t, 5)}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			ps := mustSealer(t, parties[g].key, 0)
			for i := range 4 {
				env, err := ps.Seal(parties[g].cert, bob.key.Public(), []byte{byte(g), byte(i)})
				if err != nil {
					t.Error(err)
					return
				}
				if _, got, err := bs.Open(env, f.roots, envNow); err != nil || !bytes.Equal(got, []byte{byte(g), byte(i)}) {
					t.Error(err)
					return
				}
				if _, err := bs.Seal(bob.cert, parties[g].key.Public(), []byte("ack")); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestSealerHostile(t *testing.T) {
	f := newEnvFixture(t)
	bob := f.party(t, 2)
	bs := mustSealer(t, bob.key, 0)
	zero := make([]byte, SealedOverhead+10)
	zero[0] = sealedVersion
	for name, c := range map[string]struct {
		in   []byte
		want error
	}{
		"empty":          {nil, ErrMalformed},
		"short":          {[]byte{sealedVersion, 1, 2, 3}, ErrMalformed},
		"version 0":      {make([]byte, SealedOverhead+10), ErrMalformed},
		"too large":      {append([]byte{sealedVersion}, make([]byte, maxSealedEnvelopeSize)...), ErrMalformed},
		"zero ephemeral": {zero, ErrDecrypt},
	} {
		cert, content, err := bs.Open(c.in, f.roots, envNow)
		if !errors.Is(err, c.want) || cert != nil || content != nil {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
	if _, err := NewSealer(nil, 0); err == nil {
		t.Error("NewSealer accepted a nil key")
	}
	alice := f.party(t, 1)
	as := mustSealer(t, alice.key, 0)
	if _, err := as.Seal(bob.cert, bob.key.Public(), nil); err == nil {
		t.Error("Sealer.Seal accepted someone else's certificate")
	}
	if _, err := as.Seal(alice.cert, IdentityKey{}, nil); err == nil {
		t.Error("Sealer.Seal accepted a zero recipient")
	}
}

// FuzzSealerOpen checks that Sealer.Open (its caches warmed by honest
// envelopes) and Open agree on every input.
func FuzzSealerOpen(f *testing.F) {
	for _, seed := range envVectorHex(f, "sealed.txt", "envelope") {
		f.Add(seed)
	}
	fx := newEnvFixture(f)
	alice, bob := fx.party(f, 1), fx.party(f, 2)
	bs := mustSealer(f, bob.key, 4)
	env, err := Seal(alice.key, alice.cert, bob.key.Public(), []byte("seed"))
	if err != nil {
		f.Fatal(err)
	}
	if _, _, err := bs.Open(env, fx.roots, envNow); err != nil {
		f.Fatal(err)
	}
	f.Add(env)
	f.Add([]byte{sealedVersion})
	f.Fuzz(func(t *testing.T, in []byte) {
		cert, content, err := bs.Open(in, fx.roots, envNow)
		wantCert, wantContent, wantErr := Open(bob.key, in, fx.roots, envNow)
		if (err == nil) != (wantErr == nil) || (err != nil && err.Error() != wantErr.Error()) {
			t.Fatalf("Sealer.Open: %v; Open: %v", err, wantErr)
		}
		if err != nil {
			if cert != nil || content != nil {
				t.Fatal("non-nil result on error")
			}
			return
		}
		if !bytes.Equal(content, wantContent) || !bytes.Equal(cert.Bytes(), wantCert.Bytes()) {
			t.Fatal("Sealer.Open and Open return different results")
		}
	})
}
