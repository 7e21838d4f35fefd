package crypto

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
)

// Sender keys for groups (PROTOCOL.md §7).
//
// Each device that sends to a group holds, per group, a sender key: a key
// ID, a symmetric chain key and an Ed25519 signing key. It hands the chain
// key at its current iteration and the public signing key to every member
// device in a SenderKeyDistributionMessage, sent over the pairwise
// (Double Ratchet) sessions. A group message is then encrypted once under
// the next message key of the chain and signed; every member verifies the
// signature and decrypts with its copy of the chain.
//
// The chain gives forward secrecy (message keys are deleted after use) but
// no post-compromise security: whoever learns a chain key can read the
// rest of the chain. Clients therefore rotate — make a new sender key with
// a new key ID and distribute it — whenever the membership shrinks (a
// member leaves or is removed, or a member removes a device), so that
// removed devices cannot read later messages. Adding a member needs no
// rotation: the new member receives the current chain and reads only from
// there on.
//
// Sender keys are not responsible for: hiding the sender from the relay
// (the group message travels in a multi-recipient envelope, §6), padding
// (§8), or checking that the sender is still a group member (the client's
// group state).

// GroupID names a group. Its creator draws it at random; it binds every
// sender key and group message to the group.
type GroupID [16]byte

// String returns the group ID in hex.
func (g GroupID) String() string { return hex.EncodeToString(g[:]) }

// Specification constants of sender keys (PROTOCOL.md §7, §12).
const (
	senderKeyDistributionVersion = 1
	groupMessageVersion          = 1
	// SenderKeyDistributionSize is the size of a distribution message.
	SenderKeyDistributionSize = 1 + 16 + 4 + 4 + 32 + PublicKeySize
	// groupHeaderSize is version || group || key ID || iteration.
	groupHeaderSize = 1 + 16 + 4 + 4
	// GroupMessageOverhead is the size of a group message minus its
	// plaintext: the header, the AEAD tag and the signature.
	GroupMessageOverhead = groupHeaderSize + gcmTagSize + SignatureSize
	// MaxGroupSkip bounds how far ahead of the receiving chain a group
	// message may be: a receiver derives at most this many keys for one
	// message, which bounds the work an attacker-chosen iteration causes.
	MaxGroupSkip = 2000
	// MaxGroupSkippedKeys bounds the message keys kept per sender key for
	// messages not yet received; the oldest are dropped first.
	MaxGroupSkippedKeys = 2000
	// MaxSenderKeyStates bounds the sender keys (key IDs) a receiver keeps
	// per sender device and group, so that messages sent just before a
	// rotation still decrypt.
	MaxSenderKeyStates = 4
	// MaxGroupPlaintextSize bounds the plaintext of a group message.
	MaxGroupPlaintextSize = MaxSealedContentSize - GroupMessageOverhead
)

// Implementation constants.
const (
	senderKeyStateVersion   = 1
	groupReceiverVersion    = 1
	groupKeyMaterialSize    = 32 + 12 // AES-256-GCM key and nonce
	groupChainMessageSeed   = 0x01
	groupChainNextChainSeed = 0x02
)

// groupChainStep implements the chain KDF of PROTOCOL.md §7:
//
//	message seed = HMAC-SHA256(chain key, 0x01)
//	next chain key = HMAC-SHA256(chain key, 0x02)
func groupChainStep(chain *[32]byte) (seed, next [32]byte) {
	m := hmac.New(sha256.New, chain[:])
	m.Write([]byte{groupChainMessageSeed})
	m.Sum(seed[:0])
	m.Reset()
	m.Write([]byte{groupChainNextChainSeed})
	m.Sum(next[:0])
	return seed, next
}

// groupMessageAEAD derives the AEAD key and nonce of one message:
//
//	key || nonce = HKDF-SHA256(ikm = message seed, salt = "",
//	               info = "sotto/v1 group message keys")[:44]
func groupMessageAEAD(seed *[32]byte) (key, nonce []byte) {
	k := envelopeKDF(seed[:], nil, labelGroupKeys, groupKeyMaterialSize)
	return k[:32], k[32:]
}

