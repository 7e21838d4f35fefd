package crypto

import (
	"bytes"
	"crypto/ecdh"
	"errors"
	"strings"
	"testing"
	"time"
)

// envNow is the fixed clock of the envelope tests.
var envNow = time.Unix(1800000000, 0).UTC()

// envParty is one device with a sender certificate, for envelope tests.
type envParty struct {
	key  *IdentityPrivateKey
	addr Address
	cert *SenderCertificate
}

// envFixture holds a trust root and parties certified by it.
type envFixture struct {
	signer *CertificateSigner
	roots  []TrustRoot
}

func newEnvFixture(t testing.TB) *envFixture {
	t.Helper()
	signer, err := NewCertificateSigner(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return &envFixture{signer: signer, roots: []TrustRoot{signer.TrustRoot()}}
}

func (f *envFixture) party(t testing.TB, device DeviceID) *envParty {
	t.Helper()
	k := GenerateIdentityKey()
	addr := Address{Account: GenerateAccountKey().ID(), Device: device}
	cert, err := f.signer.Issue(addr, k.Public(), envNow.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return &envParty{key: k, addr: addr, cert: cert}
}

func TestSealedRoundTrip(t *testing.T) {
	f := newEnvFixture(t)
	alice, bob := f.party(t, 1), f.party(t, 2)
	for _, n := range []int{0, 1, 256, 5000} {
		content := bytes.Repeat([]byte{0xab}, n)
		env, err := Seal(alice.key, alice.cert, bob.key.Public(), content)
		if err != nil {
			t.Fatal(err)
		}
		if len(env) != SealedOverhead+len(alice.cert.Bytes())+n {
			t.Fatalf("envelope length %d", len(env))
		}
		if bytes.Contains(env, alice.key.Public().Bytes()) || bytes.Contains(env, alice.addr.Account[:]) {
			t.Fatal("envelope shows the sender in the clear")
		}
		cert, got, err := Open(bob.key, env, f.roots, envNow)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, content) || cert.Sender != alice.addr || !cert.Identity.Equal(alice.key.Public()) {
			t.Fatal("wrong content or sender")
		}
	}
}

func TestSealedTamperAndTruncate(t *testing.T) {
	f := newEnvFixture(t)
	alice, bob := f.party(t, 1), f.party(t, 2)
	env, err := Seal(alice.key, alice.cert, bob.key.Public(), []byte("sealed hello"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range env {
		for _, bit := range []byte{0x01, 0x80} {
			bad := bytes.Clone(env)
			bad[i] ^= bit
			cert, content, err := Open(bob.key, bad, f.roots, envNow)
			if err == nil || cert != nil || content != nil {
				t.Fatalf("flipped byte %d accepted", i)
			}
			if i > 0 && !errors.Is(err, ErrDecrypt) {
				t.Fatalf("flipped byte %d: %v, want ErrDecrypt", i, err)
			}
		}
	}
	for n := 0; n < len(env); n++ {
		if c, m, err := Open(bob.key, env[:n], f.roots, envNow); err == nil || c != nil || m != nil {
			t.Fatalf("truncation to %d accepted", n)
		}
	}
	if _, _, err := Open(bob.key, append(bytes.Clone(env), 0), f.roots, envNow); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("extension: %v", err)
	}
}

func TestSealedWrongRecipientAndCertificates(t *testing.T) {
	f := newEnvFixture(t)
	alice, bob, carol := f.party(t, 1), f.party(t, 2), f.party(t, 3)
	env, err := Seal(alice.key, alice.cert, bob.key.Public(), []byte("for bob"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Open(carol.key, env, f.roots, envNow); !errors.Is(err, ErrDecrypt) {
		t.Errorf("wrong recipient: %v", err)
	}
	if _, _, err := Open(bob.key, env, f.roots, envNow.Add(25*time.Hour)); !errors.Is(err, ErrCertificateExpired) {
		t.Errorf("expired certificate: %v", err)
	}
	foreign := newEnvFixture(t)
	foreign.signer, _ = NewCertificateSigner(bytes.Repeat([]byte{9}, 32))
	if _, _, err := Open(bob.key, env, []TrustRoot{foreign.signer.TrustRoot()}, envNow); !errors.Is(err, ErrUntrustedCertificate) {
		t.Errorf("foreign root: %v", err)
	}
	// Seal refuses a certificate for another key.
	if _, err := Seal(alice.key, carol.cert, bob.key.Public(), nil); err == nil {
		t.Error("Seal accepted someone else's certificate")
	}
	// A sender who authenticates as herself but carries Carol's certificate
	// is caught by the recipient.
	e, _ := ecdh.X25519().GenerateKey(nil)
	forged, err := sealEnvelope(keyPairFrom(e), alice.key, carol.cert, bob.key.Public(), []byte("I am Carol"))
	if err != nil {
		t.Fatal(err)
	}
	if c, m, err := Open(bob.key, forged, f.roots, envNow); !errors.Is(err, ErrSenderMismatch) || c != nil || m != nil {
		t.Errorf("identity mismatch: %v", err)
	}
}

func TestSealedHostile(t *testing.T) {
	f := newEnvFixture(t)
	bob := f.party(t, 2)
	zero := make([]byte, SealedOverhead+10)
	zero[0] = sealedVersion
	cases := map[string]struct {
		in   []byte
		want error
	}{
		// bad lengths and versions
		"empty":     {nil, ErrMalformed},
		"short":     {[]byte{sealedVersion, 1, 2, 3}, ErrMalformed},
		"version 0": {make([]byte, SealedOverhead+10), ErrMalformed},
		"version 2": {append([]byte{2}, make([]byte, SealedOverhead+10)...), ErrMalformed},
		"too large": {append([]byte{sealedVersion}, make([]byte, maxSealedEnvelopeSize)...), ErrMalformed},
		// low-order ephemeral key: the all-zero Diffie-Hellman result is refused
		"zero ephemeral": {zero, ErrDecrypt},
	}
	for name, c := range cases {
		cert, content, err := Open(bob.key, c.in, f.roots, envNow)
		if !errors.Is(err, c.want) || cert != nil || content != nil {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "crypto: ") {
			t.Errorf("%s: error without prefix: %v", name, err)
		}
	}
}

func FuzzOpenSealed(f *testing.F) {
	for _, seed := range envVectorHex(f, "sealed.txt", "envelope") {
		f.Add(seed)
	}
	fx := newEnvFixture(f)
	alice, bob := fx.party(f, 1), fx.party(f, 2)
	env, err := Seal(alice.key, alice.cert, bob.key.Public(), []byte("seed"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(env)
	f.Add([]byte{sealedVersion})
	f.Fuzz(func(t *testing.T, in []byte) {
		cert, content, err := Open(bob.key, in, fx.roots, envNow)
		if err != nil {
			if cert != nil || content != nil {
				t.Fatal("non-nil result on error")
			}
			return
		}
		// Only Alice can make an envelope that opens.
		if !cert.Identity.Equal(alice.key.Public()) {
			t.Fatal("opened an envelope from an unknown sender")
		}
	})
}

func genSealedVectors(t *testing.T, w *vectorWriter) {
	w.comment("Sealed sender envelope (PROTOCOL.md §5.2). Keys are Ed25519 seeds; the")
	w.comment("certificate is verified at now against trust_root; envelope opens with recipient_seed.")
	signer, err := NewCertificateSigner(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	sender, recipient := GenerateIdentityKey(), GenerateIdentityKey()
	addr := Address{Account: GenerateAccountKey().ID(), Device: 1}
	cert, err := signer.Issue(addr, sender.Public(), envNow.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	content := []byte("a ratchet message would go here")
	env, err := Seal(sender, cert, recipient.Public(), content)
	if err != nil {
		t.Fatal(err)
	}
	roots := []TrustRoot{signer.TrustRoot()}
	if _, got, err := Open(recipient, env, roots, envNow); err != nil || !bytes.Equal(got, content) {
		t.Fatal("vector does not open", err)
	}
	w.hex("trust_root", signer.TrustRoot().Bytes())
	w.num("now", uint64(envNow.Unix()))
	w.hex("sender_seed", sender.Seed())
	w.hex("recipient_seed", recipient.Seed())
	w.hex("sender_certificate", cert.Bytes())
	w.hex("content", content)
	w.hex("envelope", env)
	w.text("expect", "success")
	w.end()
	bad := bytes.Clone(env)
	bad[len(bad)-1] ^= 1
	if _, _, err := Open(recipient, bad, roots, envNow); !errors.Is(err, ErrDecrypt) {
		t.Fatal("tampered vector opens")
	}
	w.comment("The same envelope with its last byte flipped.")
	w.hex("envelope", bad)
	w.text("expect", "decrypt failure")
	w.end()
}
