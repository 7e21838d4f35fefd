package crypto

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"testing"
	"time"
)

func multiFixture(t testing.TB, n int) (*envFixture, *envParty, []*envParty, []MultiRecipient) {
	t.Helper()
	f := newEnvFixture(t)
	alice := f.party(t, 1)
	var parties []*envParty
	var rs []MultiRecipient
	for i := range n {
		p := f.party(t, DeviceID(i+2))
		parties = append(parties, p)
		rs = append(rs, MultiRecipient{Address: p.addr, Identity: p.key.Public()})
	}
	return f, alice, parties, rs
}

func TestMultiRoundTrip(t *testing.T) {
	f, alice, parties, rs := multiFixture(t, 3)
	content := []byte("one body for everyone")
	body, headers, err := SealMulti(alice.key, alice.cert, rs, content)
	if err != nil {
		t.Fatal(err)
	}
	if len(body) != MultiBodyOverhead+len(alice.cert.Bytes())+len(content) {
		t.Fatalf("body length %d", len(body))
	}
	if bytes.Contains(body, alice.key.Public().Bytes()) || bytes.Contains(body, alice.key.Public().X25519().Bytes()) {
		t.Fatal("body shows the sender")
	}
	for i, p := range parties {
		if headers[i].Address != p.addr || len(headers[i].Header) != MultiHeaderSize {
			t.Fatalf("header %d: %v, %d bytes", i, headers[i].Address, len(headers[i].Header))
		}
		cert, got, err := OpenMulti(p.key, headers[i].Header, body, f.roots, envNow)
		if err != nil || !bytes.Equal(got, content) || cert.Sender != alice.addr {
			t.Fatalf("recipient %d: %v", i, err)
		}
		// Another recipient's header does not open for this device.
		other := headers[(i+1)%len(headers)].Header
		if _, _, err := OpenMulti(p.key, other, body, f.roots, envNow); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("recipient %d with foreign header: %v", i, err)
		}
	}
}

func TestMultiTamperAndTruncate(t *testing.T) {
	f, alice, parties, rs := multiFixture(t, 1)
	bob := parties[0]
	body, headers, err := SealMulti(alice.key, alice.cert, rs, []byte("hi"))
	if err != nil {
		t.Fatal(err)
	}
	h := headers[0].Header
	for i := range body {
		bad := bytes.Clone(body)
		bad[i] ^= 0x01
		if c, m, err := OpenMulti(bob.key, h, bad, f.roots, envNow); err == nil || c != nil || m != nil {
			t.Fatalf("body byte %d flip accepted", i)
		}
	}
	for i := range h {
		bad := bytes.Clone(h)
		bad[i] ^= 0x01
		if _, _, err := OpenMulti(bob.key, bad, body, f.roots, envNow); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("header byte %d flip: %v", i, err)
		}
	}
	for n := range len(body) {
		if _, _, err := OpenMulti(bob.key, h, body[:n], f.roots, envNow); err == nil {
			t.Fatalf("body truncated to %d accepted", n)
		}
	}
	for n := range len(h) {
		if _, _, err := OpenMulti(bob.key, h[:n], body, f.roots, envNow); !errors.Is(err, ErrMalformed) {
			t.Fatalf("header truncated to %d: %v", n, err)
		}
	}
	// Expired certificate and foreign root.
	if _, _, err := OpenMulti(bob.key, h, body, f.roots, alice.cert.Expires); !errors.Is(err, ErrCertificateExpired) {
		t.Errorf("expired: %v", err)
	}
	if _, _, err := OpenMulti(bob.key, h, body, nil, envNow); !errors.Is(err, ErrUntrustedCertificate) {
		t.Errorf("no roots: %v", err)
	}
}

// TestMultiCoRecipientCannotSubstituteBody checks that a recipient, who
// learns the message key, cannot re-encrypt a different body under the
// sender's name for another recipient.
func TestMultiCoRecipientCannotSubstituteBody(t *testing.T) {
	f, alice, parties, rs := multiFixture(t, 2)
	bob, carol := parties[0], parties[1]
	body, headers, err := SealMulti(alice.key, alice.cert, rs, []byte("original"))
	if err != nil {
		t.Fatal(err)
	}
	// Bob recovers M exactly as OpenMulti does.
	ephPub := body[1 : 1+PublicKeySize]
	eph, _ := bob.key.Public().X25519().Curve().NewPublicKey(ephPub)
	dh, err := bob.key.dh(eph)
	if err != nil {
		t.Fatal(err)
	}
	m := make([]byte, 32)
	subtle.XORBytes(m, headers[0].Header[:32], multiKeyPad(dh, ephPub, bob.key.Public().X25519().Bytes()))
	bodyKey, _ := multiBodyKeys(m, ephPub)
	inner := append(alice.key.Public().X25519().Bytes(), byte(len(alice.cert.raw)>>8), byte(len(alice.cert.raw)))
	inner = append(inner, alice.cert.raw...)
	inner = append(inner, "forged by bob"...)
	forged := envelopeGCM(bodyKey).Seal(bytes.Clone(body[:multiBodyPrefixSize]), zeroNonce[:], inner, body[:1+PublicKeySize])
	if _, _, err := OpenMulti(carol.key, headers[1].Header, forged, f.roots, envNow); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("substituted body: %v", err)
	}
	if sha256.Sum256(forged) == sha256.Sum256(body) {
		t.Fatal("test did not change the body")
	}
}