// SenderKey is this device's sending state for one group. It holds the
// chain key and the private signing key: it must be kept secret, and
// persisted (MarshalBinary) after every Encrypt.
type SenderKey struct {
	_         [0]func()
	group     GroupID
	keyID     uint32
	iteration uint32 // iteration of the next message
	chain     [32]byte
	signing   ed25519.PrivateKey
}

// NewSenderKey returns a fresh sender key for group, with a random key ID,
// chain key and signing key drawn from crypto/rand.
func NewSenderKey(group GroupID) *SenderKey {
	var seed [32 + 4 + 32]byte
	if _, err := rand.Read(seed[:]); err != nil {
		panic("crypto: crypto/rand failed: " + err.Error())
	}
	k := &SenderKey{group: group, keyID: binary.BigEndian.Uint32(seed[32:36]), signing: ed25519.NewKeyFromSeed(seed[:32])}
	copy(k.chain[:], seed[36:])
	return k
}

// Rotate returns a new sender key for the same group with a key ID
// different from k's. Clients rotate when the group's membership shrinks
// (PROTOCOL.md §7) and distribute the new key to the remaining members.
func (k *SenderKey) Rotate() *SenderKey {
	for {
		n := NewSenderKey(k.group)
		if n.keyID != k.keyID {
			return n
		}
	}
}

// Group returns the group the key sends to.
func (k *SenderKey) Group() GroupID { return k.group }

// KeyID returns the key ID that names this sender key in its messages.
func (k *SenderKey) KeyID() uint32 { return k.keyID }

// String never prints key material.
func (k *SenderKey) String() string {
	return fmt.Sprintf("SenderKey(group %s, key %d, iteration %d)", k.group, k.keyID, k.iteration)
}

// Distribution returns the SenderKeyDistributionMessage for k at its
// current iteration (PROTOCOL.md §7.1). It holds the chain key: it must be
// sent only inside pairwise sessions, never in the clear.
//
//	version u8 (1) || group [16] || key_id u32 || iteration u32
//	|| chain_key [32] || signing_key [32]
func (k *SenderKey) Distribution() []byte {
	b := make([]byte, 0, SenderKeyDistributionSize)
	b = append(b, senderKeyDistributionVersion)
	b = append(b, k.group[:]...)
	b = binary.BigEndian.AppendUint32(b, k.keyID)
	b = binary.BigEndian.AppendUint32(b, k.iteration)
	b = append(b, k.chain[:]...)
	return append(b, k.signing.Public().(ed25519.PublicKey)...)
}

// Encrypt encrypts and signs plaintext as the next group message and
// advances the chain (PROTOCOL.md §7.2). The caller pads plaintext first
// (§8) and persists k afterwards. It fails only when plaintext is larger
// than MaxGroupPlaintextSize or the chain is exhausted (2^32 messages; the
// caller rotates).
//
//	message = version u8 (1) || group [16] || key_id u32 || iteration u32
//	          || AES-256-GCM(key, nonce, plaintext, ad = the 25 bytes before)
//	          || signature [64]
//	signature = Ed25519(label("group message") || everything before it)
func (k *SenderKey) Encrypt(plaintext []byte) ([]byte, error) {
	if len(plaintext) > MaxGroupPlaintextSize {
		return nil, errors.New("crypto: group message: plaintext too large")
	}
	if k.iteration == ^uint32(0) {
		return nil, errors.New("crypto: group message: chain exhausted, rotate the sender key")
	}
	seed, next := groupChainStep(&k.chain)
	key, nonce := groupMessageAEAD(&seed)
	msg := make([]byte, 0, GroupMessageOverhead+len(plaintext))
	msg = append(msg, groupMessageVersion)
	msg = append(msg, k.group[:]...)
	msg = binary.BigEndian.AppendUint32(msg, k.keyID)
	msg = binary.BigEndian.AppendUint32(msg, k.iteration)
	msg = envelopeGCM(key).Seal(msg, nonce, plaintext, msg[:groupHeaderSize])
	msg = append(msg, signWithLabel(k.signing, labelGroupMessage, msg)...)
	k.chain = next
	k.iteration++
	return msg, nil
}

