package crypto

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func TestAccountIDRoundTrip(t *testing.T) {
	k := GenerateAccountKey()
	id := k.ID()
	s := id.String()
	if len(s) != 32 {
		t.Fatalf("text form %q has length %d", s, len(s))
	}
	got, err := ParseAccountID(s)
	if err != nil || got != id {
		t.Fatalf("ParseAccountID(%q) = %v, %v", s, got, err)
	}
	for _, bad := range []string{"", s[:31], s + "a", s[:31] + "1", s[:31] + "!"} {
		if _, err := ParseAccountID(bad); !errors.Is(err, ErrInvalidAccountID) {
			t.Errorf("ParseAccountID(%q) err = %v", bad, err)
		}
	}
}

func TestIdentityX25519FormMatches(t *testing.T) {
	// The X25519 public key derived from the Ed25519 public key must be the
	// public key of the X25519 scalar derived from the seed, or DH would fail.
	for range 20 {
		k := GenerateIdentityKey()
		if !bytes.Equal(k.x.PublicKey().Bytes(), k.pub.X25519().Bytes()) {
			t.Fatal("X25519 forms of the private and public identity differ")
		}
	}
}

func TestIdentityKeyRejectsSmallOrder(t *testing.T) {
	identity := make([]byte, 32)
	identity[0] = 1 // the neutral element
	if _, err := NewIdentityKey(identity); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("neutral element accepted: %v", err)
	}
	if _, err := NewIdentityKey(make([]byte, 31)); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("short key accepted: %v", err)
	}
}

func testDeviceList(t *testing.T, ak *AccountPrivateKey, version uint64, ids ...DeviceID) (*DeviceList, []byte) {
	t.Helper()
	l := &DeviceList{AccountKey: ak.Public(), Version: version}
	for _, id := range ids {
		l.Devices = append(l.Devices, Device{ID: id, Identity: GenerateIdentityKey().Public(), Added: time.Unix(1700000000, 0).UTC()})
	}
	signed, err := SignDeviceList(ak, l)
	if err != nil {
		t.Fatal(err)
	}
	return l, signed
}

func TestDeviceList(t *testing.T) {
	ak := GenerateAccountKey()
	l, signed := testDeviceList(t, ak, 3, 1, 2)
	got, err := VerifyDeviceList(signed, ak.ID())
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != 3 || len(got.Devices) != 2 || !got.Devices[1].Identity.Equal(l.Devices[1].Identity) {
		t.Fatalf("round trip mismatch: %+v", got)
	}
	var mismatch *AccountMismatchError
	if _, err := VerifyDeviceList(signed, GenerateAccountKey().ID()); !errors.As(err, &mismatch) {
		t.Fatalf("foreign account accepted: %v", err)
	}
	for i := range signed {
		bad := bytes.Clone(signed)
		bad[i] ^= 0x40
		if _, err := VerifyDeviceList(bad, ak.ID()); err == nil {
			t.Fatalf("flipped byte %d accepted", i)
		}
	}
	for n := range len(signed) {
		if _, err := ParseSignedDeviceList(signed[:n]); err == nil {
			t.Fatalf("truncation to %d accepted", n)
		}
	}
	next, _ := testDeviceList(t, ak, 3, 1)
	if err := next.CheckSuccessor(got); !errors.Is(err, ErrStaleDeviceList) {
		t.Fatalf("equal version accepted: %v", err)
	}
	next.Version = 4
	if err := next.CheckSuccessor(got); err != nil {
		t.Fatal(err)
	}
	if _, err := SignDeviceList(ak, &DeviceList{AccountKey: ak.Public(), Version: 1, Devices: []Device{{ID: 2, Identity: l.Devices[0].Identity}, {ID: 1, Identity: l.Devices[1].Identity}}}); err == nil {
		t.Fatal("unsorted device IDs accepted")
	}
}

