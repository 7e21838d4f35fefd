package crypto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// testDevice is one device with its identity and an in-memory prekey
// store: the reference PreKeyLookup of these tests.
type testDevice struct {
	ik   *IdentityPrivateKey
	addr Address
	spk  map[uint32]*SignedPreKeyPair
	kem  map[uint32]*KEMPreKeyPair
	otk  map[uint32]*OneTimePreKeyPair
	next uint32
}

func newTestDevice(t testing.TB, device DeviceID) *testDevice {
	t.Helper()
	d := &testDevice{
		ik:   GenerateIdentityKey(),
		addr: Address{Account: GenerateAccountKey().ID(), Device: device},
		spk:  map[uint32]*SignedPreKeyPair{},
		kem:  map[uint32]*KEMPreKeyPair{},
		otk:  map[uint32]*OneTimePreKeyPair{},
		next: 1,
	}
	d.spk[1] = GenerateSignedPreKey(d.ik, 1)
	d.kem[1] = GenerateKEMPreKey(d.ik, 1, true) // last resort
	return d
}

func (d *testDevice) SignedPreKey(id uint32) (*SignedPreKeyPair, error) {
	if k, ok := d.spk[id]; ok {
		return k, nil
	}
	return nil, ErrUnknownPreKey
}

func (d *testDevice) KEMPreKey(id uint32) (*KEMPreKeyPair, error) {
	if k, ok := d.kem[id]; ok {
		return k, nil
	}
	return nil, ErrUnknownPreKey
}

func (d *testDevice) OneTimePreKey(id uint32) (*OneTimePreKeyPair, error) {
	if k, ok := d.otk[id]; ok {
		return k, nil
	}
	return nil, ErrUnknownPreKey
}

// bundle returns a bundle with a fresh one-time X25519 prekey (if oneTime)
// and a fresh one-time KEM prekey (if oneTimeKEM), else the last-resort one.
func (d *testDevice) bundle(oneTime, oneTimeKEM bool) *PreKeyBundle {
	b := &PreKeyBundle{Address: d.addr, Identity: d.ik.Public(), SignedPreKey: d.spk[1].SignedPreKey, KEMPreKey: d.kem[1].KEMPreKey}
	if oneTimeKEM {
		d.next++
		k := GenerateKEMPreKey(d.ik, d.next, false)
		d.kem[d.next] = k
		b.KEMPreKey = k.KEMPreKey
	}
	if oneTime {
		d.next++
		k := GenerateOneTimePreKey(d.next)
		d.otk[d.next] = k
		b.OneTimePreKey = &k.OneTimePreKey
	}
	return b
}

// consume deletes what PreKeysUsed says was consumed, as a client must.
func (d *testDevice) consume(u PreKeysUsed) {
	if u.HasOneTimePreKey {
		delete(d.otk, u.OneTimePreKeyID)
	}
	if !u.KEMLastResort {
		delete(d.kem, u.KEMPreKeyID)
	}
}

