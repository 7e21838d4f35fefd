package crypto

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
)

// sessionStateVersion is the version byte of a serialized session
// (PROTOCOL.md §4.5).
const sessionStateVersion = 1

type sessionRole uint8

const (
	roleInitiator sessionRole = 1 // ran PQXDH as the initiator (Alice)
	roleResponder sessionRole = 2 // accepted a prekey message (Bob)
)

// pendingPreKey holds what the initiator repeats in every message until it
// has decrypted a reply: the PQXDH fields of a prekey message.
type pendingPreKey struct {
	signedPreKeyID  uint32
	kemPreKeyID     uint32
	hasOneTime      bool
	oneTimePreKeyID uint32
	kemCiphertext   []byte
}

// Session is an end-to-end encrypted session between this device and one
// device of a peer: the result of PQXDH followed by the Double Ratchet
// (PROTOCOL.md §3, §4). It is created by [InitiateSession] or
// [AcceptSession], or restored by [ParseSession].
//
// Its whole state must be kept secret: callers persist the output of
// [Session.MarshalBinary] encrypted at rest after every Encrypt and every
// successful Decrypt, and discard the old state. Reusing an old state
// would reuse message keys.
//
// Session does not pad plaintexts: callers pad them to size buckets first
// (PROTOCOL.md §8) and unpad after decryption.
//
// A Session is not safe for concurrent use. The zero Session is not
// usable (its methods panic): sessions come only from the constructors.
type Session struct {
	_        [0]func()
	role     sessionRole
	local    Address
	remote   Address
	localID  [PublicKeySize]byte // our Ed25519 identity key
	remoteID [PublicKeySize]byte // the peer's Ed25519 identity key
	baseKey  [PublicKeySize]byte // the initiator's ephemeral key, naming the PQXDH run
	pending  *pendingPreKey      // initiator only, until a reply decrypted
	ratchet  *ratchetState

	ad             []byte      // the session associated data (§3.3), derived
	remoteIdentity IdentityKey // parsed remoteID, filled lazily
	scratch        []byte      // reused buffer for associated data
}

// InitiateSession starts a session with the device that published bundle,
// running the initiator's side of PQXDH (PROTOCOL.md §3.3). ik is this
// device's identity key and self its address.
//
// It verifies the signatures of bundle's signed prekey and KEM prekey by
// the bundle's identity key, unless they were already verified for the
// bundle's current fields (by [ParsePreKeyBundle], [PreKeyBundle.Verify]
// or [PreKeyBundle.VerifyAgainst]): the usual path, parse then
// VerifyAgainst then InitiateSession, verifies them once. The caller MUST
// already have checked that this identity key is the one the peer
// account's verified device list names for that device
// ([PreKeyBundle.VerifyAgainst] does both).
//
// The messages the session encrypts are prekey messages, carrying what the
// responder needs for PQXDH, until the first reply has been decrypted.
func InitiateSession(ik *IdentityPrivateKey, self Address, bundle *PreKeyBundle) (*Session, error) {
	return initiate(ik, self, bundle, initiatorKeys{
		ephemeral: mustKeyPair(),
		ratchet:   mustKeyPair(),
	})
}

// AcceptSession runs the responder's side of PQXDH on a prekey message
// received for this device (ik, self) and decrypts the message. keys gives
// the private prekeys the message names. It returns the new session, the
// plaintext, and the prekeys used (PROTOCOL.md §3.5).
//
// The caller MUST:
//   - check that [Session.RemoteAddress] and [Session.RemoteIdentity] match
//     the sender's verified device list (or sealed-sender certificate)
//     before trusting the plaintext;
//   - delete the consumed one-time prekey and one-time KEM prekey reported
//     in [PreKeysUsed] before, or atomically with, persisting the session,
//     so that a replayed prekey message is refused.
//
// A client that already holds a session with the sending device first
// passes the message to that session's [Session.Decrypt]: further prekey
// messages of the same setup, and replays of the first one, belong there.
// Only when Decrypt returns [ErrNewSession] (or no session exists) does
// the message go to AcceptSession.
//
// It returns an error wrapping [ErrMalformed] for a message that is not a
// well-formed prekey message, [ErrUnknownPreKey] (from keys) for a prekey
// it does not hold, [ErrInvalidKey] for an invalid or small-order key, and
// [ErrDecrypt] when the message does not authenticate.
func AcceptSession(ik *IdentityPrivateKey, self Address, keys PreKeyLookup, msg []byte) (*Session, []byte, PreKeysUsed, error) {
	if ik == nil || keys == nil {
		return nil, nil, PreKeysUsed{}, errors.New("crypto: pqxdh: nil identity or prekey lookup")
	}
	m, err := parseMessage(msg)
	if err != nil {
		return nil, nil, PreKeysUsed{}, err
	}
	return accept(ik, self, keys, m)
}