// MarshalBinary returns the sender key's state (PROTOCOL.md §7.4). The
// output must be kept secret.
//
//	version u8 (1) || group [16] || key_id u32 || iteration u32
//	|| chain_key [32] || signing_seed [32]
func (k *SenderKey) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, 1+16+4+4+32+32)
	b = append(b, senderKeyStateVersion)
	b = append(b, k.group[:]...)
	b = binary.BigEndian.AppendUint32(b, k.keyID)
	b = binary.BigEndian.AppendUint32(b, k.iteration)
	b = append(b, k.chain[:]...)
	return append(b, k.signing.Seed()...), nil
}

// ParseSenderKey parses the output of [SenderKey.MarshalBinary]. It
// returns [ErrMalformed] (wrapped) for anything else.
func ParseSenderKey(data []byte) (*SenderKey, error) {
	s := cryptobyte.String(data)
	var version uint8
	var group, chain, seed []byte
	k := &SenderKey{}
	if !s.ReadUint8(&version) || version != senderKeyStateVersion || !s.ReadBytes(&group, 16) ||
		!s.ReadUint32(&k.keyID) || !s.ReadUint32(&k.iteration) || !s.ReadBytes(&chain, 32) ||
		!s.ReadBytes(&seed, ed25519.SeedSize) || !s.Empty() {
		return nil, malformed("sender key")
	}
	copy(k.group[:], group)
	copy(k.chain[:], chain)
	k.signing = ed25519.NewKeyFromSeed(seed)
	return k, nil
}

// receivedSenderKey is one sender key as a receiver holds it.
type receivedSenderKey struct {
	keyID     uint32
	iteration uint32 // iteration of the next message on the chain
	chain     [32]byte
	signing   [PublicKeySize]byte
	skipped   []skippedGroupKey // strictly increasing iterations, all < iteration
}

type skippedGroupKey struct {
	iteration uint32
	seed      [32]byte
}

// GroupReceiver holds what this device received from one sender device
// for one group: up to MaxSenderKeyStates sender keys, newest first, each
// with its chain and the keys of skipped messages. It must be kept secret
// and persisted (MarshalBinary) after every successful Process or Decrypt.
type GroupReceiver struct {
	_      [0]func()
	group  GroupID
	states []*receivedSenderKey
}

// NewGroupReceiver returns an empty receiver for group.
func NewGroupReceiver(group GroupID) *GroupReceiver { return &GroupReceiver{group: group} }

// String never prints key material.
func (r *GroupReceiver) String() string {
	return fmt.Sprintf("GroupReceiver(group %s, %d keys)", r.group, len(r.states))
}

// Process adds the sender key of a SenderKeyDistributionMessage, which the
// caller received inside a pairwise session from the sender device this
// receiver belongs to (PROTOCOL.md §7.1). It checks the encoding, the group
// and the signing key. A distribution for a key ID already held with the
// same signing key changes nothing (so a stale distribution cannot rewind
// the chain and re-enable replays); with a different signing key it
// replaces the old one. The oldest key is dropped beyond
// MaxSenderKeyStates.
func (r *GroupReceiver) Process(distribution []byte) error {
	st, group, err := parseDistribution(distribution)
	if err != nil {
		return err
	}
	if group != r.group {
		return fmt.Errorf("crypto: sender key distribution: for group %s, not %s", group, r.group)
	}
	states := make([]*receivedSenderKey, 0, MaxSenderKeyStates)
	states = append(states, st)
	for _, old := range r.states {
		if old.keyID == st.keyID {
			if old.signing == st.signing {
				return nil
			}
			continue
		}
		if len(states) < MaxSenderKeyStates {
			states = append(states, old)
		}
	}
	r.states = states
	return nil
}

