package crypto

import (
	"bufio"
	"bytes"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/mlkem"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// vectorValues returns the hex values of the named keys in the committed
// vector file, to seed the fuzzers with real messages and states. It fails
// if it finds none, so that a renamed file or key cannot silently empty
// the seed corpus.
func vectorValues(t testing.TB, file string, keys ...string) [][]byte {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "vectors", file))
	if err != nil {
		t.Fatalf("seed vectors: %v", err)
	}
	defer f.Close()
	var out [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ": ")
		if !ok {
			continue
		}
		for _, k := range keys {
			if name == k {
				b, err := hex.DecodeString(value)
				if err != nil {
					t.Fatalf("seed vectors: %s: %v", name, err)
				}
				out = append(out, b)
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("no seeds for %v in %s", keys, file)
	}
	return out
}

func TestFuzzSeedsExist(t *testing.T) {
	vectorValues(t, "ratchet.txt", "bytes")
	vectorValues(t, "ratchet.txt", "alice_state", "bob_final_state")
	vectorValues(t, "pqxdh.txt", "initial_message")
}

func FuzzParseMessage(f *testing.F) {
	for _, b := range vectorValues(f, "ratchet.txt", "bytes") {
		f.Add(b)
	}
	for _, b := range vectorValues(f, "pqxdh.txt", "initial_message") {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		// Long ciphertexts add no coverage (the layout ends with them) but
		// make the engine's minimization quadratic; the length bound has
		// its own case in TestParseMessageHostile.
		if len(b) > 4096 {
			return
		}
		m, err := parseMessage(b)
		if err != nil {
			if m != nil {
				t.Fatal("value returned with an error")
			}
			return
		}
		if !bytes.Equal(m.marshal(), b) {
			t.Fatal("parse then marshal differs from the input")
		}
	})
}

func FuzzParseSession(f *testing.F) {
	for _, b := range vectorValues(f, "ratchet.txt", "alice_state", "bob_state", "alice_final_state", "bob_final_state") {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 8192 { // keeps minimization fast; bounds have table tests
			return
		}
		s, err := ParseSession(b)
		if err != nil {
			if s != nil {
				t.Fatal("value returned with an error")
			}
			return
		}
		again, err := s.MarshalBinary()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatal("parse then marshal differs from the input")
		}
		// A parsed state, however odd, must not make the session panic.
		// Encrypt may fail (a stored remote key of small order), never panic.
		s.Encrypt([]byte("x"))
		s.RemoteIdentity()
	})
}

// conversationStart holds serialized sessions right after PQXDH, built
// once: each fuzz execution starts from them, so that it spends its time
// on the ratchet rather than on key generation.
var conversationStart = sync.OnceValues(func() ([]byte, []byte) {
	a, b := newTestDevice(&testing.T{}, 1), newTestDevice(&testing.T{}, 2)
	alice, err := InitiateSession(a.ik, a.addr, b.bundle(true, false))
	if err != nil {
		panic(err)
	}
	m, _ := alice.Encrypt([]byte("hello"))
	bob, _, _, err := AcceptSession(b.ik, b.addr, b, m)
	if err != nil {
		panic(err)
	}
	as, _ := alice.MarshalBinary()
	bs, _ := bob.MarshalBinary()
	return as, bs
})

