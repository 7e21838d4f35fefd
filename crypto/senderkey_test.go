package crypto

import (
	"bytes"
	"errors"
	"testing"
)

func (r *GroupReceiver) marshalForTest(t testing.TB) []byte {
	t.Helper()
	b, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newGroupPair(t testing.TB) (*SenderKey, *GroupReceiver) {
	t.Helper()
	g := GroupID{1, 2, 3}
	sk := NewSenderKey(g)
	r := NewGroupReceiver(g)
	if err := r.Process(sk.Distribution()); err != nil {
		t.Fatal(err)
	}
	return sk, r
}

func mustGroupEncrypt(t testing.TB, sk *SenderKey, pt string) []byte {
	t.Helper()
	m, err := sk.Encrypt([]byte(pt))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestGroupLockstep(t *testing.T) {
	sk, r := newGroupPair(t)
	for i := range 5 {
		pt := bytes.Repeat([]byte{byte(i)}, i*100)
		msg, err := sk.Encrypt(pt)
		if err != nil {
			t.Fatal(err)
		}
		if len(msg) != GroupMessageOverhead+len(pt) {
			t.Fatalf("message length %d", len(msg))
		}
		got, err := r.Decrypt(msg)
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("message %d: %v", i, err)
		}
		if r.states[0].chain != sk.chain || r.states[0].iteration != sk.iteration {
			t.Fatalf("message %d: chains differ", i)
		}
		if _, err := r.Decrypt(msg); !errors.Is(err, ErrDuplicateMessage) {
			t.Fatalf("replay %d: %v", i, err)
		}
	}
}

func TestGroupOutOfOrderAndBounds(t *testing.T) {
	sk, r := newGroupPair(t)
	var msgs [][]byte
	for i := range 5 {
		msgs = append(msgs, mustGroupEncrypt(t, sk, string(rune('a'+i))))
	}
	for _, i := range []int{4, 2, 0, 1, 3} {
		got, err := r.Decrypt(msgs[i])
		if err != nil || string(got) != string(rune('a'+i)) {
			t.Fatalf("message %d: %q %v", i, got, err)
		}
	}
	for i := range msgs {
		if _, err := r.Decrypt(msgs[i]); !errors.Is(err, ErrDuplicateMessage) {
			t.Fatalf("replay %d: %v", i, err)
		}
	}
	if n := len(r.states[0].skipped); n != 0 {
		t.Fatalf("%d skipped keys left", n)
	}

	// Exactly MaxGroupSkip ahead is accepted; one more is refused.
	var last []byte
	for range MaxGroupSkip + 1 {
		last = mustGroupEncrypt(t, sk, "jump")
	}
	before := r.marshalForTest(t)
	tooFar := mustGroupEncrypt(t, sk, "too far")
	if _, err := r.Decrypt(tooFar); !errors.Is(err, ErrTooManySkipped) {
		t.Fatalf("beyond MaxGroupSkip: %v", err)
	}
	if !bytes.Equal(before, r.marshalForTest(t)) {
		t.Fatal("refused message changed the state")
	}
	if _, err := r.Decrypt(last); err != nil {
		t.Fatalf("at MaxGroupSkip: %v", err)
	}
	if n := len(r.states[0].skipped); n != MaxGroupSkip {
		t.Fatalf("%d skipped keys, want %d", n, MaxGroupSkip)
	}
	// tooFar is now 1 ahead; a further full jump evicts the oldest keys.
	if _, err := r.Decrypt(tooFar); err != nil {
		t.Fatal(err)
	}
	if n := len(r.states[0].skipped); n != MaxGroupSkippedKeys {
		t.Fatalf("%d skipped keys, want the cap %d", n, MaxGroupSkippedKeys)
	}
}

func TestGroupSkippedKeysEviction(t *testing.T) {
	sk, r := newGroupPair(t)
	first := mustGroupEncrypt(t, sk, "first")
	for range MaxGroupSkip - 1 {
		mustGroupEncrypt(t, sk, "x")
	}
	if _, err := r.Decrypt(mustGroupEncrypt(t, sk, "y")); err != nil {
		t.Fatal(err)
	}
	if len(r.states[0].skipped) != MaxGroupSkip {
		t.Fatal("skipped keys not kept")
	}
	mustGroupEncrypt(t, sk, "z") // one more skipped key evicts "first"
	if _, err := r.Decrypt(mustGroupEncrypt(t, sk, "w")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Decrypt(first); !errors.Is(err, ErrDuplicateMessage) {
		t.Fatalf("evicted key: %v", err)
	}
}

func TestGroupTamperTruncate(t *testing.T) {
	sk, r := newGroupPair(t)
	msg := mustGroupEncrypt(t, sk, "hello group")
	before := r.marshalForTest(t)
	for i := range msg {
		bad := bytes.Clone(msg)
		bad[i] ^= 0x04
		if pt, err := r.Decrypt(bad); err == nil || pt != nil {
			t.Fatalf("flipped byte %d accepted", i)
		}
	}
	for n := range len(msg) {
		if pt, err := r.Decrypt(msg[:n]); err == nil || pt != nil {
			t.Fatalf("truncation to %d accepted", n)
		}
	}
	if _, err := r.Decrypt(append(bytes.Clone(msg), 0)); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("extension: %v", err)
	}
	if !bytes.Equal(before, r.marshalForTest(t)) {
		t.Fatal("failed decryptions changed the state")
	}
	if _, err := r.Decrypt(msg); err != nil {
		t.Fatal(err)
	}
	// A message signed by another key with the same key ID is refused.
	forger := NewSenderKey(sk.group)
	forger.keyID, forger.iteration, forger.chain = sk.keyID, sk.iteration, sk.chain
	if _, err := r.Decrypt(mustGroupEncrypt(t, forger, "forged")); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("forged signature: %v", err)
	}
}

