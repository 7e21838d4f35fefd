package crypto

import (
	"encoding/binary"

	"golang.org/x/crypto/cryptobyte"
)

// Specification constants of the message layouts (PROTOCOL.md §3.4, §4.3).
const (
	// messageTypeRatchet starts a steady-state ratchet message, version 1.
	messageTypeRatchet = 0x01
	// messageTypePreKey starts a prekey message, version 1: what the
	// initiator sends until it has decrypted the responder's first reply.
	messageTypePreKey = 0x02

	// headerSize is ratchet_key [32] || pn u32 || n u32.
	headerSize = PublicKeySize + 4 + 4
	// addressSize is account [20] || device u32.
	addressSize = AccountIDSize + 4
)

// Implementation constants.
const (
	// MaxPlaintextSize bounds the plaintext of one ratchet message. Large
	// content travels as an attachment; a bound keeps a hostile message
	// from making the receiver allocate without limit.
	MaxPlaintextSize = 1 << 20
	// maxCiphertextSize is the largest AEAD output a message may carry.
	maxCiphertextSize = MaxPlaintextSize + aeadTagSize
)

// header is the cleartext, authenticated header of a ratchet message
// (PROTOCOL.md §4.3).
//
//	Header = ratchet_key [32] || pn u32 || n u32
type header struct {
	dh [PublicKeySize]byte // the sender's current ratchet public key
	pn uint32              // messages in the sender's previous sending chain
	n  uint32              // index of this message in the current sending chain
}

func (h *header) append(b []byte) []byte {
	b = append(b, h.dh[:]...)
	b = binary.BigEndian.AppendUint32(b, h.pn)
	return binary.BigEndian.AppendUint32(b, h.n)
}

// preKeyFields are what a prekey message carries ahead of its ratchet
// header so that the responder can run PQXDH (PROTOCOL.md §3.4).
//
//	PreKeyFields = initiator_account [20] || initiator_device u32
//	               || responder_account [20] || responder_device u32
//	               || initiator_identity [32] || ephemeral_key [32]
//	               || signed_prekey_id u32 || kem_prekey_id u32
//	               || has_one_time u8 || [one_time_prekey_id u32]
//	               || kem_ciphertext [1088]
type preKeyFields struct {
	initiator, responder Address
	identity             [PublicKeySize]byte // initiator's Ed25519 identity key
	ephemeral            [PublicKeySize]byte // EK_A, the base key naming this PQXDH run
	signedPreKeyID       uint32
	kemPreKeyID          uint32
	hasOneTime           bool
	oneTimePreKeyID      uint32
	kemCiphertext        []byte // KEMCiphertextSize bytes
}

func appendAddress(b []byte, a Address) []byte {
	b = append(b, a.Account[:]...)
	return binary.BigEndian.AppendUint32(b, uint32(a.Device))
}

func (p *preKeyFields) append(b []byte) []byte {
	b = appendAddress(b, p.initiator)
	b = appendAddress(b, p.responder)
	b = append(b, p.identity[:]...)
	b = append(b, p.ephemeral[:]...)
	b = binary.BigEndian.AppendUint32(b, p.signedPreKeyID)
	b = binary.BigEndian.AppendUint32(b, p.kemPreKeyID)
	if p.hasOneTime {
		b = append(b, 1)
		b = binary.BigEndian.AppendUint32(b, p.oneTimePreKeyID)
	} else {
		b = append(b, 0)
	}
	return append(b, p.kemCiphertext...)
}

// message is a parsed wire message (PROTOCOL.md §3.4, §4.3).
//
//	RatchetMessage = 0x01 || Header || ciphertext
//	PreKeyMessage  = 0x02 || PreKeyFields || Header || ciphertext
//
// The ciphertext runs to the end of the message and is at least the AEAD
// tag long. Everything before it (the prefix) is authenticated as part of
// the associated data.
type message struct {
	preKey     *preKeyFields // nil for a ratchet message
	header     header
	prefix     []byte // the bytes before the ciphertext, aliasing the input
	ciphertext []byte // aliasing the input
}

// parseMessage parses a wire message without copying. It checks the
// layout only: lengths, flags, the message type and the ciphertext bounds.
// It returns ErrMalformed (wrapped) for anything else.
func parseMessage(b []byte) (*message, error) {
	m := new(message)
	if err := m.parse(b); err != nil {
		return nil, err
	}
	return m, nil
}

// parse is parseMessage into a caller's value, which saves an allocation
// on the decryption path. m is meaningless after an error.
func (m *message) parse(b []byte) error {
	s := cryptobyte.String(b)
	var typ uint8
	if !s.ReadUint8(&typ) {
		return malformed("message")
	}
	switch typ {
	case messageTypeRatchet:
	case messageTypePreKey:
		p := new(preKeyFields)
		if !readAddress(&s, &p.initiator) || !readAddress(&s, &p.responder) ||
			!s.CopyBytes(p.identity[:]) || !s.CopyBytes(p.ephemeral[:]) ||
			!s.ReadUint32(&p.signedPreKeyID) || !s.ReadUint32(&p.kemPreKeyID) {
			return malformed("prekey message")
		}
		var hasOneTime uint8
		if !s.ReadUint8(&hasOneTime) || hasOneTime > 1 {
			return malformed("prekey message")
		}
		if hasOneTime == 1 {
			p.hasOneTime = true
			if !s.ReadUint32(&p.oneTimePreKeyID) {
				return malformed("prekey message")
			}
		}
		if !s.ReadBytes(&p.kemCiphertext, KEMCiphertextSize) {
			return malformed("prekey message")
		}
		if p.initiator.Device == 0 || p.responder.Device == 0 || p.initiator == p.responder {
			return malformed("prekey message: addresses")
		}
		m.preKey = p
	default:
		return malformed("message: unknown type or version")
	}
	if !s.CopyBytes(m.header.dh[:]) || !s.ReadUint32(&m.header.pn) || !s.ReadUint32(&m.header.n) {
		return malformed("message header")
	}
	if len(s) < aeadTagSize || len(s) > maxCiphertextSize {
		return malformed("message ciphertext length")
	}
	m.prefix = b[:len(b)-len(s)]
	m.ciphertext = s
	return nil
}

func readAddress(s *cryptobyte.String, a *Address) bool {
	var dev uint32
	if !s.CopyBytes(a.Account[:]) || !s.ReadUint32(&dev) {
		return false
	}
	a.Device = DeviceID(dev)
	return true
}

// marshal re-encodes a parsed message; parse then marshal reproduces the
// input exactly.
func (m *message) marshal() []byte {
	var b []byte
	if m.preKey != nil {
		b = append(b, messageTypePreKey)
		b = m.preKey.append(b)
	} else {
		b = append(b, messageTypeRatchet)
	}
	b = m.header.append(b)
	return append(b, m.ciphertext...)
}

// IsPreKeyMessage reports whether msg has the layout of a prekey message,
// the kind that [AcceptSession] consumes. It authenticates nothing.
func IsPreKeyMessage(msg []byte) bool {
	m, err := parseMessage(msg)
	return err == nil && m.preKey != nil
}