// FuzzConversation lets the input choose, byte by byte, between Alice
// sending, Bob sending, delivering any message in flight (reordering),
// dropping one, delivering one again (duplicate) and restarting a party
// from its serialized state. It asserts that every message delivered
// decrypts exactly once to what was sent, that a repeat is refused with
// ErrDuplicateMessage while its chain is still kept, and that a failed
// decryption leaves the state unchanged.
func FuzzConversation(f *testing.F) {
	f.Add([]byte{0, 0, 2, 0, 2, 0, 1, 2, 0, 4, 0})
	f.Add([]byte{0, 0, 0, 2, 2, 2, 1, 2, 1, 1, 5, 2, 0, 0, 2, 1, 4, 1, 2, 0})
	f.Add([]byte{0, 1, 0, 1, 0, 1, 2, 3, 2, 1, 2, 0, 11, 5, 2, 2, 4, 0, 3, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		const maxOps = 64
		if len(ops) > maxOps {
			ops = ops[:maxOps]
		}
		as, bs := conversationStart()
		parties := [2]*Session{}
		var err error
		if parties[0], err = ParseSession(as); err != nil {
			t.Fatal(err)
		}
		if parties[1], err = ParseSession(bs); err != nil {
			t.Fatal(err)
		}
		type sent struct {
			to        int
			msg       []byte
			pt        string
			delivered bool
		}
		var all []*sent
		var inFlight []*sent
		// seen[p] holds the ratchet keys party p has decrypted under, to
		// tell an evicted chain from a new one.
		seen := [2]map[[32]byte]bool{{}, {}}
		arg := func(i int) int {
			if i+1 < len(ops) {
				return int(ops[i+1])
			}
			return 0
		}
		for i := 0; i < len(ops); i++ {
			switch op := ops[i] % 6; op {
			case 0, 1: // party op sends
				pt := string(rune('a'+op)) + string(rune('0'+len(all)%10))
				m, err := parties[op].Encrypt([]byte(pt))
				if err != nil {
					t.Fatal(err)
				}
				s := &sent{to: 1 - int(op), msg: m, pt: pt}
				all = append(all, s)
				inFlight = append(inFlight, s)
			case 2: // deliver any message in flight
				if len(inFlight) == 0 {
					continue
				}
				j := arg(i) % len(inFlight)
				i++
				s := inFlight[j]
				inFlight = append(inFlight[:j], inFlight[j+1:]...)
				r := parties[s.to]
				pm, _ := parseMessage(s.msg)
				knownBefore := seen[s.to][pm.header.dh]
				before, _ := r.MarshalBinary()
				pt, err := r.Decrypt(s.msg)
				if err != nil {
					after, _ := r.MarshalBinary()
					if !bytes.Equal(before, after) {
						t.Fatal("failed decryption changed the state")
					}
					if knownBefore && !r.knowsChainForTest(s.msg) {
						continue // its chain was evicted (MaxReceiverChains)
					}
					t.Fatalf("first delivery failed: %v", err)
				}
				if string(pt) != s.pt {
					t.Fatalf("decrypted %q, sent %q", pt, s.pt)
				}
				s.delivered = true
				seen[s.to][pm.header.dh] = true
			case 3: // drop a message in flight
				if len(inFlight) > 0 {
					j := arg(i) % len(inFlight)
					i++
					inFlight = append(inFlight[:j], inFlight[j+1:]...)
				}
			case 4: // deliver a delivered message again
				var done []*sent
				for _, s := range all {
					if s.delivered {
						done = append(done, s)
					}
				}
				if len(done) == 0 {
					continue
				}
				s := done[arg(i)%len(done)]
				i++
				r := parties[s.to]
				before, _ := r.MarshalBinary()
				pt, err := r.Decrypt(s.msg)
				if err == nil {
					t.Fatalf("message %q decrypted twice", pt)
				}
				if after, _ := r.MarshalBinary(); !bytes.Equal(before, after) {
					t.Fatal("refused duplicate changed the state")
				}
				if r.knowsChainForTest(s.msg) && !errors.Is(err, ErrDuplicateMessage) {
					t.Fatalf("duplicate: %v", err)
				}
			case 5: // restart a party from its serialized state
				p := arg(i) % 2
				i++
				data, _ := parties[p].MarshalBinary()
				s, err := ParseSession(data)
				if err != nil {
					t.Fatalf("restart: %v", err)
				}
				if again, _ := s.MarshalBinary(); !bytes.Equal(again, data) {
					t.Fatal("restart: round trip differs")
				}
				parties[p] = s
			}
		}
	})
}

// vectorBlocks parses a vector file into its blocks of "name: value"
// lines, as another implementation would read it.
func vectorBlocks(t *testing.T, file string) []map[string]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "vectors", file))
	if err != nil {
		t.Fatal(err)
	}
	var blocks []map[string]string
	cur := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		if line == "" {
			if len(cur) > 0 {
				blocks = append(blocks, cur)
				cur = map[string]string{}
			}
			continue
		}
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			t.Fatalf("%s: bad line %q", file, line)
		}
		cur[k] = v
	}
	if len(cur) > 0 {
		blocks = append(blocks, cur)
	}
	return blocks
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRatchetVectorReplay replays ratchet.txt from its two starting
// states, injecting each recorded ratchet key, and checks every message
// byte for byte, every delivery's outcome and both final states.
func TestRatchetVectorReplay(t *testing.T) {
	blocks := vectorBlocks(t, "ratchet.txt")
	parties := map[string]*Session{}
	for _, who := range []string{"alice", "bob"} {
		s, err := ParseSession(unhex(t, blocks[0][who+"_state"]))
		if err != nil {
			t.Fatal(err)
		}
		parties[who] = s
	}
	var msgs [][]byte
	var pts []string
	events := 0
	for _, b := range blocks[1:] {
		switch b["event"] {
		case "send":
			s := parties[b["from"]]
			if !s.ratchet.sending {
				k, err := ecdh.X25519().NewPrivateKey(unhex(t, b["sender_ratchet_private"]))
				if err != nil {
					t.Fatal(err)
				}
				if err := s.ratchet.sendingStepWith(keyPairFrom(k)); err != nil {
					t.Fatal(err)
				}
			}
			m, err := s.Encrypt([]byte(b["plaintext"]))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(m, unhex(t, b["bytes"])) {
				t.Fatalf("message %s differs from the vector", b["message"])
			}
			msgs, pts = append(msgs, m), append(pts, b["plaintext"])
			events++
		case "deliver":
			i, err := strconv.Atoi(b["message"])
			if err != nil || i >= len(msgs) {
				t.Fatalf("bad message index %q", b["message"])
			}
			pt, err := parties[b["to"]].Decrypt(msgs[i])
			switch b["expect"] {
			case "success":
				if err != nil || string(pt) != pts[i] {
					t.Fatalf("message %d: %q, %v", i, pt, err)
				}
			case "duplicate":
				if !errors.Is(err, ErrDuplicateMessage) {
					t.Fatalf("message %d: %v, want a duplicate", i, err)
				}
			default:
				t.Fatalf("unknown expectation %q", b["expect"])
			}
			events++
		default:
			for _, who := range []string{"alice", "bob"} {
				got, _ := parties[who].MarshalBinary()
				if want := b[who+"_final_state"]; !bytes.Equal(got, unhex(t, want)) {
					t.Fatalf("%s's final state differs", who)
				}
			}
		}
	}
	if events < 10 {
		t.Fatalf("only %d events replayed", events)
	}
}

