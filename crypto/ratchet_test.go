package crypto

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/cryptotest"
)

// decryptKeepsStateOnError decrypts msg with s and, if it fails, asserts
// that the serialized state did not change.
func decryptKeepsStateOnError(t *testing.T, s *Session, msg []byte) error {
	t.Helper()
	before := sessMarshal(t, s)
	_, err := s.Decrypt(msg)
	if err != nil && !bytes.Equal(before, sessMarshal(t, s)) {
		t.Fatalf("failed decrypt (%v) changed the session state", err)
	}
	return err
}

// conversationMessages returns a set of messages of every kind, each with
// the session state that must decrypt it: a prekey message through
// Session.Decrypt, a message in the current chain, one that skips, one
// under a new ratchet key, and one for a skipped key in a closed chain.
func conversationMessages(t *testing.T) map[string]func() (*Session, []byte) {
	alice, bob, _, _ := newTestSessions(t)
	prekey := sessEncrypt(t, alice, "prekey")
	sessDecrypt(t, bob, prekey, "prekey")
	sessDecrypt(t, alice, sessEncrypt(t, bob, "reply"), "reply")
	late := sessEncrypt(t, alice, "late")
	sessDecrypt(t, bob, sessEncrypt(t, alice, "a"), "a")
	sessDecrypt(t, alice, sessEncrypt(t, bob, "b"), "b")
	newChain := sessEncrypt(t, alice, "new chain")
	state := sessMarshal(t, bob)
	restore := func() *Session {
		s, err := ParseSession(state)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// A second session where Bob has not seen Alice's second prekey message.
	alice2, bob2, _, _ := newTestSessions(t)
	prekey2 := sessEncrypt(t, alice2, "second prekey")
	state2 := sessMarshal(t, bob2)
	current := sessEncrypt(t, bob, "current")
	aliceState := sessMarshal(t, alice)
	// current is for Alice's receiving chain.
	_ = current
	skip1 := sessEncrypt(t, bob, "s1")
	skip2 := sessEncrypt(t, bob, "s2")
	_ = skip1
	return map[string]func() (*Session, []byte){
		"prekey via Decrypt": func() (*Session, []byte) {
			s, _ := ParseSession(state2)
			return s, prekey2
		},
		"new ratchet key": func() (*Session, []byte) { return restore(), newChain },
		"skipped key in closed chain": func() (*Session, []byte) {
			s := restore()
			sessDecrypt(t, s, newChain, "new chain")
			return s, late
		},
		"current chain": func() (*Session, []byte) {
			s, _ := ParseSession(aliceState)
			return s, current
		},
		"ahead in current chain": func() (*Session, []byte) {
			s, _ := ParseSession(aliceState)
			return s, skip2
		},
	}
}

func TestFailedDecryptDoesNotChangeState(t *testing.T) {
	for name, setup := range conversationMessages(t) {
		t.Run(name, func(t *testing.T) {
			s, msg := setup()
			for i := range msg {
				bad := bytes.Clone(msg)
				bad[i] ^= 0x01 << (i % 8)
				if err := decryptKeepsStateOnError(t, s, bad); err == nil {
					t.Fatalf("flipped byte %d accepted", i)
				}
			}
			for n := range len(msg) {
				if err := decryptKeepsStateOnError(t, s, msg[:n]); err == nil {
					t.Fatalf("truncation to %d bytes accepted", n)
				}
			}
			if err := decryptKeepsStateOnError(t, s, append(bytes.Clone(msg), 0)); err == nil {
				t.Fatal("extended message accepted")
			}
			// The genuine message still decrypts, exactly once.
			if _, err := s.Decrypt(msg); err != nil {
				t.Fatalf("genuine message after forgeries: %v", err)
			}
			if err := decryptKeepsStateOnError(t, s, msg); !errors.Is(err, ErrDuplicateMessage) {
				t.Fatalf("replay: %v", err)
			}
		})
	}
}

func TestAcceptSessionRejectsEveryFlipAndTruncation(t *testing.T) {
	a, b := newTestDevice(t, 1), newTestDevice(t, 2)
	alice, err := InitiateSession(a.ik, a.addr, b.bundle(true, true))
	if err != nil {
		t.Fatal(err)
	}
	msg := sessEncrypt(t, alice, "hello")
	// Every byte is flipped, except that under -race or -short the KEM
	// ciphertext (1088 bytes that all fail the same way, through
	// decapsulation's implicit rejection) is sampled every 61st byte.
	m, _ := parseMessage(msg)
	kemStart := len(m.prefix) - headerSize - KEMCiphertextSize
	for i := 0; i < len(msg); i++ {
		if (ratchetRaceEnabled || testing.Short()) && i > kemStart && i < kemStart+KEMCiphertextSize-1 && (i-kemStart)%61 != 0 {
			continue
		}
		bad := bytes.Clone(msg)
		bad[i] ^= 0x80 >> (i % 8)
		if s, pt, _, err := AcceptSession(b.ik, b.addr, b, bad); err == nil || s != nil || pt != nil {
			t.Fatalf("flipped byte %d accepted", i)
		}
	}
	for n := range len(msg) {
		if s, _, _, err := AcceptSession(b.ik, b.addr, b, msg[:n]); err == nil || s != nil {
			t.Fatalf("truncation to %d bytes accepted", n)
		}
	}
	if _, _, _, err := AcceptSession(b.ik, b.addr, b, msg); err != nil {
		t.Fatalf("genuine message: %v", err)
	}
}

func TestOutOfOrderWithinChain(t *testing.T) {
	alice, bob, _, _ := newTestSessions(t)
	sessDecrypt(t, alice, sessEncrypt(t, bob, "reply"), "reply")
	// Bob expects n = 0 of Alice's new chain; she sends 0..MaxSkip+1.
	msgs := make([][]byte, MaxSkip+2)
	for i := range msgs {
		msgs[i] = sessEncrypt(t, alice, fmt.Sprint(i))
	}
	// Beyond the bound: refused before anything is derived.
	if err := decryptKeepsStateOnError(t, bob, msgs[MaxSkip+1]); !errors.Is(err, ErrTooManySkipped) {
		t.Fatalf("counter MaxSkip+1 ahead: %v", err)
	}
	// Exactly at the bound (a new chain: n = MaxSkip skips MaxSkip keys).
	sessDecrypt(t, bob, msgs[MaxSkip], fmt.Sprint(MaxSkip))
	if keys, _ := bob.skippedForTest(); keys != MaxSkip {
		t.Fatalf("%d skipped keys stored, want %d", keys, MaxSkip)
	}
	sessDecrypt(t, bob, msgs[MaxSkip+1], fmt.Sprint(MaxSkip+1))
	// Every skipped message decrypts once, in reverse order.
	for i := MaxSkip - 1; i >= 0; i-- {
		sessDecrypt(t, bob, msgs[i], fmt.Sprint(i))
	}
	for _, i := range []int{0, 500, MaxSkip, MaxSkip + 1} {
		if err := decryptKeepsStateOnError(t, bob, msgs[i]); !errors.Is(err, ErrDuplicateMessage) {
			t.Fatalf("replay of %d: %v", i, err)
		}
	}
	if keys, _ := bob.skippedForTest(); keys != 0 {
		t.Fatalf("%d skipped keys left", keys)
	}

	// In an existing chain the bound is relative to the next counter.
	far := make([][]byte, MaxSkip+2)
	for i := range far {
		far[i] = sessEncrypt(t, alice, "far")
	}
	if err := decryptKeepsStateOnError(t, bob, far[MaxSkip+1]); !errors.Is(err, ErrTooManySkipped) {
		t.Fatalf("counter MaxSkip+1 ahead in current chain: %v", err)
	}
	sessDecrypt(t, bob, far[MaxSkip], "far")
}

func TestOutOfOrderNewChainBounds(t *testing.T) {
	alice, bob, _, _ := newTestSessions(t)
	// Alice leaves MaxSkip+1 messages of her first chain undelivered, so
	// the pn of her next chain is too far ahead of Bob's next counter.
	for range MaxSkip + 1 {
		sessEncrypt(t, alice, "lost")
	}
	sessDecrypt(t, alice, sessEncrypt(t, bob, "reply"), "reply")
	m := sessEncrypt(t, alice, "after")
	if err := decryptKeepsStateOnError(t, bob, m); !errors.Is(err, ErrTooManySkipped) {
		t.Fatalf("pn MaxSkip+1 ahead: %v", err)
	}

	// A header counter beyond MaxSkip under a new ratchet key, forged:
	// refused before any DH (the counter is checked first).
	alice, bob, _, _ = newTestSessions(t)
	sessDecrypt(t, alice, sessEncrypt(t, bob, "reply"), "reply")
	msg, _ := parseMessage(sessEncrypt(t, alice, "x"))
	msg.header.n = MaxSkip + 1
	if err := decryptKeepsStateOnError(t, bob, msg.marshal()); !errors.Is(err, ErrTooManySkipped) {
		t.Fatalf("forged n: %v", err)
	}
	msg.header.n = 0
	msg.header.pn = 1 + MaxSkip + 1 // Bob's next counter is 1
	if err := decryptKeepsStateOnError(t, bob, msg.marshal()); !errors.Is(err, ErrTooManySkipped) {
		t.Fatalf("forged pn: %v", err)
	}
}

func TestSkippedKeyBounds(t *testing.T) {
	alice, bob, _, _ := newTestSessions(t)
	sessDecrypt(t, alice, sessEncrypt(t, bob, "reply"), "reply")
	// Alice sends MaxSkip+1 messages per chain over several chains; Bob
	// receives only the last of each, storing MaxSkip keys per chain.
	var chains [][][]byte
	for c := range MaxReceiverChains + 1 {
		var msgs [][]byte
		for i := range MaxSkip + 1 {
			msgs = append(msgs, sessEncrypt(t, alice, fmt.Sprintf("%d/%d", c, i)))
		}
		sessDecrypt(t, bob, msgs[MaxSkip], fmt.Sprintf("%d/%d", c, MaxSkip))
		sessDecrypt(t, alice, sessEncrypt(t, bob, "turn"), "turn")
		chains = append(chains, msgs)
		keys, n := bob.skippedForTest()
		if keys > MaxSkippedKeys || n > MaxReceiverChains {
			t.Fatalf("bounds exceeded: %d keys, %d chains", keys, n)
		}
	}
	keys, n := bob.skippedForTest()
	if keys != MaxSkippedKeys || n != MaxReceiverChains {
		t.Fatalf("%d keys in %d chains, want %d in %d", keys, n, MaxSkippedKeys, MaxReceiverChains)
	}
	// The first chain was dropped: its messages fail without a duplicate
	// hint, since the chain is unknown now.
	if err := decryptKeepsStateOnError(t, bob, chains[0][0]); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("message of an evicted chain: %v", err)
	}
	// Chains 1..3 lost their keys to the total bound (oldest first): their
	// messages are reported as duplicates.
	if err := decryptKeepsStateOnError(t, bob, chains[3][MaxSkip-1]); !errors.Is(err, ErrDuplicateMessage) {
		t.Fatalf("message with an evicted key: %v", err)
	}
	// The two newest chains kept all their keys.
	for _, c := range chains[4:] {
		for i := range MaxSkip {
			pt, err := bob.Decrypt(c[i])
			if err != nil || !strings.HasSuffix(string(pt), fmt.Sprintf("/%d", i)) {
				t.Fatalf("kept key %d: %q %v", i, pt, err)
			}
		}
	}
}