func parseDistribution(data []byte) (*receivedSenderKey, GroupID, error) {
	s := cryptobyte.String(data)
	var version uint8
	var group, chain, signing []byte
	st := &receivedSenderKey{}
	if !s.ReadUint8(&version) || version != senderKeyDistributionVersion || !s.ReadBytes(&group, 16) ||
		!s.ReadUint32(&st.keyID) || !s.ReadUint32(&st.iteration) || !s.ReadBytes(&chain, 32) ||
		!s.ReadBytes(&signing, PublicKeySize) || !s.Empty() {
		return nil, GroupID{}, malformed("sender key distribution")
	}
	if err := checkEd25519Public(signing); err != nil {
		return nil, GroupID{}, fmt.Errorf("crypto: sender key distribution: signing key: %w", err)
	}
	var g GroupID
	copy(g[:], group)
	copy(st.chain[:], chain)
	copy(st.signing[:], signing)
	return st, g, nil
}

// GroupMessageInfo returns the group and key ID a group message names,
// without verifying anything, so that the caller can find the
// GroupReceiver to decrypt it with.
func GroupMessageInfo(msg []byte) (GroupID, uint32, error) {
	if len(msg) < GroupMessageOverhead || msg[0] != groupMessageVersion {
		return GroupID{}, 0, malformed("group message")
	}
	var g GroupID
	copy(g[:], msg[1:17])
	return g, binary.BigEndian.Uint32(msg[17:21]), nil
}

// Decrypt verifies and decrypts a group message (PROTOCOL.md §7.3). It
// returns [ErrMalformed] for a bad encoding or another group,
// [ErrNoSenderKey] for an unknown key ID, [ErrDecrypt] for a bad signature
// or ciphertext, [ErrDuplicateMessage] for an iteration already decrypted
// (or whose key was dropped), and [ErrTooManySkipped] for an iteration
// more than MaxGroupSkip ahead. It works on copies and changes r only on
// success; the caller persists r afterwards. The plaintext is still padded
// (§8).
func (r *GroupReceiver) Decrypt(msg []byte) ([]byte, error) {
	group, keyID, err := GroupMessageInfo(msg)
	if err != nil {
		return nil, err
	}
	if group != r.group {
		return nil, malformed("group message for another group")
	}
	var st *receivedSenderKey
	for _, s := range r.states {
		if s.keyID == keyID {
			st = s
			break
		}
	}
	if st == nil {
		return nil, ErrNoSenderKey
	}
	signed := msg[:len(msg)-SignatureSize]
	if !verifyWithLabel(st.signing[:], labelGroupMessage, signed, msg[len(msg)-SignatureSize:]) {
		return nil, ErrDecrypt
	}
	iteration := binary.BigEndian.Uint32(msg[21:25])

	// Compute the message key and the would-be new state into locals.
	var seed [32]byte
	skippedIndex := -1
	var newChain [32]byte
	var newSkipped []skippedGroupKey
	switch {
	case iteration < st.iteration:
		for i, sk := range st.skipped {
			if sk.iteration == iteration {
				seed, skippedIndex = sk.seed, i
				break
			}
		}
		if skippedIndex < 0 {
			return nil, ErrDuplicateMessage
		}
	case iteration-st.iteration > MaxGroupSkip || iteration == ^uint32(0):
		return nil, ErrTooManySkipped
	default:
		chain := st.chain
		for i := st.iteration; i < iteration; i++ {
			s, next := groupChainStep(&chain)
			newSkipped = append(newSkipped, skippedGroupKey{iteration: i, seed: s})
			chain = next
		}
		seed, newChain = groupChainStep(&chain)
	}
	key, nonce := groupMessageAEAD(&seed)
	plaintext, err := envelopeGCM(key).Open(nil, nonce, signed[groupHeaderSize:], msg[:groupHeaderSize])
	if err != nil {
		return nil, ErrDecrypt
	}

	// Commit.
	if skippedIndex >= 0 {
		st.skipped = append(st.skipped[:skippedIndex:skippedIndex], st.skipped[skippedIndex+1:]...)
	} else {
		st.skipped = append(st.skipped, newSkipped...)
		if extra := len(st.skipped) - MaxGroupSkippedKeys; extra > 0 {
			st.skipped = append([]skippedGroupKey(nil), st.skipped[extra:]...)
		}
		st.chain = newChain
		st.iteration = iteration + 1
	}
	return plaintext, nil
}