// newTestSessions sets up Alice and Bob: Alice initiates and sends
// "hello", Bob accepts it.
func newTestSessions(t testing.TB) (alice, bob *Session, a, b *testDevice) {
	t.Helper()
	a, b = newTestDevice(t, 1), newTestDevice(t, 2)
	alice, err := InitiateSession(a.ik, a.addr, b.bundle(true, true))
	if err != nil {
		t.Fatal(err)
	}
	msg, err := alice.Encrypt([]byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	bob, pt, used, err := AcceptSession(b.ik, b.addr, b, msg)
	if err != nil {
		t.Fatal(err)
	}
	if string(pt) != "hello" {
		t.Fatalf("plaintext %q", pt)
	}
	b.consume(used)
	return alice, bob, a, b
}

func sessMarshal(t testing.TB, s *Session) []byte {
	t.Helper()
	b, err := s.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sessEncrypt(t testing.TB, s *Session, pt string) []byte {
	t.Helper()
	m, err := s.Encrypt([]byte(pt))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func sessDecrypt(t testing.TB, s *Session, msg []byte, want string) {
	t.Helper()
	pt, err := s.Decrypt(msg)
	if err != nil {
		t.Fatalf("decrypt %q: %v", want, err)
	}
	if string(pt) != want {
		t.Fatalf("got %q, want %q", pt, want)
	}
}

// checkChains asserts that the sender's sending chain equals the
// receiver's current receiving chain.
func checkChains(t *testing.T, sender, receiver *Session) {
	t.Helper()
	sk, sn := sender.sendChainForTest()
	rk, rn, ok := receiver.recvChainForTest()
	if !ok || sk != rk || sn != rn {
		t.Fatalf("chains differ: sender (n=%d) receiver (n=%d, ok=%v)", sn, rn, ok)
	}
}

// checkRoots asserts that both sides hold the same root key, which is
// the case after every delivery: the sending half of a DH ratchet step is
// deferred to the next encrypt, and the receiving half reaches the
// sender's root key.
func checkRoots(t *testing.T, x, y *Session) {
	t.Helper()
	if x.rootKeyForTest() != y.rootKeyForTest() {
		t.Fatal("root keys differ")
	}
}

func TestSessionLockstep(t *testing.T) {
	a, b := newTestDevice(t, 1), newTestDevice(t, 2)
	alice, err := InitiateSession(a.ik, a.addr, b.bundle(true, true))
	if err != nil {
		t.Fatal(err)
	}
	msg := sessEncrypt(t, alice, "hello")
	bob, pt, used, err := AcceptSession(b.ik, b.addr, b, msg)
	if err != nil || string(pt) != "hello" {
		t.Fatalf("accept: %q, %v", pt, err)
	}
	if !used.HasOneTimePreKey || used.KEMLastResort || used.SignedPreKeyID != 1 {
		t.Fatalf("used = %+v", used)
	}
	checkChains(t, alice, bob)
	checkRoots(t, alice, bob)
	if !bob.HasRemoteIdentity(a.ik.Public()) || bob.HasRemoteIdentity(b.ik.Public()) || bob.HasRemoteIdentity(IdentityKey{}) {
		t.Fatal("HasRemoteIdentity is wrong")
	}
	if bob.RemoteAddress() != a.addr || !bob.RemoteIdentity().Equal(a.ik.Public()) || bob.LocalAddress() != b.addr {
		t.Fatal("Bob's session names the wrong peer")
	}
	if alice.RemoteAddress() != b.addr || !alice.RemoteIdentity().Equal(b.ik.Public()) {
		t.Fatal("Alice's session names the wrong peer")
	}

	// A script of turns: positive counts are Alice→Bob, negative Bob→Alice.
	parties := map[bool]*Session{true: alice, false: bob}
	turn := 0
	for _, count := range []int{2, -1, -3, 1, 4, -2, 1, -1, 1} {
		fromAlice := count > 0
		sender, receiver := parties[fromAlice], parties[!fromAlice]
		if count < 0 {
			count = -count
		}
		for i := range count {
			turn++
			text := fmt.Sprintf("turn %d", turn)
			rootBefore := sender.rootKeyForTest()
			stepDue := !sender.ratchet.sending
			pending := sender.pending != nil
			m := sessEncrypt(t, sender, text)
			if IsPreKeyMessage(m) != pending {
				t.Fatalf("turn %d: prekey message = %v, want %v", turn, !pending, pending)
			}
			sessDecrypt(t, receiver, m, text)
			checkChains(t, sender, receiver)
			checkRoots(t, sender, receiver)
			// The first message after a change of direction moved the root
			// (the sender's deferred DH step); others do not.
			if moved := sender.rootKeyForTest() != rootBefore; moved != stepDue || (stepDue && i != 0) {
				t.Fatalf("turn %d: root moved = %v", turn, moved)
			}
		}
	}
}

func TestPreKeyMessagesUntilReply(t *testing.T) {
	a, b := newTestDevice(t, 1), newTestDevice(t, 2)
	alice, err := InitiateSession(a.ik, a.addr, b.bundle(false, false))
	if err != nil {
		t.Fatal(err)
	}
	m1 := sessEncrypt(t, alice, "one")
	m2 := sessEncrypt(t, alice, "two")
	if !IsPreKeyMessage(m1) || !IsPreKeyMessage(m2) {
		t.Fatal("initiator's messages before a reply must be prekey messages")
	}
	// Out of order: the second prekey message starts the session.
	bob, pt, used, err := AcceptSession(b.ik, b.addr, b, m2)
	if err != nil || string(pt) != "two" {
		t.Fatalf("accept: %q %v", pt, err)
	}
	if used.HasOneTimePreKey || !used.KEMLastResort {
		t.Fatalf("used = %+v", used)
	}
	sessDecrypt(t, bob, m1, "one")
	if _, err := bob.Decrypt(m1); !errors.Is(err, ErrDuplicateMessage) {
		t.Fatalf("replayed prekey message: %v", err)
	}
	sessDecrypt(t, alice, sessEncrypt(t, bob, "reply"), "reply")
	m3 := sessEncrypt(t, alice, "three")
	if IsPreKeyMessage(m3) {
		t.Fatal("prekey message after the reply was decrypted")
	}
	sessDecrypt(t, bob, m3, "three")

	// A prekey message of another run is a new session, for either side.
	other, err := InitiateSession(a.ik, a.addr, b.bundle(true, false))
	if err != nil {
		t.Fatal(err)
	}
	fresh := sessEncrypt(t, other, "again")
	if _, err := bob.Decrypt(fresh); !errors.Is(err, ErrNewSession) {
		t.Fatalf("new prekey message on an old session: %v", err)
	}
	if _, err := alice.Decrypt(fresh); !errors.Is(err, ErrNewSession) {
		t.Fatalf("prekey message to the initiator: %v", err)
	}
}

func TestOneTimePreKeyReuseRefused(t *testing.T) {
	a, b := newTestDevice(t, 1), newTestDevice(t, 2)
	bundle := b.bundle(true, true)
	alice, err := InitiateSession(a.ik, a.addr, bundle)
	if err != nil {
		t.Fatal(err)
	}
	first := sessEncrypt(t, alice, "first")
	_, _, used, err := AcceptSession(b.ik, b.addr, b, first)
	if err != nil {
		t.Fatal(err)
	}
	b.consume(used)

	// The same initial message again, and a second initiator that got the
	// same (stale) bundle: both name consumed keys.
	if _, _, _, err := AcceptSession(b.ik, b.addr, b, first); !errors.Is(err, ErrUnknownPreKey) {
		t.Fatalf("replayed initial message: %v", err)
	}
	c := newTestDevice(t, 3)
	carol, err := InitiateSession(c.ik, c.addr, bundle)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := AcceptSession(b.ik, b.addr, b, sessEncrypt(t, carol, "hi")); !errors.Is(err, ErrUnknownPreKey) {
		t.Fatalf("second initial message with a deleted one-time prekey: %v", err)
	}
	// With only the KEM prekey consumed, the message is still refused.
	bundle2 := b.bundle(false, true)
	carol2, _ := InitiateSession(c.ik, c.addr, bundle2)
	m := sessEncrypt(t, carol2, "hi")
	_, _, used, err = AcceptSession(b.ik, b.addr, b, m)
	if err != nil {
		t.Fatal(err)
	}
	b.consume(used)
	if _, _, _, err := AcceptSession(b.ik, b.addr, b, m); !errors.Is(err, ErrUnknownPreKey) {
		t.Fatalf("one-time KEM prekey reused: %v", err)
	}
}

func TestSessionSerializationMidConversation(t *testing.T) {
	alice, bob, a, _ := newTestSessions(t)
	roundTrip := func(s *Session) *Session {
		t.Helper()
		data := sessMarshal(t, s)
		p, err := ParseSession(data)
		if err != nil {
			t.Fatal(err)
		}
		if again := sessMarshal(t, p); !bytes.Equal(again, data) {
			t.Fatal("parse then marshal differs")
		}
		return p
	}
	alice = roundTrip(alice) // still pending: prekey fields serialized
	skipped := sessEncrypt(t, alice, "skipped")
	sessDecrypt(t, bob, sessEncrypt(t, alice, "a1"), "a1")
	bob = roundTrip(bob) // with a skipped key
	sessDecrypt(t, alice, sessEncrypt(t, bob, "b1"), "b1")
	alice = roundTrip(alice)
	sessDecrypt(t, bob, sessEncrypt(t, alice, "a2"), "a2")
	bob = roundTrip(bob) // a closed chain with a skipped key
	sessDecrypt(t, bob, skipped, "skipped")
	bob = roundTrip(bob)
	if _, err := bob.Decrypt(skipped); !errors.Is(err, ErrDuplicateMessage) {
		t.Fatalf("replay after round trip: %v", err)
	}
	sessDecrypt(t, alice, sessEncrypt(t, bob, "b2"), "b2")
	if !bob.RemoteIdentity().Equal(a.ik.Public()) {
		t.Fatal("identity lost in round trip")
	}

	data := sessMarshal(t, bob)
	for _, v := range []byte{0, 2, 0xff} {
		bad := bytes.Clone(data)
		bad[0] = v
		if _, err := ParseSession(bad); !errors.Is(err, ErrMalformed) {
			t.Fatalf("version %d accepted: %v", v, err)
		}
	}
	for n := range len(data) {
		if s, err := ParseSession(data[:n]); err == nil || s != nil {
			t.Fatalf("truncation to %d bytes accepted", n)
		}
	}
	if _, err := ParseSession(append(bytes.Clone(data), 0)); err == nil {
		t.Fatal("trailing byte accepted")
	}
}

func TestWrongIdentity(t *testing.T) {
	a, b := newTestDevice(t, 1), newTestDevice(t, 2)
	// A bundle whose prekeys another identity signed.
	bundle := b.bundle(true, false)
	bundle.Identity = GenerateIdentityKey().Public()
	if _, err := InitiateSession(a.ik, a.addr, bundle); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("foreign-signed bundle: %v", err)
	}

	// Mallory claims Alice's identity and address in a prekey message but
	// does not hold Alice's private key: DH1 differs, the AEAD fails.
	mallory := &testDevice{ik: GenerateIdentityKey(), addr: a.addr}
	ms, err := InitiateSession(mallory.ik, mallory.addr, b.bundle(false, false))
	if err != nil {
		t.Fatal(err)
	}
	forged := sessEncrypt(t, ms, "i am alice")
	m, _ := parseMessage(forged)
	m.preKey.identity = a.ik.pub.ed
	if _, _, _, err := AcceptSession(b.ik, b.addr, b, m.marshal()); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("forged initiator identity: %v", err)
	}

	// A message of another session.
	alice, bob, _, _ := newTestSessions(t)
	_, bob2, _, _ := newTestSessions(t)
	msg := sessEncrypt(t, alice, "x")
	if _, err := bob2.Decrypt(msg); !errors.Is(err, ErrNewSession) {
		t.Fatalf("prekey message of another session: %v", err)
	}
	sessDecrypt(t, alice, sessEncrypt(t, bob, "y"), "y")
	msg = sessEncrypt(t, alice, "z")
	if _, err := bob2.Decrypt(msg); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("ratchet message of another session: %v", err)
	}

	// A prekey message addressed to another device of Bob's.
	a2 := newTestDevice(t, 1)
	s, _ := InitiateSession(a2.ik, a2.addr, b.bundle(false, false))
	other := b.addr
	other.Device = 7
	if _, _, _, err := AcceptSession(b.ik, other, b, sessEncrypt(t, s, "x")); err == nil {
		t.Fatal("prekey message for another address accepted")
	}
	if _, err := InitiateSession(a.ik, b.addr, b.bundle(false, false)); err == nil {
		t.Fatal("session with oneself accepted")
	}
}

