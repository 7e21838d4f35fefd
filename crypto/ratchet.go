package crypto

import (
	"crypto/ecdh"
	"fmt"
	"math"
	"slices"
)

// This file implements the Double Ratchet of PROTOCOL.md §4, after
// Signal's Double Ratchet specification: a DH ratchet over
// X25519 and symmetric-key chains per direction. Unlike the specification's
// single dictionary of skipped keys, skipped message keys are kept per
// receiving chain, oldest chain first, which gives the eviction order and
// the canonical serialization (§4.5) for free.
//
// Decryption never modifies the state in place before the AEAD opened: it
// computes into locals (or into a clone, for a DH ratchet step) and commits
// only on success.

// Specification constants of the Double Ratchet (PROTOCOL.md §12).
const (
	// MaxSkip is the furthest a message's counter may run ahead of the
	// next expected counter of its chain (and how many keys one step may
	// skip). It is checked before any Diffie-Hellman operation, so a forged
	// header cannot make the receiver derive many keys.
	MaxSkip = 1000
	// MaxSkippedKeys bounds the skipped message keys a session stores in
	// total. When it would be exceeded, the oldest keys are evicted; their
	// messages then decrypt as duplicates.
	MaxSkippedKeys = 2000
	// MaxReceiverChains bounds the receiving chains (remote ratchet keys) a
	// session keeps skipped keys for, the current one included. Older chains
	// are dropped with their skipped keys.
	MaxReceiverChains = 5
)

// receiverChain is one receiving chain: the remote ratchet key that names
// it, the next counter expected, the keys of messages skipped in it, and,
// for the current (newest) chain only, its chain key. Older chains are
// closed: their chain key is erased and only their skipped keys remain.
type receiverChain struct {
	remote  [PublicKeySize]byte
	next    uint32
	key     chainKey // meaningful only for the newest chain
	skipped []skippedKey
}

// skippedKey is the message key of a message not yet received.
type skippedKey struct {
	n  uint32
	mk messageKey
}

// ratchetState is the Double Ratchet state of one session (PROTOCOL.md
// §4.5). All of it must be kept secret.
type ratchetState struct {
	root rootKey

	// sending reports whether the ratchet key pair (DHs) and the sending
	// chain exist. It is false between receiving a new remote ratchet key
	// and the next encrypt: the sending half of that DH ratchet step is
	// deferred until it is needed (§4.2).
	sending bool

	// The current ratchet key pair (DHs), as bytes (keyPair).
	selfPriv [32]byte
	selfPub  [PublicKeySize]byte

	send      chainKey // CKs
	sendN     uint32   // Ns: messages sent in the current (or, while !sending, the last) sending chain
	prevSendN uint32   // PN

	chains   []receiverChain // oldest first; the last one is current
	nSkipped int             // total skipped keys over all chains
}

// clone returns a deep copy of the state.
func (r *ratchetState) clone() *ratchetState {
	c := *r
	c.chains = make([]receiverChain, len(r.chains), max(len(r.chains), MaxReceiverChains))
	for i, ch := range r.chains {
		c.chains[i] = ch
		c.chains[i].skipped = slices.Clone(ch.skipped)
	}
	return &c
}

func (r *ratchetState) setSelf(k *keyPair) {
	r.selfPriv, r.selfPub = k.priv, k.pub
}

// self is the current ratchet key pair.
func (r *ratchetState) self() *keyPair {
	return &keyPair{priv: r.selfPriv, pub: r.selfPub}
}

// initInitiator sets up the initiator's ratchet after PQXDH. It implements
// PROTOCOL.md §4.2 (initialization): the responder's signed prekey is its
// first ratchet key.
//
//	root key, sending chain key = KDF_RK(SK, DH(ratchet key, SPK_B))
func initInitiator(sk [32]byte, self *keyPair, spk *ecdh.PublicKey) (*ratchetState, error) {
	dh, err := self.dh(spk)
	if err != nil {
		return nil, err
	}
	r := &ratchetState{sending: true}
	r.setSelf(self)
	r.root, r.send = rootKey{b: sk}.step(dh)
	clear(dh)
	return r, nil
}

// initResponder sets up the responder's ratchet after PQXDH: its signed
// prekey is its first ratchet key and SK the root key. It has no sending
// chain until it has received the initiator's first message and sends
// itself (§4.2).
func initResponder(sk [32]byte, spk *ecdh.PrivateKey) *ratchetState {
	r := new(ratchetState)
	r.setSelf(keyPairFrom(spk))
	r.root = rootKey{b: sk}
	return r
}

