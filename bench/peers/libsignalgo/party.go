// Package libsignalgo benchmarks go.mau.fi/libsignal (the Go port of the Signal protocol used by
// whatsmeow) on the same workloads as Sotto's crypto package, so the two can be compared in one
// sitting. This file holds the in-memory stores and the party helpers the benchmarks share.
package libsignalgo

import (
	"context"
	"fmt"

	"go.mau.fi/libsignal/ecc"
	"go.mau.fi/libsignal/keys/identity"
	"go.mau.fi/libsignal/keys/prekey"
	"go.mau.fi/libsignal/protocol"
	"go.mau.fi/libsignal/serialize"
	"go.mau.fi/libsignal/session"
	"go.mau.fi/libsignal/state/record"
	"go.mau.fi/libsignal/util/keyhelper"
	"go.mau.fi/libsignal/util/optional"
)

// Serializer is the protobuf serializer the library uses on the wire and for records.
var serializer = serialize.NewProtoBufSerializer()

// sessionStore keeps sessions either as live records (memory) or as serialized bytes (what a
// client that persists its sessions does: parse on every load, marshal on every store).
type sessionStore struct {
	serializing bool
	live        map[string]*record.Session
	raw         map[string][]byte
}

func newSessionStore(serializing bool) *sessionStore {
	return &sessionStore{serializing: serializing, live: map[string]*record.Session{}, raw: map[string][]byte{}}
}

func (s *sessionStore) LoadSession(_ context.Context, a *protocol.SignalAddress) (*record.Session, error) {
	k := a.String()
	if s.serializing {
		b, ok := s.raw[k]
		if !ok {
			return record.NewSession(serializer.Session, serializer.State), nil
		}
		r, err := record.NewSessionFromBytes(b, serializer.Session, serializer.State)
		if err != nil {
			return nil, fmt.Errorf("libsignalgo: parse session: %w", err)
		}
		return r, nil
	}
	if r, ok := s.live[k]; ok {
		return r, nil
	}
	return record.NewSession(serializer.Session, serializer.State), nil
}

func (s *sessionStore) GetSubDeviceSessions(context.Context, string) ([]uint32, error) {
	return nil, nil
}

func (s *sessionStore) StoreSession(_ context.Context, a *protocol.SignalAddress, r *record.Session) error {
	if s.serializing {
		s.raw[a.String()] = r.Serialize()
		return nil
	}
	s.live[a.String()] = r
	return nil
}

func (s *sessionStore) ContainsSession(_ context.Context, a *protocol.SignalAddress) (bool, error) {
	if s.serializing {
		_, ok := s.raw[a.String()]
		return ok, nil
	}
	_, ok := s.live[a.String()]
	return ok, nil
}

func (s *sessionStore) DeleteSession(_ context.Context, a *protocol.SignalAddress) error {
	delete(s.live, a.String())
	delete(s.raw, a.String())
	return nil
}

func (s *sessionStore) DeleteAllSessions(context.Context) error {
	clear(s.live)
	clear(s.raw)
	return nil
}

// identityStore trusts on first use, keyed by address string.
type identityStore struct {
	pair  *identity.KeyPair
	regID uint32
	known map[string][32]byte
}

func (i *identityStore) GetIdentityKeyPair() *identity.KeyPair { return i.pair }
func (i *identityStore) GetLocalRegistrationID() uint32        { return i.regID }

func (i *identityStore) SaveIdentity(_ context.Context, a *protocol.SignalAddress, k *identity.Key) error {
	i.known[a.String()] = k.PublicKey().PublicKey()
	return nil
}

func (i *identityStore) IsTrustedIdentity(_ context.Context, a *protocol.SignalAddress, k *identity.Key) (bool, error) {
	old, ok := i.known[a.String()]
	return !ok || old == k.PublicKey().PublicKey(), nil
}

type preKeyStore struct{ m map[uint32]*record.PreKey }

func (p *preKeyStore) LoadPreKey(_ context.Context, id uint32) (*record.PreKey, error) {
	r, ok := p.m[id]
	if !ok {
		return nil, fmt.Errorf("libsignalgo: no prekey %d", id)
	}
	return r, nil
}
func (p *preKeyStore) StorePreKey(_ context.Context, id uint32, r *record.PreKey) error {
	p.m[id] = r
	return nil
}
func (p *preKeyStore) ContainsPreKey(_ context.Context, id uint32) (bool, error) {
	_, ok := p.m[id]
	return ok, nil
}
func (p *preKeyStore) RemovePreKey(_ context.Context, id uint32) error {
	delete(p.m, id)
	return nil
}

type signedPreKeyStore struct {
	m map[uint32]*record.SignedPreKey
}