func TestSessionStringRedacts(t *testing.T) {
	alice, _, _, _ := newTestSessions(t)
	root := alice.rootKeyForTest()
	for _, s := range []string{fmt.Sprint(alice), fmt.Sprintf("%v %+v", alice, alice.ratchet.root)} {
		if bytes.Contains([]byte(s), []byte(fmt.Sprintf("%x", root[:4]))) {
			t.Fatalf("%q prints key material", s)
		}
	}
}

// TestParseSessionHostile builds states that MarshalBinary never produces
// and checks that ParseSession refuses each (PROTOCOL.md §4.5).
func TestParseSessionHostile(t *testing.T) {
	alice, bob, _, _ := newTestSessions(t)
	pendingState := sessMarshal(t, alice) // initiator, pending, no chains
	sessEncrypt(t, bob, "r")
	state := sessMarshal(t, bob) // responder, sending, one chain

	// Offsets in a state without pending fields.
	const (
		roleOff    = 1
		localDev   = 2 + AccountIDSize
		remoteAcct = 2 + addressSize + PublicKeySize
		remoteDev  = remoteAcct + AccountIDSize
		pendingOff = 2 + 2*(addressSize+PublicKeySize) + PublicKeySize
		sendingOff = pendingOff + 1 + keySize
		countOff   = sendingOff + 1 + 3*keySize + 8
	)
	if state[countOff] != 1 || state[sendingOff] != 1 || state[pendingOff] != 0 {
		t.Fatalf("unexpected test state layout")
	}
	set := func(b []byte, i int, v byte) []byte { b = bytes.Clone(b); b[i] = v; return b }
	chain := state[countOff+1 : len(state)-keySize] // remote [32] || next u32 || count u16 (0)
	withChains := func(n int, mutate func(i int, c []byte) []byte) []byte {
		b := bytes.Clone(state[:countOff])
		b = append(b, byte(n))
		for i := range n {
			c := bytes.Clone(chain)
			c[0] = byte(i) // distinct remote keys
			if mutate != nil {
				c = mutate(i, c)
			}
			b = append(b, c...)
		}
		return append(b, state[len(state)-keySize:]...)
	}
	skipped := func(c []byte, ns ...uint32) []byte {
		binary.BigEndian.PutUint32(c[32:], 10) // next
		binary.BigEndian.PutUint16(c[36:], uint16(len(ns)))
		for _, n := range ns {
			c = binary.BigEndian.AppendUint32(c, n)
			c = append(c, make([]byte, keySize)...)
		}
		return c
	}
	manyKeys := func(perChain int) func(int, []byte) []byte {
		return func(_ int, c []byte) []byte {
			ns := make([]uint32, perChain)
			for j := range ns {
				ns[j] = uint32(j)
			}
			c = skipped(c, ns...)
			binary.BigEndian.PutUint32(c[32:], uint32(perChain))
			return c
		}
	}
	// Controls: the constructions below are valid until mutated.
	for i, in := range [][]byte{
		withChains(1, nil),
		withChains(MaxReceiverChains, nil),
		withChains(1, func(i int, c []byte) []byte { return skipped(c, 2, 3) }),
		withChains(MaxReceiverChains, manyKeys(MaxSkippedKeys/MaxReceiverChains)),
	} {
		s, err := ParseSession(in)
		if err != nil {
			t.Fatalf("control %d refused: %v", i, err)
		}
		if !bytes.Equal(sessMarshal(t, s), in) {
			t.Fatalf("control %d does not round-trip", i)
		}
	}
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		// Unknown versions and flags.
		{"version 2", set(state, 0, 2)},
		{"role 0", set(state, roleOff, 0)},
		{"role 3", set(state, roleOff, 3)},
		{"pending flag 2", set(state, pendingOff, 2)},
		{"sending flag 2", set(state, sendingOff, 2)},
		// Inconsistent roles and flags.
		{"pending fields on the responder", set(pendingState, roleOff, byte(roleResponder))},
		{"initiator with chains but pending flag", func() []byte {
			b := set(state, roleOff, byte(roleInitiator))
			return append(append(b[:pendingOff:pendingOff], 1), b[pendingOff+1:]...)
		}()},
		{"initiator without pending fields or chains", set(pendingState, pendingOff, 0)},
		{"responder without chains", withChains(0, nil)},
		// Bad addresses.
		{"local device 0", func() []byte { b := bytes.Clone(state); binary.BigEndian.PutUint32(b[localDev:], 0); return b }()},
		{"remote device 0", func() []byte { b := bytes.Clone(state); binary.BigEndian.PutUint32(b[remoteDev:], 0); return b }()},
		// Chain bounds and ordering.
		{"too many chains", withChains(MaxReceiverChains+1, nil)},
		{"repeated chain", withChains(2, func(i int, c []byte) []byte { c[0] = 0; return c })},
		{"skipped keys out of order", withChains(1, func(i int, c []byte) []byte { return skipped(c, 3, 2) })},
		{"repeated skipped key", withChains(1, func(i int, c []byte) []byte { return skipped(c, 3, 3) })},
		{"skipped key not below next", withChains(1, func(i int, c []byte) []byte { return skipped(c, 10) })},
		{"too many skipped keys", withChains(MaxReceiverChains, manyKeys(MaxSkippedKeys/MaxReceiverChains+1))},
		// Lengths.
		{"empty", nil},
		{"trailing byte", append(bytes.Clone(state), 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseSession(tc.in)
			if err == nil || s != nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrMalformed) || !strings.HasPrefix(err.Error(), "crypto: ") {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

func TestMarshalBinaryAllocatesOnce(t *testing.T) {
	alice, bob, _, _ := newTestSessions(t)
	sessEncrypt(t, alice, "skipped")
	sessDecrypt(t, bob, sessEncrypt(t, alice, "a"), "a")
	for _, s := range []*Session{alice, bob} {
		data := sessMarshal(t, s)
		if cap(data) < len(data) || s.binarySize() < len(data) {
			t.Fatalf("binarySize %d < %d", s.binarySize(), len(data))
		}
		if n := testing.AllocsPerRun(20, func() { s.MarshalBinary() }); n != 1 {
			t.Fatalf("MarshalBinary allocates %v times", n)
		}
	}
}