func TestLowOrderKeysRejected(t *testing.T) {
	// The X25519 points of small order and their non-canonical encodings
	// (RFC 7748 §6.1 says to check for the all-zero output they produce;
	// list as in Go's crypto/ecdh and x/crypto/curve25519 tests).
	lowOrder := []string{
		"0000000000000000000000000000000000000000000000000000000000000000",
		"0100000000000000000000000000000000000000000000000000000000000000",
		"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
		"5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
		"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	}
	alice, bob, a, b := newTestSessions(t)
	sessDecrypt(t, alice, sessEncrypt(t, bob, "reply"), "reply")
	good := sessEncrypt(t, alice, "x")
	for _, h := range lowOrder {
		p, _ := hex.DecodeString(h)
		m, _ := parseMessage(good)
		copy(m.header.dh[:], p)
		if err := decryptKeepsStateOnError(t, bob, m.marshal()); err == nil {
			t.Fatalf("ratchet key %s accepted", h)
		}
	}
	// A prekey message with a small-order ephemeral key.
	s, _ := InitiateSession(a.ik, a.addr, b.bundle(false, false))
	pre := sessEncrypt(t, s, "x")
	for _, h := range lowOrder {
		p, _ := hex.DecodeString(h)
		m, _ := parseMessage(pre)
		copy(m.preKey.ephemeral[:], p)
		if _, _, _, err := AcceptSession(b.ik, b.addr, b, m.marshal()); !errors.Is(err, ErrInvalidKey) {
			t.Fatalf("ephemeral key %s: %v", h, err)
		}
	}
	// A bundle with a small-order one-time prekey: DH4 is refused.
	bundle := b.bundle(true, false)
	p, _ := hex.DecodeString(lowOrder[2])
	bundle.OneTimePreKey.Public, _ = parseX25519Public(p)
	if _, err := InitiateSession(a.ik, a.addr, bundle); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("small-order one-time prekey: %v", err)
	}
}

