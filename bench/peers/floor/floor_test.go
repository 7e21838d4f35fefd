package floor

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/mlkem"
	"crypto/rand"
	"crypto/sha256"
	"flag"
	"io"
	"os"
	"testing"

	"filippo.io/age"
	circl "github.com/cloudflare/circl/dh/x25519"
	"golang.org/x/crypto/chacha20poly1305"
)

var diskDir = flag.String("floor.diskdir", "", "directory for the fsync floor (default: the OS temp dir)")

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// hkdf64 derives 64 bytes from a 32-byte secret: the root-KDF / message-key shape.
func hkdf64(secret, salt []byte) []byte {
	return must(hkdf.Key(sha256.New, secret, salt, "floor", 64))
}

// chainStep is the Double Ratchet chain KDF: two HMACs under the chain key.
func chainStep(ck []byte) (mk, next []byte) {
	h := hmac.New(sha256.New, ck)
	h.Write([]byte{1})
	mk = h.Sum(nil)
	h = hmac.New(sha256.New, ck)
	h.Write([]byte{2})
	return mk, h.Sum(nil)
}

// gcm builds AES-256-GCM under a fresh key, as a ratchet must for every message.
func gcm(key []byte) cipher.AEAD {
	return must(cipher.NewGCM(must(aes.NewCipher(key[:32]))))
}