func (p *signedPreKeyStore) LoadSignedPreKey(_ context.Context, id uint32) (*record.SignedPreKey, error) {
	r, ok := p.m[id]
	if !ok {
		return nil, fmt.Errorf("libsignalgo: no signed prekey %d", id)
	}
	return r, nil
}
func (p *signedPreKeyStore) LoadSignedPreKeys(context.Context) ([]*record.SignedPreKey, error) {
	out := make([]*record.SignedPreKey, 0, len(p.m))
	for _, r := range p.m {
		out = append(out, r)
	}
	return out, nil
}
func (p *signedPreKeyStore) StoreSignedPreKey(_ context.Context, id uint32, r *record.SignedPreKey) error {
	p.m[id] = r
	return nil
}
func (p *signedPreKeyStore) ContainsSignedPreKey(_ context.Context, id uint32) (bool, error) {
	_, ok := p.m[id]
	return ok, nil
}
func (p *signedPreKeyStore) RemoveSignedPreKey(_ context.Context, id uint32) error {
	delete(p.m, id)
	return nil
}

// Party is one device: an identity, its stores and its address.
type Party struct {
	Addr      *protocol.SignalAddress
	sessions  *sessionStore
	identity  *identityStore
	preKeys   *preKeyStore
	signedPKs *signedPreKeyStore
	nextID    uint32
}

// NewParty creates a device with a fresh identity. serializing selects the store that keeps
// sessions as bytes.
func NewParty(name string, serializing bool) (*Party, error) {
	pair, err := keyhelper.GenerateIdentityKeyPair()
	if err != nil {
		return nil, fmt.Errorf("libsignalgo: identity: %w", err)
	}
	return &Party{
		Addr:      protocol.NewSignalAddress(name, 1),
		sessions:  newSessionStore(serializing),
		identity:  &identityStore{pair: pair, regID: keyhelper.GenerateRegistrationID(), known: map[string][32]byte{}},
		preKeys:   &preKeyStore{m: map[uint32]*record.PreKey{}},
		signedPKs: &signedPreKeyStore{m: map[uint32]*record.SignedPreKey{}},
	}, nil
}

// Bundle generates and stores a fresh one-time prekey and a fresh signed prekey and returns the
// bundle a key server would hand out for them.
func (p *Party) Bundle() (*prekey.Bundle, error) {
	p.nextID++
	id := p.nextID
	otk, err := ecc.GenerateKeyPair()
	if err != nil {
		return nil, fmt.Errorf("libsignalgo: prekey: %w", err)
	}
	p.preKeys.m[id] = record.NewPreKey(id, otk, serializer.PreKeyRecord)
	spk, err := keyhelper.GenerateSignedPreKey(p.identity.pair, id, serializer.SignedPreKeyRecord)
	if err != nil {
		return nil, fmt.Errorf("libsignalgo: signed prekey: %w", err)
	}
	p.signedPKs.m[id] = spk
	return prekey.NewBundle(p.identity.regID, 1, optional.NewOptionalUint32(id), id,
		otk.PublicKey(), spk.KeyPair().PublicKey(), spk.Signature(), p.identity.pair.PublicKey()), nil
}

// ForgetSessions drops every session (used to keep a long-lived responder's store small).
func (p *Party) ForgetSessions() { _ = p.sessions.DeleteAllSessions(context.Background()) }

func (p *Party) builder(remote *protocol.SignalAddress) *session.Builder {
	return session.NewBuilder(p.sessions, p.preKeys, p.signedPKs, p.identity, remote, serializer)
}

// Cipher returns the session cipher this party uses to talk to remote.
func (p *Party) Cipher(remote *protocol.SignalAddress) *session.Cipher {
	return session.NewCipher(p.builder(remote), remote)
}

// ProcessBundle starts a session with remote from its bundle (the initiator's half of X3DH).
func (p *Party) ProcessBundle(ctx context.Context, remote *protocol.SignalAddress, b *prekey.Bundle) error {
	if err := p.builder(remote).ProcessBundle(ctx, b); err != nil {
		return fmt.Errorf("libsignalgo: process bundle: %w", err)
	}
	return nil
}

// Encrypt encrypts pt to remote and returns the wire bytes and the message type.
func Encrypt(ctx context.Context, c *session.Cipher, pt []byte) ([]byte, uint32, error) {
	m, err := c.Encrypt(ctx, pt)
	if err != nil {
		return nil, 0, fmt.Errorf("libsignalgo: encrypt: %w", err)
	}
	return m.Serialize(), m.Type(), nil
}

// Decrypt parses wire bytes of either message type and decrypts them.
func Decrypt(ctx context.Context, c *session.Cipher, wire []byte, typ uint32) ([]byte, error) {
	if typ == protocol.PREKEY_TYPE {
		m, err := protocol.NewPreKeySignalMessageFromBytes(wire, serializer.PreKeySignalMessage, serializer.SignalMessage)
		if err != nil {
			return nil, fmt.Errorf("libsignalgo: parse prekey message: %w", err)
		}
		pt, err := c.DecryptMessage(ctx, m)
		if err != nil {
			return nil, fmt.Errorf("libsignalgo: decrypt prekey message: %w", err)
		}
		return pt, nil
	}
	m, err := protocol.NewSignalMessageFromBytes(wire, serializer.SignalMessage)
	if err != nil {
		return nil, fmt.Errorf("libsignalgo: parse message: %w", err)
	}
	pt, err := c.Decrypt(ctx, m)
	if err != nil {
		return nil, fmt.Errorf("libsignalgo: decrypt: %w", err)
	}
	return pt, nil
}