func TestParseMessageHostile(t *testing.T) {
	alice, bob, _, _ := newTestSessions(t)
	prekey := sessEncrypt(t, alice, "p")
	sessDecrypt(t, alice, sessEncrypt(t, bob, "r"), "r")
	ratchet := sessEncrypt(t, alice, "q")
	set := func(b []byte, i int, v byte) []byte { b = bytes.Clone(b); b[i] = v; return b }
	oneTimeFlag := 1 + 2*addressSize + 2*PublicKeySize + 8
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		// Bad lengths.
		{"empty", nil},
		{"type only", []byte{messageTypeRatchet}},
		{"header without ciphertext", ratchet[:1+headerSize]},
		{"ciphertext shorter than the tag", ratchet[:1+headerSize+aeadTagSize-1]},
		{"prekey without KEM ciphertext", prekey[:oneTimeFlag+5]},
		{"oversized ciphertext", append(bytes.Clone(ratchet[:1+headerSize]), make([]byte, maxCiphertextSize+1)...)},
		// Unknown types and versions.
		{"type 0", set(ratchet, 0, 0)},
		{"type 3", set(ratchet, 0, 3)},
		{"type 0x81", set(ratchet, 0, 0x81)},
		// Non-canonical flags and addresses.
		{"one-time flag 2", set(prekey, oneTimeFlag, 2)},
		{"initiator device 0", func() []byte {
			b := bytes.Clone(prekey)
			binary.BigEndian.PutUint32(b[1+AccountIDSize:], 0)
			return b
		}()},
		{"initiator is responder", func() []byte {
			b := bytes.Clone(prekey)
			copy(b[1+addressSize:1+2*addressSize], b[1:1+addressSize])
			return b
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := parseMessage(tc.in)
			if err == nil || m != nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
			if !strings.HasPrefix(err.Error(), "crypto: ") {
				t.Fatalf("error %q lacks the package prefix", err)
			}
			if err := decryptKeepsStateOnError(t, bob, tc.in); err == nil {
				t.Fatal("Decrypt accepted it")
			}
		})
	}
}