func TestPreKeyBundle(t *testing.T) {
	ik := GenerateIdentityKey()
	spk := GenerateSignedPreKey(ik, 7)
	kpk := GenerateKEMPreKey(ik, 8, true)
	opk := GenerateOneTimePreKey(9)
	b := &PreKeyBundle{Address: Address{Account: GenerateAccountKey().ID(), Device: 1}, Identity: ik.Public(),
		SignedPreKey: spk.SignedPreKey, KEMPreKey: kpk.KEMPreKey, OneTimePreKey: &opk.OneTimePreKey}
	enc, err := b.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParsePreKeyBundle(enc)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := got.MarshalBinary()
	if !bytes.Equal(enc, again) {
		t.Fatal("parse then marshal differs")
	}
	for n := range len(enc) {
		if _, err := ParsePreKeyBundle(enc[:n]); err == nil {
			t.Fatalf("truncation to %d accepted", n)
		}
	}
	// Flip a byte of each signature-covered region.
	for _, i := range []int{30, 60, 100, 200, 1300} {
		bad := bytes.Clone(enc)
		bad[i] ^= 1
		if _, err := ParsePreKeyBundle(bad); err == nil {
			t.Fatalf("flipped byte %d accepted", i)
		}
	}
	other := GenerateIdentityKey()
	spkBytes, _ := spk.MarshalBinary()
	if _, err := ParseSignedPreKey(spkBytes, other.Public()); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("signed prekey verified under another identity: %v", err)
	}
}

func TestSenderCertificate(t *testing.T) {
	seed := bytes.Repeat([]byte{7}, 32)
	signer, err := NewCertificateSigner(seed)
	if err != nil {
		t.Fatal(err)
	}
	ik := GenerateIdentityKey().Public()
	now := time.Unix(1800000000, 0)
	sender := Address{Account: GenerateAccountKey().ID(), Device: 2}
	c, err := signer.Issue(sender, ik, now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	roots := []TrustRoot{signer.TrustRoot()}
	got, err := ParseSenderCertificate(c.Bytes(), roots, now)
	if err != nil || got.Sender != sender || !got.Identity.Equal(ik) {
		t.Fatalf("parse: %v %+v", err, got)
	}
	if _, err := ParseSenderCertificate(c.Bytes(), roots, now.Add(25*time.Hour)); !errors.Is(err, ErrCertificateExpired) {
		t.Fatalf("expired accepted: %v", err)
	}
	foreign, _ := NewCertificateSigner(bytes.Repeat([]byte{8}, 32))
	if _, err := ParseSenderCertificate(c.Bytes(), []TrustRoot{foreign.TrustRoot()}, now); !errors.Is(err, ErrUntrustedCertificate) {
		t.Fatalf("foreign root accepted: %v", err)
	}
	raw := c.Bytes()
	for i := range raw {
		bad := bytes.Clone(raw)
		bad[i] ^= 0x10
		if _, err := ParseSenderCertificate(bad, roots, now); err == nil {
			t.Fatalf("flipped byte %d accepted", i)
		}
	}
	root, err := ParseTrustRoot(signer.TrustRoot().String())
	if err != nil || root != signer.TrustRoot() {
		t.Fatalf("trust root text round trip: %v", err)
	}
}

func TestAccountDeletionSignature(t *testing.T) {
	ak := GenerateAccountKey()
	challenge := bytes.Repeat([]byte{3}, 32)
	sig := ak.SignAccountDeletion(challenge)
	if err := ak.Public().VerifyAccountDeletion(challenge, sig); err != nil {
		t.Fatal(err)
	}
	if err := GenerateAccountKey().Public().VerifyAccountDeletion(challenge, sig); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("another account's key accepted: %v", err)
	}
	if err := ak.Public().VerifyAccountDeletion(bytes.Repeat([]byte{4}, 32), sig); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("another challenge accepted: %v", err)
	}
	// A login signature by a device key over the same challenge is no deletion.
	ik := GenerateIdentityKey()
	if err := ak.Public().VerifyAccountDeletion(challenge, ik.SignLoginChallenge(challenge)); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("login signature accepted: %v", err)
	}
}