func TestGroupRotationAndDistribution(t *testing.T) {
	sk, r := newGroupPair(t)
	old := mustGroupEncrypt(t, sk, "before rotation")
	keys := []*SenderKey{sk}
	for range MaxSenderKeyStates {
		keys = append(keys, keys[len(keys)-1].Rotate())
	}
	newKey := keys[1]
	if newKey.KeyID() == sk.KeyID() {
		t.Fatal("rotation kept the key ID")
	}
	if err := r.Process(newKey.Distribution()); err != nil {
		t.Fatal(err)
	}
	if got, err := r.Decrypt(old); err != nil || string(got) != "before rotation" {
		t.Fatalf("late message of the old key: %v", err)
	}
	if got, err := r.Decrypt(mustGroupEncrypt(t, newKey, "after")); err != nil || string(got) != "after" {
		t.Fatalf("new key: %v", err)
	}
	// A stale distribution of a key already held does not rewind the chain.
	stale := NewGroupReceiver(sk.group)
	_ = stale
	if err := r.Process(sk.Distribution()); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Decrypt(old); !errors.Is(err, ErrDuplicateMessage) {
		t.Fatalf("replay after stale distribution: %v", err)
	}
	// Beyond MaxSenderKeyStates the oldest key is dropped.
	for _, k := range keys[2:] {
		if err := r.Process(k.Distribution()); err != nil {
			t.Fatal(err)
		}
	}
	if len(r.states) != MaxSenderKeyStates {
		t.Fatalf("%d states", len(r.states))
	}
	if _, err := r.Decrypt(mustGroupEncrypt(t, sk, "old key")); !errors.Is(err, ErrNoSenderKey) {
		t.Fatalf("dropped key: %v", err)
	}
	// Distributions and messages for another group are refused.
	other := NewSenderKey(GroupID{9})
	if err := r.Process(other.Distribution()); err == nil {
		t.Fatal("distribution for another group accepted")
	}
	if _, err := r.Decrypt(mustGroupEncrypt(t, other, "x")); !errors.Is(err, ErrMalformed) {
		t.Fatalf("message for another group: %v", err)
	}
}