// encrypt seals plaintext as the next message of the sending chain,
// appending header and ciphertext to prefix (which the caller built: the
// message type and, for a prekey message, the PQXDH fields). It implements
// PROTOCOL.md §4.3 (sending).
//
//	message key, CKs = KDF_CK(CKs)
//	ciphertext = AES-256-GCM(message key, plaintext, AD = session AD || prefix || header)
func (r *ratchetState) encrypt(prefix []byte, sessionAD, plaintext []byte) ([]byte, error) {
	if len(plaintext) > MaxPlaintextSize {
		return nil, fmt.Errorf("crypto: ratchet: plaintext longer than %d bytes", MaxPlaintextSize)
	}
	if !r.sending {
		if err := r.sendingStep(); err != nil {
			return nil, err
		}
	}
	if r.sendN == math.MaxUint32 {
		return nil, fmt.Errorf("crypto: ratchet: sending chain exhausted")
	}
	h := header{dh: r.selfPub, pn: r.prevSendN, n: r.sendN}
	// One buffer holds session AD || prefix || header || ciphertext; the
	// message is its tail, so the associated data costs no second buffer.
	buf := make([]byte, 0, len(sessionAD)+len(prefix)+headerSize+len(plaintext)+aeadTagSize)
	buf = append(buf, sessionAD...)
	buf = append(buf, prefix...)
	buf = h.append(buf)
	mk, next := r.send.next()
	buf = mk.seal(buf, plaintext, buf)
	r.send = next
	r.sendN++
	return buf[len(sessionAD):], nil
}

// sendingStep is the sending half of a DH ratchet step, deferred from the
// receipt of the remote ratchet key to the first encrypt after it. It
// implements PROTOCOL.md §4.2:
//
//	DHs = fresh key pair; PN = Ns; Ns = 0
//	root key, CKs = KDF_RK(root key, DH(DHs, current remote ratchet key))
func (r *ratchetState) sendingStep() error {
	return r.sendingStepWith(mustKeyPair())
}

// sendingStepWith is sendingStep with the new ratchet key chosen by the
// caller: only known-answer tests call it directly.
func (r *ratchetState) sendingStepWith(self *keyPair) error {
	if len(r.chains) == 0 {
		return fmt.Errorf("crypto: ratchet: no remote ratchet key to send to")
	}
	remote, err := parseX25519Public(r.chains[len(r.chains)-1].remote[:])
	if err != nil {
		return err
	}
	dh, err := self.dh(remote)
	if err != nil {
		return fmt.Errorf("crypto: ratchet: %w", err)
	}
	r.root, r.send = r.root.step(dh)
	clear(dh)
	r.setSelf(self)
	r.prevSendN = r.sendN
	r.sendN = 0
	r.sending = true
	return nil
}

// decrypt opens a parsed message; ad is the session AD followed by the
// message's prefix (everything before the ciphertext). It implements
// PROTOCOL.md §4.4 (receiving). The state changes only if it returns a
// nil error.
func (r *ratchetState) decrypt(m *message, ad []byte) ([]byte, error) {
	h := &m.header

	i := len(r.chains) - 1
	for ; i >= 0; i-- {
		if r.chains[i].remote == h.dh {
			break
		}
	}
	if i < 0 {
		return r.decryptNewChain(m, ad)
	}
	ch := &r.chains[i]
	current := i == len(r.chains)-1

	// A skipped key, or a replay.
	if h.n < ch.next || !current {
		j, found := slices.BinarySearchFunc(ch.skipped, h.n, func(k skippedKey, n uint32) int {
			return cmpUint32(k.n, n)
		})
		if !found {
			if h.n < ch.next {
				return nil, ErrDuplicateMessage
			}
			// Beyond the end of a closed chain: no such message was sent.
			return nil, ErrDecrypt
		}
		pt, err := ch.skipped[j].mk.open(m.ciphertext, ad)
		if err != nil {
			return nil, err
		}
		r.removeSkipped(i, j)
		return pt, nil
	}

	// Ahead in the current chain: derive into locals, commit after opening.
	if h.n-ch.next > MaxSkip {
		return nil, ErrTooManySkipped
	}
	ck := ch.key
	var skipped []skippedKey
	for n := ch.next; n < h.n; n++ {
		var mk messageKey
		mk, ck = ck.next()
		skipped = append(skipped, skippedKey{n: n, mk: mk})
	}
	mk, ck := ck.next()
	pt, err := mk.open(m.ciphertext, ad)
	if err != nil {
		return nil, err
	}
	ch.key = ck
	ch.next = h.n + 1
	ch.skipped = append(ch.skipped, skipped...)
	r.nSkipped += len(skipped)
	r.enforceBounds()
	return pt, nil
}