func TestWireOverhead(t *testing.T) {
	alice, bob, _, _ := newTestSessions(t)
	pre := sessEncrypt(t, alice, strings.Repeat("x", 64))
	sessDecrypt(t, alice, sessEncrypt(t, bob, "r"), "r")
	steady := sessEncrypt(t, alice, strings.Repeat("x", 64))
	if got := len(steady) - 64; got != 1+headerSize+aeadTagSize || got > 100 {
		t.Fatalf("steady overhead %d", got)
	}
	if got := len(pre) - 64; got != 1+2*addressSize+2*PublicKeySize+8+1+4+KEMCiphertextSize+headerSize+aeadTagSize {
		t.Fatalf("prekey overhead %d", got)
	}
}

// accumulatedDigest is the SHA-256 over the transcript of
// TestAccumulatedRatchet. It changes only if the protocol's bytes do.
const accumulatedDigest = "2dc4ce90888a0de9bb4885f12845b935f5a4f4dfed967e8133c37bf6e1a65595"

// TestAccumulatedRatchet runs 2000 derandomized ratchet steps (messages in
// both directions, with direction changes, skips and late deliveries) and
// hashes every message and plaintext into one digest, instead of checking
// in megabytes of vectors.
func TestAccumulatedRatchet(t *testing.T) {
	cryptotest.SetGlobalRandom(t, 2000)
	alice, bob, _, _ := newTestSessions(t)
	h := sha256.New()
	rng := sha256.Sum256([]byte("sotto accumulated ratchet"))
	type heldMessage struct {
		to  *Session
		msg []byte
		pt  string
	}
	var held []heldMessage
	parties := [2]*Session{alice, bob}
	for i := range 2000 {
		rng = sha256.Sum256(rng[:])
		from := int(rng[0] & 1)
		if rng[1] < 160 { // stay in the same direction most of the time
			from = i / 7 % 2
		}
		pt := fmt.Sprintf("message %d %x", i, rng[2:2+rng[3]%16])
		m := sessEncrypt(t, parties[from], pt)
		h.Write(m)
		if rng[4] < 40 && len(held) < 4 {
			held = append(held, heldMessage{parties[1-from], m, pt})
			continue
		}
		sessDecrypt(t, parties[1-from], m, pt)
		// Deliver held messages late, but before their chains are evicted.
		if len(held) > 0 && (rng[5] < 100 || i%8 == 0) {
			sessDecrypt(t, held[0].to, held[0].msg, held[0].pt)
			held = held[1:]
		}
	}
	for _, m := range held {
		sessDecrypt(t, m.to, m.msg, m.pt)
	}
	h.Write(sessMarshal(t, alice))
	h.Write(sessMarshal(t, bob))
	got := hex.EncodeToString(h.Sum(nil))
	if got != accumulatedDigest {
		t.Fatalf("accumulated digest %s, want %s", got, accumulatedDigest)
	}
}