func BenchmarkFloor(b *testing.B) {
	b.Run("x25519/keygen", func(b *testing.B) {
		for range b.N {
			must(ecdh.X25519().GenerateKey(rand.Reader))
		}
	})
	b.Run("x25519/dh", func(b *testing.B) {
		a := must(ecdh.X25519().GenerateKey(rand.Reader))
		p := must(ecdh.X25519().GenerateKey(rand.Reader)).PublicKey()
		for range b.N {
			must(a.ECDH(p))
		}
	})
	// CIRCL's X25519, which Sotto's crypto package uses for its scalar multiplications
	// (crypto/x25519.go): the floor of Sotto's own Diffie-Hellman operations.
	b.Run("x25519-circl/keygen", func(b *testing.B) {
		var sk, pk circl.Key
		for range b.N {
			rand.Read(sk[:])
			circl.KeyGen(&pk, &sk)
		}
	})
	b.Run("x25519-circl/dh", func(b *testing.B) {
		var sk, sk2, pk, out circl.Key
		rand.Read(sk[:])
		rand.Read(sk2[:])
		circl.KeyGen(&pk, &sk2)
		for range b.N {
			if !circl.Shared(&out, &sk, &pk) {
				b.Fatal("shared")
			}
		}
	})
	b.Run("ed25519/sign", func(b *testing.B) {
		_, priv := must2(ed25519.GenerateKey(rand.Reader))
		msg := random(64)
		for range b.N {
			ed25519.Sign(priv, msg)
		}
	})
	b.Run("ed25519/verify", func(b *testing.B) {
		pub, priv := must2(ed25519.GenerateKey(rand.Reader))
		msg := random(64)
		sig := ed25519.Sign(priv, msg)
		for range b.N {
			if !ed25519.Verify(pub, msg, sig) {
				b.Fatal("verify")
			}
		}
	})
	benchMLKEM(b)
	b.Run("hkdf-sha256/64B", func(b *testing.B) {
		secret, salt := random(32), random(32)
		for range b.N {
			hkdf64(secret, salt)
		}
	})
	b.Run("hmac-sha256/32B", func(b *testing.B) {
		key, msg := random(32), random(32)
		for range b.N {
			h := hmac.New(sha256.New, key)
			h.Write(msg)
			h.Sum(nil)
		}
	})
	aeads := []struct {
		name string
		aead cipher.AEAD
	}{
		{"aes256gcm", gcm(random(32))},
		{"chacha20poly1305", must(chacha20poly1305.New(random(32)))},
	}
	for _, a := range aeads {
		for _, n := range []struct {
			name string
			n    int
		}{{"64B", 64}, {"1KiB", 1024}} {
			b.Run(a.name+"/seal+open/"+n.name, func(b *testing.B) {
				pt, nonce := random(n.n), random(a.aead.NonceSize())
				buf := make([]byte, 0, n.n+a.aead.Overhead())
				out := make([]byte, 0, n.n)
				b.SetBytes(int64(n.n))
				for range b.N {
					ct := a.aead.Seal(buf[:0], nonce, pt, nil)
					if _, err := a.aead.Open(out[:0], nonce, ct, nil); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
	b.Run("age/1MiB", benchAge)
	benchDerived(b)
}

func must2[A, B any](a A, b B, err error) (A, B) {
	if err != nil {
		panic(err)
	}
	return a, b
}

func benchMLKEM(b *testing.B) {
	b.Run("mlkem768/keygen", func(b *testing.B) {
		for range b.N {
			must(mlkem.GenerateKey768())
		}
	})
	b.Run("mlkem768/encaps", func(b *testing.B) {
		ek := must(mlkem.GenerateKey768()).EncapsulationKey()
		for range b.N {
			ek.Encapsulate()
		}
	})
	b.Run("mlkem768/decaps", func(b *testing.B) {
		dk := must(mlkem.GenerateKey768())
		_, ct := dk.EncapsulationKey().Encapsulate()
		for range b.N {
			must(dk.Decapsulate(ct))
		}
	})
	b.Run("mlkem1024/keygen", func(b *testing.B) {
		for range b.N {
			must(mlkem.GenerateKey1024())
		}
	})
	b.Run("mlkem1024/encaps", func(b *testing.B) {
		ek := must(mlkem.GenerateKey1024()).EncapsulationKey()
		for range b.N {
			ek.Encapsulate()
		}
	})
	b.Run("mlkem1024/decaps", func(b *testing.B) {
		dk := must(mlkem.GenerateKey1024())
		_, ct := dk.EncapsulationKey().Encapsulate()
		for range b.N {
			must(dk.Decapsulate(ct))
		}
	})
}

// benchAge encrypts 1 MiB to a fresh X25519 identity (as each attachment gets one) and decrypts
// it, streaming through io.Copy.
func benchAge(b *testing.B) {
	pt := random(1 << 20)
	var ct, out bytes.Buffer
	b.SetBytes(int64(len(pt)))
	for range b.N {
		id := must(age.GenerateX25519Identity())
		ct.Reset()
		w := must(age.Encrypt(&ct, id.Recipient()))
		if _, err := w.Write(pt); err != nil {
			b.Fatal(err)
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
		r := must(age.Decrypt(&ct, id))
		out.Reset()
		if _, err := io.Copy(&out, r); err != nil {
			b.Fatal(err)
		}
		if out.Len() != len(pt) {
			b.Fatal("age: short plaintext")
		}
	}
}

// BenchmarkDisk appends 4 KiB and fsyncs, one at a time: the synced-write rate of the disk the
// relay's store would sit on (the default temp dir, like t.TempDir).
func BenchmarkDisk(b *testing.B) { b.Run("append-fsync-4KiB", benchDisk) }

func benchDisk(b *testing.B) {
	dir := *diskDir
	if dir == "" {
		dir = b.TempDir()
	}
	f, err := os.CreateTemp(dir, "floor-fsync-*")
	if err != nil {
		b.Fatal(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	block := random(4096)
	b.ResetTimer()
	for range b.N {
		if _, err := f.Write(block); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(b.N)/s, "syncs/s")
	}
}

// ratchetMsg is the least work a Double Ratchet message in an existing chain needs: the chain KDF
// and an AEAD under the fresh message key. The message key is a uniformly random single-use key, so
// it keys the AEAD as it stands with a fixed nonce (Sotto's PROTOCOL.md §4.1 does so; an HKDF
// expanding it, as an earlier draft did, is avoidable work).
func ratchetMsg(ck, pt, ad []byte, open bool, ct []byte) []byte {
	mk, _ := chainStep(ck)
	a := gcm(mk)
	nonce := make([]byte, a.NonceSize())
	if open {
		return must(a.Open(nil, nonce, ct, ad))
	}
	return a.Seal(nil, nonce, pt, ad)
}

// xkey is an X25519 key pair on CIRCL, the implementation Sotto's crypto package uses: the
// derived composites below are built on it, so that they stay the floor of Sotto's operations.
type xkey struct{ sk, pk circl.Key }

func newXKey() *xkey {
	k := new(xkey)
	rand.Read(k.sk[:])
	circl.KeyGen(&k.pk, &k.sk)
	return k
}

// dh is X25519 of k's scalar and peer.
func (k *xkey) dh(peer *circl.Key) []byte {
	var out circl.Key
	if !circl.Shared(&out, &k.sk, peer) {
		panic("x25519: low-order point")
	}
	return out[:]
}

// dhStep is a DH ratchet step on receiving a new ratchet key: DH with the old key into the root
// KDF, a new key pair, DH with it into the root KDF again.
func dhStep(old *xkey, theirs *circl.Key, root []byte) *xkey {
	r := hkdf64(old.dh(theirs), root)
	fresh := newXKey()
	hkdf64(fresh.dh(theirs), r[:32])
	return fresh
}

type pqxdhKeys struct {
	ikA, ikB, spkB, opkB *xkey
	sigPub               ed25519.PublicKey
	spkSig, kemSig       []byte
	kemPub               []byte
	dk768                *mlkem.DecapsulationKey768
	dk1024               *mlkem.DecapsulationKey1024
}

func newPQXDHKeys() *pqxdhKeys {
	k := &pqxdhKeys{ikA: newXKey(), ikB: newXKey(), spkB: newXKey(), opkB: newXKey()}
	pub, priv := must2(ed25519.GenerateKey(rand.Reader))
	k.sigPub = pub
	k.spkSig = ed25519.Sign(priv, k.spkB.pk[:])
	k.dk768 = must(mlkem.GenerateKey768())
	k.dk1024 = must(mlkem.GenerateKey1024())
	k.kemPub = k.dk1024.EncapsulationKey().Bytes()
	k.kemSig = ed25519.Sign(priv, k.kemPub)
	return k
}

// pqxdhInitiator: verify both prekey signatures, an ephemeral key, four DHs, one encapsulation,
// one HKDF. It returns what the responder needs.
func (k *pqxdhKeys) initiator(kem1024 bool) (*circl.Key, []byte) {
	if !ed25519.Verify(k.sigPub, k.spkB.pk[:], k.spkSig) || !ed25519.Verify(k.sigPub, k.kemPub, k.kemSig) {
		panic("verify")
	}
	ek := newXKey()
	var ikm []byte
	ikm = append(ikm, k.ikA.dh(&k.spkB.pk)...)
	ikm = append(ikm, ek.dh(&k.ikB.pk)...)
	ikm = append(ikm, ek.dh(&k.spkB.pk)...)
	ikm = append(ikm, ek.dh(&k.opkB.pk)...)
	var ss, ct []byte
	if kem1024 {
		ss, ct = k.dk1024.EncapsulationKey().Encapsulate()
	} else {
		ss, ct = k.dk768.EncapsulationKey().Encapsulate()
	}
	hkdf64(append(ikm, ss...), nil)
	return &ek.pk, ct
}

// pqxdhResponder: four DHs, one decapsulation, one HKDF.
func (k *pqxdhKeys) responder(ek *circl.Key, ct []byte, kem1024 bool) {
	var ikm []byte
	ikm = append(ikm, k.spkB.dh(&k.ikA.pk)...)
	ikm = append(ikm, k.ikB.dh(ek)...)
	ikm = append(ikm, k.spkB.dh(ek)...)
	ikm = append(ikm, k.opkB.dh(ek)...)
	var ss []byte
	if kem1024 {
		ss = must(k.dk1024.Decapsulate(ct))
	} else {
		ss = must(k.dk768.Decapsulate(ct))
	}
	hkdf64(append(ikm, ss...), nil)
}

func benchDerived(b *testing.B) {
	ck, ad := random(32), random(64)
	for _, n := range []struct {
		name string
		n    int
	}{{"64B", 64}, {"1KiB", 1024}} {
		b.Run("derived/ratchet-msg-encrypt/"+n.name, func(b *testing.B) {
			pt := random(n.n)
			for range b.N {
				ratchetMsg(ck, pt, ad, false, nil)
			}
		})
		b.Run("derived/ratchet-msg-decrypt/"+n.name, func(b *testing.B) {
			ct := ratchetMsg(ck, random(n.n), ad, false, nil)
			for range b.N {
				ratchetMsg(ck, nil, ad, true, ct)
			}
		})
	}
	b.Run("derived/dh-ratchet-step", func(b *testing.B) {
		old, theirs := newXKey(), newXKey()
		root := random(32)
		for range b.N {
			dhStep(old, &theirs.pk, root)
		}
	})
	// A ping-pong round trip: two direction changes (a DH ratchet step each) and two messages,
	// each encrypted and decrypted.
	b.Run("derived/pingpong", func(b *testing.B) {
		a, c := newXKey(), newXKey()
		root, pt := random(32), random(64)
		for range b.N {
			c = dhStep(c, &a.pk, root)
			ct := ratchetMsg(ck, pt, ad, false, nil)
			ratchetMsg(ck, nil, ad, true, ct)
			a = dhStep(a, &c.pk, root)
			ct = ratchetMsg(ck, pt, ad, false, nil)
			ratchetMsg(ck, nil, ad, true, ct)
		}
	})
	k := newPQXDHKeys()
	for _, v := range []struct {
		name string
		big  bool
	}{{"mlkem768", false}, {"mlkem1024", true}} {
		b.Run("derived/pqxdh/initiator/"+v.name, func(b *testing.B) {
			for range b.N {
				k.initiator(v.big)
			}
		})
		b.Run("derived/pqxdh/responder/"+v.name, func(b *testing.B) {
			ek, ct := k.initiator(v.big)
			b.ResetTimer()
			for range b.N {
				k.responder(ek, ct, v.big)
			}
		})
		b.Run("derived/pqxdh/both/"+v.name, func(b *testing.B) {
			for range b.N {
				ek, ct := k.initiator(v.big)
				k.responder(ek, ct, v.big)
			}
		})
	}
	// Sealed sender: the sealer does an ephemeral-static DH, an HKDF and an AEAD seal; the opener
	// does the DH, the HKDF, the AEAD open and verifies the sender certificate's signature. The
	// X25519 operations are CIRCL's, as in Sotto's crypto package.
	b.Run("derived/sealed-sender/seal+open/256B", func(b *testing.B) {
		recip := newXKey()
		pub, priv := must2(ed25519.GenerateKey(rand.Reader))
		cert := random(120)
		sig := ed25519.Sign(priv, cert)
		pt := random(256)
		for range b.N {
			eph := newXKey()
			keys := hkdf64(eph.dh(&recip.pk), nil)
			a := gcm(keys[:32])
			ct := a.Seal(nil, keys[32:44], pt, nil)
			keys2 := hkdf64(recip.dh(&eph.pk), nil)
			must(gcm(keys2[:32]).Open(nil, keys2[32:44], ct, nil))
			if !ed25519.Verify(pub, cert, sig) {
				b.Fatal("verify")
			}
		}
	})
	// Group message: a chain step, an AEAD under the message key and a signature (sender keys).
	pub, priv := must2(ed25519.GenerateKey(rand.Reader))
	b.Run("derived/group/encrypt/1KiB", func(b *testing.B) {
		pt := random(1024)
		for range b.N {
			ct := ratchetMsg(ck, pt, nil, false, nil)
			ed25519.Sign(priv, ct)
		}
	})
	b.Run("derived/group/decrypt/1KiB", func(b *testing.B) {
		ct := ratchetMsg(ck, random(1024), nil, false, nil)
		sig := ed25519.Sign(priv, ct)
		for range b.N {
			if !ed25519.Verify(pub, ct, sig) {
				b.Fatal("verify")
			}
			ratchetMsg(ck, nil, nil, true, ct)
		}
	})
}