// Encrypt encrypts plaintext as the next message of the session and
// advances the sending chain (PROTOCOL.md §4.3). The caller must persist
// the session state afterwards. plaintext must be at most
// [MaxPlaintextSize] bytes.
func (s *Session) Encrypt(plaintext []byte) ([]byte, error) {
	var prefix []byte
	if s.pending != nil {
		p := preKeyFields{
			initiator:       s.local,
			responder:       s.remote,
			identity:        s.localID,
			ephemeral:       s.baseKey,
			signedPreKeyID:  s.pending.signedPreKeyID,
			kemPreKeyID:     s.pending.kemPreKeyID,
			hasOneTime:      s.pending.hasOneTime,
			oneTimePreKeyID: s.pending.oneTimePreKeyID,
			kemCiphertext:   s.pending.kemCiphertext,
		}
		prefix = p.append([]byte{messageTypePreKey})
	} else {
		prefix = []byte{messageTypeRatchet}
	}
	return s.ratchet.encrypt(prefix, s.ad, plaintext)
}

// Decrypt authenticates and decrypts a message of the peer (PROTOCOL.md
// §4.4). The session state changes only when it returns a nil error; the
// caller must then persist it.
//
// Errors: [ErrDuplicateMessage] for a message already decrypted (or whose
// key was evicted), which callers may drop quietly; [ErrTooManySkipped]
// for a counter beyond [MaxSkip]; [ErrNewSession] for a prekey message that
// starts a different session (pass it to [AcceptSession]); [ErrMalformed]
// for a bad layout; [ErrDecrypt] for everything that fails to
// authenticate.
func (s *Session) Decrypt(msg []byte) ([]byte, error) {
	var m message
	if err := m.parse(msg); err != nil {
		return nil, err
	}
	if p := m.preKey; p != nil {
		if s.role != roleResponder || p.ephemeral != s.baseKey {
			return nil, ErrNewSession
		}
		if p.initiator != s.remote || p.responder != s.local || p.identity != s.remoteID {
			return nil, ErrDecrypt
		}
	}
	s.scratch = append(append(s.scratch[:0], s.ad...), m.prefix...)
	pt, err := s.ratchet.decrypt(&m, s.scratch)
	if err != nil {
		return nil, err
	}
	// A reply decrypted: the responder holds the session, so prekey
	// fields are no longer needed (PROTOCOL.md §3.4).
	s.pending = nil
	return pt, nil
}

// AwaitingReply reports whether this device started the session and has
// not yet decrypted a reply in it: its messages still carry the prekey
// fields (PROTOCOL.md §3.4).
func (s *Session) AwaitingReply() bool { return s.pending != nil }

// LocalAddress returns this device's address in the session.
func (s *Session) LocalAddress() Address { return s.local }

// RemoteAddress returns the peer device's address.
func (s *Session) RemoteAddress() Address { return s.remote }

// RemoteIdentity returns the peer device's identity key. For a session
// restored by [ParseSession], the key is validated on first use; it is the
// zero IdentityKey if the stored bytes are not a valid key.
func (s *Session) RemoteIdentity() IdentityKey {
	if s.remoteIdentity.IsZero() {
		if k, err := NewIdentityKey(s.remoteID[:]); err == nil {
			s.remoteIdentity = k
		}
	}
	return s.remoteIdentity
}

// HasRemoteIdentity reports whether k is the peer device's identity key.
// Unlike comparing with [Session.RemoteIdentity], it costs no point
// decoding, which matters for a session just restored by [ParseSession].
func (s *Session) HasRemoteIdentity(k IdentityKey) bool {
	return !k.IsZero() && k.ed == s.remoteID
}

// String never prints key material.
func (s *Session) String() string {
	return fmt.Sprintf("Session(%s -> %s)", s.local, s.remote)
}

func (s *Session) computeAD() []byte {
	if s.role == roleInitiator {
		return sessionAD(&s.localID, &s.remoteID, s.local, s.remote)
	}
	return sessionAD(&s.remoteID, &s.localID, s.remote, s.local)
}

