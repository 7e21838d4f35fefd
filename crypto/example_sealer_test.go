package crypto_test

import (
	"bytes"
	"fmt"
	"time"

	"github.com/sotto-im/sotto/crypto"
)

// A device keeps one Sealer for its identity for as long as it runs, and
// seals and opens every sealed-sender envelope through it: after the
// first envelope between two devices, the static Diffie-Hellman and the
// sender certificate's signature check come from its caches.
func ExampleSealer() {
	signer, err := crypto.NewCertificateSigner(bytes.Repeat([]byte{7}, 32)) // the key server's
	if err != nil {
		panic(err)
	}
	roots := []crypto.TrustRoot{signer.TrustRoot()} // pinned by clients
	now := time.Now()

	alice, bob := crypto.GenerateIdentityKey(), crypto.GenerateIdentityKey()
	aliceAddr := crypto.Address{Account: crypto.GenerateAccountKey().ID(), Device: 1}
	cert, err := signer.Issue(aliceAddr, alice.Public(), now.Add(24*time.Hour))
	if err != nil {
		panic(err)
	}
	aliceSealer, err := crypto.NewSealer(alice, 0)
	if err != nil {
		panic(err)
	}
	bobSealer, err := crypto.NewSealer(bob, 0)
	if err != nil {
		panic(err)
	}
	for _, text := range []string{"first", "second"} {
		env, err := aliceSealer.Seal(cert, bob.Public(), []byte(text)) // normally a ratchet message
		if err != nil {
			panic(err)
		}
		from, content, err := bobSealer.Open(env, roots, now)
		if err != nil {
			panic(err)
		}
		fmt.Println(from.Sender == aliceAddr, string(content))
	}
	// Output:
	// true first
	// true second
}
