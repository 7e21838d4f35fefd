package client

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/sotto-im/sotto/client/internal/testenv"
	"github.com/sotto-im/sotto/client/store/memstore"
	"github.com/sotto-im/sotto/crypto"
)

var validInvite = "sotto:invite?a=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa&k=https%3A%2F%2Fk.example&r=https%3A%2F%2Fr.example&x=" +
	strings.Repeat("A", 43) + "&s=AAAA"

func TestParseInviteHostile(t *testing.T) {
	if _, err := ParseInvite(validInvite); err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]string{
		"empty":            "",
		"wrong prefix":     "sotto:link?a=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		"no account":       "sotto:invite?k=https%3A%2F%2Fk.example&r=https%3A%2F%2Fr.example",
		"short account":    "sotto:invite?a=aaaa&k=https%3A%2F%2Fk.example&r=https%3A%2F%2Fr.example",
		"bad base32":       "sotto:invite?a=11111111111111111111111111111111&k=https%3A%2F%2Fk.example&r=https%3A%2F%2Fr.example",
		"javascript url":   "sotto:invite?a=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa&k=javascript%3Aalert(1)&r=https%3A%2F%2Fr.example",
		"no host":          "sotto:invite?a=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa&k=https%3A%2F%2F&r=https%3A%2F%2Fr.example",
		"short access key": "sotto:invite?a=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa&k=https%3A%2F%2Fk.example&r=https%3A%2F%2Fr.example&x=AAAA",
		"long secret":      "sotto:invite?a=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa&k=https%3A%2F%2Fk.example&r=https%3A%2F%2Fr.example&s=" + strings.Repeat("A", 100),
		"bad query":        "sotto:invite?a=%zz",
		"huge":             "sotto:invite?" + strings.Repeat("a", 5000),
	} {
		if _, err := ParseInvite(s); !errors.Is(err, ErrInvalidInvite) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func FuzzParseInvite(f *testing.F) {
	f.Add(validInvite)
	f.Add("sotto:invite?a=%zz")
	f.Fuzz(func(t *testing.T, s string) {
		inv, err := ParseInvite(s)
		if err != nil {
			return
		}
		// What parses re-encodes to something that parses to the same.
		again, err := ParseInvite(inv.String())
		if err != nil || again.Account != inv.Account || again.AccessKey != inv.AccessKey ||
			again.KeyServerURL != inv.KeyServerURL || !bytes.Equal(again.Secret, inv.Secret) {
			t.Fatalf("round trip of %q: %+v, %v", s, again, err)
		}
	})
}

func TestParseLinkCodeHostile(t *testing.T) {
	ik := crypto.GenerateIdentityKey().Public()
	good := LinkCode{KeyServerURL: "https://k.example", Address: "addr", Identity: ik,
		Recipient: "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"}
	if _, err := ParseLinkCode(good.String()); err != nil {
		t.Fatal(err)
	}
	bad := good
	bad.Recipient = "age1notarecipient"
	for name, s := range map[string]string{
		"empty":         "",
		"invite prefix": "sotto:invite?a=b",
		"bad recipient": bad.String(),
		"no secret":     strings.Replace(good.String(), "&s=", "&x=", 1),
		"bad identity":  strings.Replace(good.String(), "i=", "i=AAAA", 1),
		"huge":          linkPrefix + strings.Repeat("a", 5000),
	} {
		if _, err := ParseLinkCode(s); !errors.Is(err, ErrInvalidLinkCode) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func FuzzParseLinkCode(f *testing.F) {
	ik := crypto.GenerateIdentityKey().Public()
	f.Add(LinkCode{KeyServerURL: "https://k.example", Address: "addr", Identity: ik,
		Recipient: "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"}.String())
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLinkCode(s)
		if err != nil {
			return
		}
		if again, err := ParseLinkCode(l.String()); err != nil || again.Secret != l.Secret || !again.Identity.Equal(l.Identity) {
			t.Fatalf("round trip of %q failed: %v", s, err)
		}
	})
}

// TestHostileDeliveries feeds a client what a hostile relay or sender could
// deliver: every case is dropped (and so acknowledged) without a panic,
// without an event, and without touching the store's history.
func TestHostileDeliveries(t *testing.T) {
	env, err := testenv.New()
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	opts := Options{Store: memstore.New(), KeyServerURL: env.KeyServerURL, RelayURL: env.RelayURL, TrustRoots: env.TrustRoots, Offline: true}
	c, err := Create(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	other := crypto.GenerateIdentityKey()
	signer, _ := crypto.NewCertificateSigner(make([]byte, 32)) // not a trusted root
	cert, _ := signer.Issue(crypto.Address{Account: crypto.AccountID{1}, Device: 1}, other.Public(), c.now().Add(24*60*60*1e9))
	untrusted, _ := crypto.Seal(other, cert, c.id.ik.Public(), []byte("ratchet message"))
	for name, d := range map[string]struct{ header, body []byte }{
		"empty":                  {nil, nil},
		"garbage header":         {[]byte("garbage"), nil},
		"garbage multi":          {make([]byte, crypto.MultiHeaderSize), []byte("garbage body")},
		"long header":            {bytes.Repeat([]byte{1}, 4096), nil},
		"untrusted sender root":  {untrusted, nil},
		"truncated envelope":     {untrusted[:len(untrusted)/2], nil},
		"envelope with trailing": {append(bytes.Clone(untrusted), 0), nil},
	} {
		if err := c.handleDelivery(context.Background(), [16]byte{1}, d.header, d.body, false); err != nil {
			t.Errorf("%s: %v (a bad message must be dropped, not refused)", name, err)
		}
	}
	select {
	case ev := <-c.events:
		t.Fatalf("event from a hostile delivery: %#v", ev)
	default:
	}
}