// MarshalBinary encodes the session state in its canonical, versioned
// form (PROTOCOL.md §4.5). The output holds every secret of the session
// and must be kept secret (encrypted at rest).
func (s *Session) MarshalBinary() ([]byte, error) {
	return s.appendBinary(make([]byte, 0, s.binarySize())), nil
}

// AppendBinary appends the encoding of MarshalBinary to b.
func (s *Session) AppendBinary(b []byte) ([]byte, error) {
	return s.appendBinary(b), nil
}

// binarySize is an upper bound of the length of the encoding, so that
// MarshalBinary allocates once.
func (s *Session) binarySize() int {
	n := 2 + 2*(addressSize+PublicKeySize) + PublicKeySize + 1 + keySize + 1 + 3*keySize + 8 + 1 + keySize
	if s.pending != nil {
		n += 13 + KEMCiphertextSize
	}
	for _, ch := range s.ratchet.chains {
		n += PublicKeySize + 6 + len(ch.skipped)*(4+keySize)
	}
	return n
}

// appendBinary implements the layout of PROTOCOL.md §4.5:
//
//	SessionState = version u8 (1) || role u8
//	  || local_account [20] || local_device u32 || local_identity [32]
//	  || remote_account [20] || remote_device u32 || remote_identity [32]
//	  || base_key [32]
//	  || has_pending u8 || [signed_prekey_id u32 || kem_prekey_id u32
//	     || has_one_time u8 || [one_time_prekey_id u32] || kem_ciphertext [1088]]
//	  || root_key [32]
//	  || sending u8 || [ratchet_private [32] || ratchet_public [32] || send_chain_key [32]]
//	  || send_n u32 || prev_send_n u32
//	  || chain_count u8 || Chain * chain_count (oldest first)
//	  || [current_chain_key [32]]   (iff chain_count > 0)
//	Chain = remote_ratchet_key [32] || next u32 || skipped_count u16
//	  || (n u32 || message_key [32]) * skipped_count
func (s *Session) appendBinary(b []byte) []byte {
	r := s.ratchet
	b = append(b, sessionStateVersion, byte(s.role))
	b = appendAddress(b, s.local)
	b = append(b, s.localID[:]...)
	b = appendAddress(b, s.remote)
	b = append(b, s.remoteID[:]...)
	b = append(b, s.baseKey[:]...)
	if p := s.pending; p != nil {
		b = append(b, 1)
		b = binary.BigEndian.AppendUint32(b, p.signedPreKeyID)
		b = binary.BigEndian.AppendUint32(b, p.kemPreKeyID)
		if p.hasOneTime {
			b = append(b, 1)
			b = binary.BigEndian.AppendUint32(b, p.oneTimePreKeyID)
		} else {
			b = append(b, 0)
		}
		b = append(b, p.kemCiphertext...)
	} else {
		b = append(b, 0)
	}
	b = append(b, r.root.b[:]...)
	if r.sending {
		b = append(b, 1)
		b = append(b, r.selfPriv[:]...)
		b = append(b, r.selfPub[:]...)
		b = append(b, r.send.b[:]...)
	} else {
		b = append(b, 0)
	}
	b = binary.BigEndian.AppendUint32(b, r.sendN)
	b = binary.BigEndian.AppendUint32(b, r.prevSendN)
	b = append(b, byte(len(r.chains)))
	for _, ch := range r.chains {
		b = append(b, ch.remote[:]...)
		b = binary.BigEndian.AppendUint32(b, ch.next)
		b = binary.BigEndian.AppendUint16(b, uint16(len(ch.skipped)))
		for _, k := range ch.skipped {
			b = binary.BigEndian.AppendUint32(b, k.n)
			b = append(b, k.mk.b[:]...)
		}
	}
	if len(r.chains) > 0 {
		b = append(b, r.chains[len(r.chains)-1].key.b[:]...)
	}
	return b
}