// genRatchetVectors writes testdata/vectors/ratchet.txt: a conversation
// with out-of-order delivery and replays, starting from two serialized
// session states (PROTOCOL.md §4.5). Each send records the sender's
// ratchet private key, so that an implementation which injects its
// randomness can reproduce every message byte for byte.
func genRatchetVectors(t *testing.T, w *vectorWriter) {
	w.comment("Double Ratchet conversation (PROTOCOL.md §4). Start from the two session states, then apply")
	w.comment("the events in order. A send produces message N (numbered from 0 in send order); a deliver")
	w.comment("gives message N to its recipient, with the expected outcome (success or duplicate). A sender")
	w.comment("generates a new ratchet key at its first send after receiving a new remote ratchet key (§4.2);")
	w.comment("sender_ratchet_private is the key the message was sent under.")
	w.end()
	alice, bob, _, _ := newTestSessions(t)
	w.hex("alice_state", sessMarshal(t, alice))
	w.hex("bob_state", sessMarshal(t, bob))
	w.end()
	parties := map[string]*Session{"alice": alice, "bob": bob}
	var msgs [][]byte
	var pts []string
	var to []string
	send := func(from, pt string) {
		m := sessEncrypt(t, parties[from], pt)
		priv, _ := parties[from].ratchetKeyForTest()
		w.text("event", "send")
		w.num("message", uint64(len(msgs)))
		w.text("from", from)
		w.hex("sender_ratchet_private", priv[:])
		w.text("plaintext", pt)
		w.hex("bytes", m)
		w.end()
		msgs, pts = append(msgs, m), append(pts, pt)
		to = append(to, map[string]string{"alice": "bob", "bob": "alice"}[from])
	}
	deliver := func(i int, expect string) {
		pt, err := parties[to[i]].Decrypt(msgs[i])
		switch expect {
		case "success":
			if err != nil || string(pt) != pts[i] {
				t.Fatalf("message %d: %q %v", i, pt, err)
			}
		case "duplicate":
			if !errors.Is(err, ErrDuplicateMessage) {
				t.Fatalf("message %d replay: %v", i, err)
			}
		}
		w.text("event", "deliver")
		w.num("message", uint64(i))
		w.text("to", to[i])
		w.text("expect", expect)
		w.end()
	}
	send("alice", "a1 (prekey message: no reply yet)") // 0
	send("alice", "a2")                                // 1
	send("alice", "a3")                                // 2
	deliver(2, "success")
	deliver(0, "success")
	deliver(1, "success")
	deliver(0, "duplicate")
	send("bob", "b1") // 3
	send("bob", "b2") // 4
	deliver(4, "success")
	deliver(3, "success")
	send("alice", "a4 (new ratchet key)") // 5
	send("alice", "a5")                   // 6
	deliver(6, "success")
	send("bob", "b3") // 7
	deliver(7, "success")
	send("alice", "a6") // 8
	deliver(8, "success")
	deliver(5, "success") // late, from a closed chain
	deliver(5, "duplicate")
	deliver(3, "duplicate")
	w.hex("alice_final_state", sessMarshal(t, alice))
	w.hex("bob_final_state", sessMarshal(t, bob))
	w.end()
}

// TestUnansweredRatchetKey checks the rule of PROTOCOL.md §4.2: while a
// party has not answered the peer's current ratchet key, a message under
// yet another unknown key is refused without any DH and without changing
// the state.
func TestUnansweredRatchetKey(t *testing.T) {
	alice, bob, _, _ := newTestSessions(t)
	sessDecrypt(t, alice, sessEncrypt(t, bob, "r"), "r")
	sessDecrypt(t, bob, sessEncrypt(t, alice, "a"), "a") // Bob owes Alice a DH step now
	forged, _ := parseMessage(sessEncrypt(t, alice, "b"))
	copy(forged.header.dh[:], generateX25519().PublicKey().Bytes())
	if err := decryptKeepsStateOnError(t, bob, forged.marshal()); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("second unknown ratchet key: %v", err)
	}
	if bob.ratchet.sending {
		t.Fatal("Bob took a sending step without encrypting")
	}
	sessDecrypt(t, alice, sessEncrypt(t, bob, "answer"), "answer")
}