func TestSealMultiRejects(t *testing.T) {
	_, alice, parties, rs := multiFixture(t, 1)
	if _, _, err := SealMulti(alice.key, alice.cert, nil, nil); err == nil {
		t.Error("no recipients accepted")
	}
	if _, _, err := SealMulti(alice.key, alice.cert, append(rs, rs[0]), nil); err == nil {
		t.Error("duplicate recipient accepted")
	}
	if _, _, err := SealMulti(alice.key, alice.cert, []MultiRecipient{{Address: parties[0].addr}}, nil); err == nil {
		t.Error("zero identity accepted")
	}
}

func FuzzOpenMulti(f *testing.F) {
	cases := envVectorCases(f, "multirecipient.txt")
	body := mustHex(f, cases[0]["body"])
	for _, c := range cases[1:] {
		f.Add(append(mustHex(f, c["header"]), body...))
	}
	fx, alice, parties, rs := multiFixture(f, 1)
	body, headers, err := SealMulti(alice.key, alice.cert, rs, []byte("seed"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(append(bytes.Clone(headers[0].Header), body...))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < MultiHeaderSize {
			return
		}
		cert, content, err := OpenMulti(parties[0].key, in[:MultiHeaderSize], in[MultiHeaderSize:], fx.roots, envNow)
		if err != nil {
			if cert != nil || content != nil {
				t.Fatal("non-nil result on error")
			}
			return
		}
		if !cert.Identity.Equal(alice.key.Public()) {
			t.Fatal("opened a message from an unknown sender")
		}
	})
}

func genMultiVectors(t *testing.T, w *vectorWriter) {
	w.comment("Multi-recipient message (PROTOCOL.md §6): one body, one 48-byte header per device.")
	w.comment("Each recipient opens header || body with its identity seed.")
	signer, err := NewCertificateSigner(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	sender := GenerateIdentityKey()
	addr := Address{Account: GenerateAccountKey().ID(), Device: 1}
	cert, err := signer.Issue(addr, sender.Public(), envNow.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var keys []*IdentityPrivateKey
	var rs []MultiRecipient
	for i := range 2 {
		k := GenerateIdentityKey()
		keys = append(keys, k)
		rs = append(rs, MultiRecipient{Address: Address{Account: GenerateAccountKey().ID(), Device: DeviceID(i + 1)}, Identity: k.Public()})
	}
	content := []byte("a sender-key group message would go here")
	body, headers, err := SealMulti(sender, cert, rs, content)
	if err != nil {
		t.Fatal(err)
	}
	w.hex("trust_root", signer.TrustRoot().Bytes())
	w.num("now", uint64(envNow.Unix()))
	w.hex("sender_seed", sender.Seed())
	w.hex("sender_certificate", cert.Bytes())
	w.hex("content", content)
	w.hex("body", body)
	w.end()
	for i, h := range headers {
		if _, got, err := OpenMulti(keys[i], h.Header, body, []TrustRoot{signer.TrustRoot()}, envNow); err != nil || !bytes.Equal(got, content) {
			t.Fatal("vector does not open", err)
		}
		w.text("recipient", h.Address.String())
		w.hex("recipient_seed", keys[i].Seed())
		w.hex("header", h.Header)
		w.text("expect", "success")
		w.end()
	}
}

// TestGroupMessageThroughMultiRecipient runs the path a client takes for a
// group message: pad, encrypt once with the sender key, seal once for all
// member devices, and on each device open, find the receiver and decrypt.
func TestGroupMessageThroughMultiRecipient(t *testing.T) {
	f, alice, parties, rs := multiFixture(t, 3)
	group := GroupID{7}
	sk := NewSenderKey(group)
	receivers := map[Address]*GroupReceiver{}
	for _, p := range parties {
		r := NewGroupReceiver(group)
		if err := r.Process(sk.Distribution()); err != nil {
			t.Fatal(err)
		}
		receivers[p.addr] = r
	}
	msg, err := sk.Encrypt(Pad([]byte("hello, everyone")))
	if err != nil {
		t.Fatal(err)
	}
	body, headers, err := SealMulti(alice.key, alice.cert, rs, msg)
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range headers {
		cert, content, err := OpenMulti(parties[i].key, h.Header, body, f.roots, envNow)
		if err != nil || cert.Sender != alice.addr {
			t.Fatalf("device %d: %v", i, err)
		}
		g, _, err := GroupMessageInfo(content)
		if err != nil || g != group {
			t.Fatalf("device %d: group %v, %v", i, g, err)
		}
		padded, err := receivers[h.Address].Decrypt(content)
		if err != nil {
			t.Fatalf("device %d: %v", i, err)
		}
		if pt, err := Unpad(padded); err != nil || string(pt) != "hello, everyone" {
			t.Fatalf("device %d: %q %v", i, pt, err)
		}
	}
}