// ParseSession restores a session from the output of
// [Session.MarshalBinary]. It rejects unknown versions, trailing bytes and
// any encoding that MarshalBinary would not produce (bounds of §4.4,
// ordering, flags), so parse then marshal reproduces the input exactly.
//
// The state is the caller's own secret data, read back from its store: it
// is checked for structure, not authenticated. Keys in it are validated
// when first used (see [Session.RemoteIdentity]).
func ParseSession(data []byte) (*Session, error) {
	s := cryptobyte.String(data)
	bad := func(what string) (*Session, error) { return nil, malformed("session state: " + what) }
	var version, role, hasPending uint8
	sess := &Session{ratchet: new(ratchetState)}
	r := sess.ratchet
	if !s.ReadUint8(&version) || version != sessionStateVersion {
		return bad("unknown version")
	}
	if !s.ReadUint8(&role) || (role != byte(roleInitiator) && role != byte(roleResponder)) {
		return bad("role")
	}
	sess.role = sessionRole(role)
	if !readAddress(&s, &sess.local) || !s.CopyBytes(sess.localID[:]) ||
		!readAddress(&s, &sess.remote) || !s.CopyBytes(sess.remoteID[:]) ||
		!s.CopyBytes(sess.baseKey[:]) || !s.ReadUint8(&hasPending) || hasPending > 1 {
		return bad("truncated")
	}
	if sess.local.Device == 0 || sess.remote.Device == 0 || sess.local == sess.remote {
		return bad("addresses")
	}
	if hasPending == 1 {
		if sess.role != roleInitiator {
			return bad("pending prekey fields on the responder")
		}
		p := new(pendingPreKey)
		var hasOneTime uint8
		if !s.ReadUint32(&p.signedPreKeyID) || !s.ReadUint32(&p.kemPreKeyID) ||
			!s.ReadUint8(&hasOneTime) || hasOneTime > 1 {
			return bad("pending prekey fields")
		}
		if hasOneTime == 1 {
			p.hasOneTime = true
			if !s.ReadUint32(&p.oneTimePreKeyID) {
				return bad("pending prekey fields")
			}
		}
		var ct []byte
		if !s.ReadBytes(&ct, KEMCiphertextSize) {
			return bad("pending prekey fields")
		}
		p.kemCiphertext = append([]byte(nil), ct...)
		sess.pending = p
	}
	var nChains, sending uint8
	if !s.CopyBytes(r.root.b[:]) || !s.ReadUint8(&sending) || sending > 1 {
		return bad("truncated")
	}
	if sending == 1 {
		r.sending = true
		if !s.CopyBytes(r.selfPriv[:]) || !s.CopyBytes(r.selfPub[:]) || !s.CopyBytes(r.send.b[:]) {
			return bad("truncated")
		}
	}
	if !s.ReadUint32(&r.sendN) || !s.ReadUint32(&r.prevSendN) || !s.ReadUint8(&nChains) {
		return bad("truncated")
	}
	if (!r.sending || sess.role == roleResponder) && nChains == 0 {
		return bad("no receiving chain")
	}
	if nChains > MaxReceiverChains {
		return bad("too many receiving chains")
	}
	// The initiator has no receiving chain exactly while its prekey fields
	// are pending; the responder always has one.
	if (sess.pending != nil) != (sess.role == roleInitiator && nChains == 0) {
		return bad("pending flag inconsistent with chains")
	}
	if nChains > 0 {
		r.chains = make([]receiverChain, nChains, MaxReceiverChains)
	}
	for i := range r.chains {
		ch := &r.chains[i]
		var nSkipped uint16
		if !s.CopyBytes(ch.remote[:]) || !s.ReadUint32(&ch.next) || !s.ReadUint16(&nSkipped) {
			return bad("truncated chain")
		}
		if int(nSkipped) > MaxSkippedKeys-r.nSkipped {
			return bad("too many skipped keys")
		}
		for j := range r.chains[:i] {
			if r.chains[j].remote == ch.remote {
				return bad("repeated chain")
			}
		}
		if nSkipped > 0 {
			ch.skipped = make([]skippedKey, nSkipped)
		}
		for j := range ch.skipped {
			k := &ch.skipped[j]
			if !s.ReadUint32(&k.n) || !s.CopyBytes(k.mk.b[:]) {
				return bad("truncated skipped key")
			}
			if k.n >= ch.next || (j > 0 && k.n <= ch.skipped[j-1].n) {
				return bad("skipped keys out of order")
			}
		}
		r.nSkipped += int(nSkipped)
	}
	if nChains > 0 && !s.CopyBytes(r.chains[nChains-1].key.b[:]) {
		return bad("truncated")
	}
	if !s.Empty() {
		return bad("trailing data")
	}
	sess.ad = sess.computeAD()
	return sess, nil
}