// MarshalBinary returns the receiver's state (PROTOCOL.md §7.4). The output
// must be kept secret.
//
//	version u8 (1) || group [16] || count u8 || count × (key_id u32
//	|| iteration u32 || chain_key [32] || signing_key [32]
//	|| skipped_count u16 || skipped_count × (iteration u32 || seed [32]))
func (r *GroupReceiver) MarshalBinary() ([]byte, error) {
	var b cryptobyte.Builder
	b.AddUint8(groupReceiverVersion)
	b.AddBytes(r.group[:])
	b.AddUint8(uint8(len(r.states)))
	for _, st := range r.states {
		b.AddUint32(st.keyID)
		b.AddUint32(st.iteration)
		b.AddBytes(st.chain[:])
		b.AddBytes(st.signing[:])
		b.AddUint16(uint16(len(st.skipped)))
		for _, sk := range st.skipped {
			b.AddUint32(sk.iteration)
			b.AddBytes(sk.seed[:])
		}
	}
	return b.Bytes()
}

// ParseGroupReceiver parses the output of [GroupReceiver.MarshalBinary]. It
// accepts only canonical encodings within the bounds of PROTOCOL.md §7:
// at most MaxSenderKeyStates distinct key IDs, at most MaxGroupSkippedKeys
// skipped keys per key in strictly increasing order, each before the
// chain's iteration, and valid signing keys.
func ParseGroupReceiver(data []byte) (*GroupReceiver, error) {
	s := cryptobyte.String(data)
	var version, count uint8
	var group []byte
	if !s.ReadUint8(&version) || version != groupReceiverVersion || !s.ReadBytes(&group, 16) ||
		!s.ReadUint8(&count) || int(count) > MaxSenderKeyStates {
		return nil, malformed("group receiver")
	}
	r := &GroupReceiver{}
	copy(r.group[:], group)
	for range count {
		st := &receivedSenderKey{}
		var chain, signing []byte
		var n uint16
		if !s.ReadUint32(&st.keyID) || !s.ReadUint32(&st.iteration) || !s.ReadBytes(&chain, 32) ||
			!s.ReadBytes(&signing, PublicKeySize) || !s.ReadUint16(&n) || int(n) > MaxGroupSkippedKeys {
			return nil, malformed("group receiver")
		}
		if checkEd25519Public(signing) != nil {
			return nil, malformed("group receiver signing key")
		}
		copy(st.chain[:], chain)
		copy(st.signing[:], signing)
		for j := range int(n) {
			var sk skippedGroupKey
			var seed []byte
			if !s.ReadUint32(&sk.iteration) || !s.ReadBytes(&seed, 32) || sk.iteration >= st.iteration ||
				(j > 0 && sk.iteration <= st.skipped[j-1].iteration) {
				return nil, malformed("group receiver skipped keys")
			}
			copy(sk.seed[:], seed)
			st.skipped = append(st.skipped, sk)
		}
		for _, other := range r.states {
			if other.keyID == st.keyID {
				return nil, malformed("group receiver: duplicate key ID")
			}
		}
		r.states = append(r.states, st)
	}
	if !s.Empty() {
		return nil, malformed("group receiver")
	}
	return r, nil
}