func TestGroupSerializationMidConversation(t *testing.T) {
	sk, r := newGroupPair(t)
	msgs := [][]byte{mustGroupEncrypt(t, sk, "0"), mustGroupEncrypt(t, sk, "1"), mustGroupEncrypt(t, sk, "2")}
	if _, err := r.Decrypt(msgs[2]); err != nil {
		t.Fatal(err)
	}
	rb := r.marshalForTest(t)
	r2, err := ParseGroupReceiver(rb)
	if err != nil {
		t.Fatal(err)
	}
	if again := r2.marshalForTest(t); !bytes.Equal(again, rb) {
		t.Fatal("receiver round trip differs")
	}
	skb, _ := sk.MarshalBinary()
	sk2, err := ParseSenderKey(skb)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := sk2.MarshalBinary(); !bytes.Equal(again, skb) {
		t.Fatal("sender key round trip differs")
	}
	for _, m := range [][]byte{msgs[0], mustGroupEncrypt(t, sk2, "3"), msgs[1]} {
		if _, err := r2.Decrypt(m); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r2.Decrypt(msgs[2]); !errors.Is(err, ErrDuplicateMessage) {
		t.Fatalf("replay after restore: %v", err)
	}
}

func TestGroupHostileEncodings(t *testing.T) {
	sk, r := newGroupPair(t)
	mustGroupEncrypt(t, sk, "a")
	m1 := mustGroupEncrypt(t, sk, "b")
	if _, err := r.Decrypt(m1); err != nil {
		t.Fatal(err)
	}
	valid := r.marshalForTest(t)
	dist := sk.Distribution()
	skb, _ := sk.MarshalBinary()
	badSkippedOrder := bytes.Clone(valid)
	badSkippedOrder[1+16+1+4+3] = 0 // iteration 0 < skipped iteration 0: not before the chain
	dup := append([]byte{groupReceiverVersion}, valid[1:17]...)
	dup = append(dup, 2)
	dup = append(dup, valid[18:]...)
	dup = append(dup, valid[18:]...)
	lowOrderDist := bytes.Clone(dist)
	copy(lowOrderDist[len(dist)-32:], make([]byte, 32))
	lowOrderDist[len(dist)-32] = 1 // the identity point
	cases := []struct {
		name string
		fn   func() error
	}{
		// bad lengths and versions
		{"receiver empty", func() error { _, err := ParseGroupReceiver(nil); return err }},
		{"receiver version", func() error { b := bytes.Clone(valid); b[0] = 2; _, err := ParseGroupReceiver(b); return err }},
		{"receiver trailing", func() error { _, err := ParseGroupReceiver(append(bytes.Clone(valid), 0)); return err }},
		{"receiver too many states", func() error {
			b := bytes.Clone(valid)
			b[17] = MaxSenderKeyStates + 1
			_, err := ParseGroupReceiver(b)
			return err
		}},
		// non-canonical contents
		{"receiver skipped not before chain", func() error { _, err := ParseGroupReceiver(badSkippedOrder); return err }},
		{"receiver duplicate key ID", func() error { _, err := ParseGroupReceiver(dup); return err }},
		{"sender key short", func() error { _, err := ParseSenderKey(skb[:len(skb)-1]); return err }},
		{"sender key version", func() error { b := bytes.Clone(skb); b[0] = 0; _, err := ParseSenderKey(b); return err }},
		{"distribution short", func() error { return NewGroupReceiver(sk.group).Process(dist[:len(dist)-1]) }},
		{"distribution version", func() error {
			b := bytes.Clone(dist)
			b[0] = 2
			return NewGroupReceiver(sk.group).Process(b)
		}},
		// low-order signing key
		{"distribution low-order key", func() error { return NewGroupReceiver(sk.group).Process(lowOrderDist) }},
		{"message unknown key", func() error { _, err := NewGroupReceiver(sk.group).Decrypt(m1); return err }},
	}
	for _, c := range cases {
		err := c.fn()
		if err == nil {
			t.Errorf("%s: accepted", c.name)
		} else if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrInvalidKey) && !errors.Is(err, ErrNoSenderKey) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	for n := range len(valid) {
		if r, err := ParseGroupReceiver(valid[:n]); err == nil || r != nil {
			t.Fatalf("receiver truncated to %d accepted", n)
		}
	}
}

func FuzzParseGroupReceiver(f *testing.F) {
	for _, seed := range envVectorHex(f, "senderkey.txt", "receiver_state") {
		f.Add(seed)
	}
	sk, r := newGroupPair(f)
	mustGroupEncrypt(f, sk, "a")
	r.Decrypt(mustGroupEncrypt(f, sk, "b"))
	f.Add(r.marshalForTest(f))
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := ParseGroupReceiver(in)
		if err != nil {
			if r != nil {
				t.Fatal("non-nil receiver on error")
			}
			return
		}
		if !bytes.Equal(r.marshalForTest(t), in) {
			t.Fatal("parse then marshal differs")
		}
	})
}

