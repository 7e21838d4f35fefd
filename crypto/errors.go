package crypto

import (
	"errors"
	"fmt"
)

// Sentinel errors. Callers test for them with errors.Is.
var (
	// ErrDecrypt reports that a message failed to authenticate or decrypt.
	// It deliberately says nothing more, so that it forms no oracle.
	ErrDecrypt = errors.New("crypto: message failed to decrypt")
	// ErrDuplicateMessage reports a message that was already decrypted once
	// (a replay). Applications may drop it quietly.
	ErrDuplicateMessage = errors.New("crypto: duplicate message")
	// ErrTooManySkipped reports a message whose counter is further ahead
	// than the skipped-key bounds allow.
	ErrTooManySkipped = errors.New("crypto: too many skipped messages")
	// ErrInvalidKey reports a malformed public key, a point of small order
	// or an all-zero Diffie-Hellman result.
	ErrInvalidKey = errors.New("crypto: invalid key")
	// ErrBadSignature reports a signature that does not verify.
	ErrBadSignature = errors.New("crypto: bad signature")
	// ErrMalformed reports bytes that are not a valid encoding of the
	// expected structure (truncated, trailing data, bad lengths, unknown
	// version).
	ErrMalformed = errors.New("crypto: malformed encoding")
	// ErrStaleDeviceList reports a device list whose version does not grow.
	ErrStaleDeviceList = errors.New("crypto: device list version does not grow")
	// ErrCertificateExpired reports a sender certificate past its expiry.
	ErrCertificateExpired = errors.New("crypto: sender certificate expired")
	// ErrUntrustedCertificate reports a sender certificate not signed by a
	// trusted root.
	ErrUntrustedCertificate = errors.New("crypto: sender certificate not signed by a trusted root")
	// ErrUnknownPreKey reports a prekey ID that the responder does not hold
	// (never issued, or a one-time prekey already consumed and deleted).
	// [PreKeyLookup] implementations return it, wrapped or not.
	ErrUnknownPreKey = errors.New("crypto: unknown prekey")
	// ErrNewSession reports a prekey message given to [Session.Decrypt]
	// that starts a different session than the one held: the peer set up a
	// new session (for example after reinstalling). The caller passes the
	// message to [AcceptSession] instead.
	ErrNewSession = errors.New("crypto: prekey message starts a new session")
)

// AccountMismatchError reports an account key, device list or certificate
// that belongs to another account than the one asked for: the self-
// certifying check of account IDs failed.
type AccountMismatchError struct {
	Want, Got AccountID
}

func (e *AccountMismatchError) Error() string {
	return fmt.Sprintf("crypto: account key belongs to %s, not %s", e.Got, e.Want)
}

// UntrustedIdentityError reports a peer whose identity key differs from
// the one the session or device list trusts.
type UntrustedIdentityError struct {
	Address Address
}

func (e *UntrustedIdentityError) Error() string {
	return fmt.Sprintf("crypto: untrusted identity key for %s", e.Address)
}

// malformed wraps ErrMalformed with the name of what failed to parse.
func malformed(what string) error {
	return fmt.Errorf("crypto: %s: %w", what, ErrMalformed)
}

// Errors of sealed sender, sender keys, safety numbers and the store key.
var (
	// ErrSenderMismatch reports a sealed envelope whose sender certificate
	// names another identity key than the one that authenticated the
	// envelope: the certificate was lifted from someone else's message.
	ErrSenderMismatch = errors.New("crypto: sender certificate does not match the envelope's sender")
	// ErrNoSenderKey reports a group message for a sender key ID that the
	// receiver never got a distribution message for (or has dropped).
	ErrNoSenderKey = errors.New("crypto: no sender key for this message")
	// ErrSafetyNumberMismatch reports a scanned safety-number payload that
	// does not match the two account keys: the keys differ from the ones the
	// other person holds.
	ErrSafetyNumberMismatch = errors.New("crypto: safety numbers do not match")
	// ErrWrongPassphrase reports a wrapped store key that the passphrase
	// does not unlock.
	ErrWrongPassphrase = errors.New("crypto: wrong passphrase for the store key")
)
