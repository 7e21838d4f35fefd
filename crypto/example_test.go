package crypto_test

import (
	"fmt"

	"github.com/sotto-im/sotto/crypto"
)

// bobDevice plays Bob's device: it publishes a prekey bundle, accepts
// Alice's prekey message and answers. Only []byte crosses between it and
// Alice, as it would through the key server and the relay.
type bobDevice struct {
	ik      *crypto.IdentityPrivateKey
	addr    crypto.Address
	signed  *crypto.SignedPreKeyPair
	kem     map[uint32]*crypto.KEMPreKeyPair
	oneTime map[uint32]*crypto.OneTimePreKeyPair
	session []byte // the persisted session state
}

func newBob() *bobDevice {
	ik := crypto.GenerateIdentityKey()
	return &bobDevice{
		ik:      ik,
		addr:    crypto.Address{Account: crypto.GenerateAccountKey().ID(), Device: 1},
		signed:  crypto.GenerateSignedPreKey(ik, 1),
		kem:     map[uint32]*crypto.KEMPreKeyPair{2: crypto.GenerateKEMPreKey(ik, 2, false)},
		oneTime: map[uint32]*crypto.OneTimePreKeyPair{3: crypto.GenerateOneTimePreKey(3)},
	}
}

// PreKeyLookup, backed by Bob's in-memory prekey store.
func (b *bobDevice) SignedPreKey(id uint32) (*crypto.SignedPreKeyPair, error) {
	if id != b.signed.ID {
		return nil, crypto.ErrUnknownPreKey
	}
	return b.signed, nil
}

func (b *bobDevice) KEMPreKey(id uint32) (*crypto.KEMPreKeyPair, error) {
	if k, ok := b.kem[id]; ok {
		return k, nil
	}
	return nil, crypto.ErrUnknownPreKey
}

func (b *bobDevice) OneTimePreKey(id uint32) (*crypto.OneTimePreKeyPair, error) {
	if k, ok := b.oneTime[id]; ok {
		return k, nil
	}
	return nil, crypto.ErrUnknownPreKey
}

// bundle is what Bob uploads to the key server.
func (b *bobDevice) bundle() []byte {
	bundle := &crypto.PreKeyBundle{
		Address:       b.addr,
		Identity:      b.ik.Public(),
		SignedPreKey:  b.signed.SignedPreKey,
		KEMPreKey:     b.kem[2].KEMPreKey,
		OneTimePreKey: &b.oneTime[3].OneTimePreKey,
	}
	out, err := bundle.MarshalBinary()
	if err != nil {
		panic(err)
	}
	return out
}

// receive handles one message from Alice and returns Bob's answer.
func (b *bobDevice) receive(msg []byte) []byte {
	var s *crypto.Session
	var pt []byte
	var err error
	if b.session == nil {
		var used crypto.PreKeysUsed
		s, pt, used, err = crypto.AcceptSession(b.ik, b.addr, b, msg)
		if err != nil {
			panic(err)
		}
		// Here Bob would check s.RemoteIdentity() against Alice's device
		// list. Consumed one-time keys are deleted with the new session.
		if used.HasOneTimePreKey {
			delete(b.oneTime, used.OneTimePreKeyID)
		}
		if !used.KEMLastResort {
			delete(b.kem, used.KEMPreKeyID)
		}
	} else {
		if s, err = crypto.ParseSession(b.session); err != nil {
			panic(err)
		}
		if pt, err = s.Decrypt(msg); err != nil {
			panic(err)
		}
	}
	fmt.Printf("Bob reads: %s\n", pt)
	reply, err := s.Encrypt([]byte("hi Alice, " + string(pt)))
	if err != nil {
		panic(err)
	}
	b.session, _ = s.MarshalBinary()
	return reply
}

func Example() {
	bob := newBob()
	bundleBytes := bob.bundle() // fetched from the key server

	// Alice's device.
	ik := crypto.GenerateIdentityKey()
	self := crypto.Address{Account: crypto.GenerateAccountKey().ID(), Device: 1}
	bundle, err := crypto.ParsePreKeyBundle(bundleBytes)
	if err != nil {
		panic(err)
	}
	// A real client also checks bundle.Identity against Bob's verified
	// device list (bundle.VerifyAgainst).
	alice, err := crypto.InitiateSession(ik, self, bundle)
	if err != nil {
		panic(err)
	}
	for _, text := range []string{"hello", "how are you?"} {
		msg, err := alice.Encrypt([]byte(text))
		if err != nil {
			panic(err)
		}
		reply := bob.receive(msg)
		pt, err := alice.Decrypt(reply)
		if err != nil {
			panic(err)
		}
		fmt.Printf("Alice reads: %s\n", pt)
	}
	// Output:
	// Bob reads: hello
	// Alice reads: hi Alice, hello
	// Bob reads: how are you?
	// Alice reads: hi Alice, how are you?
}