func FuzzParseSenderKey(f *testing.F) {
	for _, seed := range envVectorHex(f, "senderkey.txt", "sender_key_state") {
		f.Add(seed)
	}
	b, _ := NewSenderKey(GroupID{1}).MarshalBinary()
	f.Add(b)
	f.Fuzz(func(t *testing.T, in []byte) {
		k, err := ParseSenderKey(in)
		if err != nil {
			if k != nil {
				t.Fatal("non-nil key on error")
			}
			return
		}
		out, _ := k.MarshalBinary()
		if !bytes.Equal(out, in) {
			t.Fatal("parse then marshal differs")
		}
	})
}

func FuzzSenderKeyDistribution(f *testing.F) {
	for _, seed := range envVectorHex(f, "senderkey.txt", "distribution") {
		f.Add(seed)
	}
	f.Add(NewSenderKey(GroupID{1}).Distribution())
	f.Fuzz(func(t *testing.T, in []byte) {
		r := NewGroupReceiver(GroupID{1})
		if err := r.Process(in); err != nil {
			if len(r.states) != 0 {
				t.Fatal("failed Process changed the receiver")
			}
			return
		}
		st := r.states[0]
		k := &SenderKey{group: r.group, keyID: st.keyID, iteration: st.iteration, chain: st.chain}
		out := k.distributionWithPublic(st.signing[:])
		if !bytes.Equal(out, in) {
			t.Fatal("distribution does not round trip")
		}
	})
}

// distributionWithPublic rebuilds a distribution message from its parts.
func (k *SenderKey) distributionWithPublic(pub []byte) []byte {
	b := []byte{senderKeyDistributionVersion}
	b = append(b, k.group[:]...)
	b = append(b, byte(k.keyID>>24), byte(k.keyID>>16), byte(k.keyID>>8), byte(k.keyID))
	b = append(b, byte(k.iteration>>24), byte(k.iteration>>16), byte(k.iteration>>8), byte(k.iteration))
	b = append(b, k.chain[:]...)
	return append(b, pub...)
}

func FuzzGroupDecrypt(f *testing.F) {
	for _, seed := range envVectorHex(f, "senderkey.txt", "message") {
		f.Add(seed)
	}
	sk, r := newGroupPair(f)
	f.Add(mustGroupEncrypt(f, sk, "seed"))
	f.Add(mustGroupEncrypt(f, sk, "seed 2"))
	before := r.marshalForTest(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		r2, _ := ParseGroupReceiver(before)
		pt, err := r2.Decrypt(in)
		if err != nil {
			if pt != nil {
				t.Fatal("non-nil plaintext on error")
			}
			if !bytes.Equal(r2.marshalForTest(t), before) {
				t.Fatal("failed decryption changed the state")
			}
		}
	})
}

func genSenderKeyVectors(t *testing.T, w *vectorWriter) {
	w.comment("Sender keys (PROTOCOL.md §7). The receiver processes the distribution, then")
	w.comment("decrypts the messages in the order given; expect says what Decrypt returns.")
	sk := NewSenderKey(GroupID{0x50, 0x07, 0x70})
	r := NewGroupReceiver(sk.Group())
	skb, _ := sk.MarshalBinary()
	w.hex("sender_key_state", skb)
	w.hex("distribution", sk.Distribution())
	w.end()
	if err := r.Process(sk.Distribution()); err != nil {
		t.Fatal(err)
	}
	var msgs [][]byte
	for i := range 3 {
		msgs = append(msgs, mustGroupEncrypt(t, sk, "group message "+string(rune('0'+i))))
	}
	for _, step := range []struct {
		i      int
		expect string
	}{{0, "success"}, {2, "success"}, {1, "success"}, {2, "replay"}} {
		pt, err := r.Decrypt(msgs[step.i])
		switch {
		case step.expect == "success" && err != nil, step.expect == "replay" && !errors.Is(err, ErrDuplicateMessage):
			t.Fatalf("vector step %d: %v", step.i, err)
		}
		w.num("iteration", uint64(step.i))
		w.hex("message", msgs[step.i])
		if pt != nil {
			w.hex("plaintext", pt)
		}
		w.text("expect", step.expect)
		w.end()
	}
	w.comment("Receiver state after the steps above.")
	w.hex("receiver_state", r.marshalForTest(t))
	w.end()
}