// decryptNewChain handles a message under a remote ratchet key not seen
// before: the receiving half of a DH ratchet step (PROTOCOL.md §4.2).
// Bounds are checked before any Diffie-Hellman operation; the step runs on
// a clone that replaces the state only after the AEAD opened. The sending
// half is deferred to the next encrypt ([ratchetState.sendingStep]), as
// Signal's specification allows: the old ratchet key pair is erased now
// and the new one lives only as long as it is needed.
//
//	(close the current receiving chain: skip it up to pn)
//	root key, CKr = KDF_RK(root key, DH(DHs, new remote key))
//	(open the message; erase DHs and CKs)
func (r *ratchetState) decryptNewChain(m *message, ad []byte) ([]byte, error) {
	h := &m.header
	if !r.sending && len(r.chains) > 0 {
		// We have not answered the peer's current ratchet key yet, so an
		// honest peer cannot have moved on to another one.
		return nil, ErrDecrypt
	}
	if h.n > MaxSkip {
		return nil, ErrTooManySkipped
	}
	if len(r.chains) > 0 {
		cur := &r.chains[len(r.chains)-1]
		if h.pn > cur.next && h.pn-cur.next > MaxSkip {
			return nil, ErrTooManySkipped
		}
	}
	remote, err := ecdh.X25519().NewPublicKey(h.dh[:])
	if err != nil {
		return nil, ErrDecrypt
	}
	dh, err := r.self().dh(remote)
	if err != nil {
		// A small-order ratchet key: no honest peer sends one.
		return nil, ErrDecrypt
	}

	s := r.clone()
	if len(s.chains) > 0 {
		// Close the current receiving chain: keep the keys of messages the
		// peer says it sent in it, forget its chain key.
		cur := &s.chains[len(s.chains)-1]
		for cur.next < h.pn {
			var mk messageKey
			mk, cur.key = cur.key.next()
			cur.skipped = append(cur.skipped, skippedKey{n: cur.next, mk: mk})
			cur.next++
			s.nSkipped++
		}
		cur.key = chainKey{}
	}
	var recv chainKey
	s.root, recv = s.root.step(dh)
	clear(dh)
	ch := receiverChain{remote: h.dh}
	for n := uint32(0); n < h.n; n++ {
		var mk messageKey
		mk, recv = recv.next()
		ch.skipped = append(ch.skipped, skippedKey{n: n, mk: mk})
	}
	mk, recv := recv.next()
	pt, err := mk.open(m.ciphertext, ad)
	if err != nil {
		return nil, err
	}
	ch.key = recv
	ch.next = h.n + 1
	s.chains = append(s.chains, ch)
	s.nSkipped += len(ch.skipped)

	// The sending half waits for the next encrypt.
	s.sending = false
	s.selfPriv = [32]byte{}
	s.selfPub = [PublicKeySize]byte{}
	s.send = chainKey{}
	s.enforceBounds()
	*r = *s
	return pt, nil
}

// removeSkipped deletes a used skipped key.
func (r *ratchetState) removeSkipped(i, j int) {
	ch := &r.chains[i]
	ch.skipped = slices.Delete(ch.skipped, j, j+1)
	r.nSkipped--
}

// enforceBounds evicts the oldest receiving chains beyond
// MaxReceiverChains, then the oldest skipped keys beyond MaxSkippedKeys
// (PROTOCOL.md §4.4). A chain stays known, even with no skipped keys left,
// until it is evicted, so that a replay of one of its messages is reported
// as [ErrDuplicateMessage].
func (r *ratchetState) enforceBounds() {
	if len(r.chains) > MaxReceiverChains {
		drop := len(r.chains) - MaxReceiverChains
		for _, ch := range r.chains[:drop] {
			r.nSkipped -= len(ch.skipped)
		}
		r.chains = slices.Delete(r.chains, 0, drop)
	}
	for i := 0; r.nSkipped > MaxSkippedKeys && i < len(r.chains); i++ {
		ch := &r.chains[i]
		drop := min(r.nSkipped-MaxSkippedKeys, len(ch.skipped))
		ch.skipped = slices.Delete(ch.skipped, 0, drop)
		r.nSkipped -= drop
	}
}

func cmpUint32(a, b uint32) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