// TestPQXDHVectorFromKeys recomputes SK of every case in pqxdh.txt from
// the private keys it lists, with the primitives directly, and has Bob's
// keys accept the initial message.
func TestPQXDHVectorFromKeys(t *testing.T) {
	cases := 0
	for _, b := range vectorBlocks(t, "pqxdh.txt") {
		if b["case"] == "" {
			continue
		}
		cases++
		x := func(name string) *ecdh.PrivateKey {
			k, err := ecdh.X25519().NewPrivateKey(unhex(t, b[name]))
			if err != nil {
				t.Fatal(err)
			}
			return k
		}
		aliceIK, _ := NewIdentityPrivateKey(unhex(t, b["alice_identity_seed"]))
		bobIK, _ := NewIdentityPrivateKey(unhex(t, b["bob_identity_seed"]))
		spk, ek := x("bob_signed_prekey_private"), x("alice_ephemeral_private")
		dk, err := mlkem.NewDecapsulationKey768(unhex(t, b["bob_kem_prekey_seed"]))
		if err != nil {
			t.Fatal(err)
		}
		msg := unhex(t, b["initial_message"])
		m, err := parseMessage(msg)
		if err != nil {
			t.Fatal(err)
		}
		dh := func(k *ecdh.PrivateKey, p *ecdh.PublicKey) []byte {
			out, err := k.ECDH(p)
			if err != nil {
				t.Fatal(err)
			}
			return out
		}
		ikm := append(bytes.Repeat([]byte{0xff}, 32), dh(aliceIK.x, spk.PublicKey())...)
		ikm = append(ikm, dh(ek, bobIK.Public().X25519())...)
		ikm = append(ikm, dh(ek, spk.PublicKey())...)
		var opk *ecdh.PrivateKey
		if b["bob_one_time_prekey_private"] != "" {
			opk = x("bob_one_time_prekey_private")
			ikm = append(ikm, dh(ek, opk.PublicKey())...)
		}
		ss, err := dk.Decapsulate(m.preKey.kemCiphertext)
		if err != nil {
			t.Fatal(err)
		}
		ikm = append(ikm, ss...)
		sk, err := hkdf.Key(sha256.New, ikm, make([]byte, 32), "Sotto-v1_CURVE25519_SHA-256_ML-KEM-768", 32)
		if err != nil || !bytes.Equal(sk, unhex(t, b["sk"])) {
			t.Fatalf("case %q: SK differs", b["case"])
		}

		// Bob's private keys from the file accept the initial message.
		bob := &testDevice{ik: bobIK, spk: map[uint32]*SignedPreKeyPair{}, kem: map[uint32]*KEMPreKeyPair{}, otk: map[uint32]*OneTimePreKeyPair{}}
		copy(bob.addr.Account[:], unhex(t, b["bob_account"]))
		dev, err := strconv.ParseUint(b["bob_device"], 10, 32)
		if err != nil {
			t.Fatal(err)
		}
		bob.addr.Device = DeviceID(dev)
		sp := &SignedPreKeyPair{Private: spk}
		sp.ID = m.preKey.signedPreKeyID
		bob.spk[sp.ID] = sp
		kp := &KEMPreKeyPair{Private: dk}
		kp.ID = m.preKey.kemPreKeyID
		bob.kem[kp.ID] = kp
		if opk != nil {
			op := &OneTimePreKeyPair{Private: opk}
			op.ID = m.preKey.oneTimePreKeyID
			bob.otk[op.ID] = op
		}
		s, pt, _, err := AcceptSession(bobIK, bob.addr, bob, msg)
		if err != nil || string(pt) != b["plaintext"] {
			t.Fatalf("case %q: accept: %q %v", b["case"], pt, err)
		}
		if root := s.rootKeyForTest(); !bytes.Equal(root[:], unhex(t, b["bob_root_key"])) {
			t.Fatalf("case %q: Bob's root key differs", b["case"])
		}
	}
	if cases != 2 {
		t.Fatalf("%d cases in pqxdh.txt, want 2", cases)
	}
}
