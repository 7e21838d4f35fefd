package crypto

import (
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
)

// AccountIDSize is the length in bytes of an [AccountID].
const AccountIDSize = 20

// labelAccountID is the domain-separation prefix hashed before the account
// key to form an account ID (PROTOCOL.md §2.1).
const labelAccountID = "sotto/v1 account id"

// AccountID names an account. It is derived from the account's public key,
// so a client that receives an account key for an ID can check that the two
// belong together: the key server cannot substitute a key.
//
// AccountID = SHA-256("sotto/v1 account id" || account public key)[:20]
//
// Its text form is the 32-character lowercase base32 (RFC 4648, no padding)
// of those 20 bytes.
type AccountID [AccountIDSize]byte

var accountIDEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// String returns the text form of the account ID.
func (id AccountID) String() string {
	return strings.ToLower(accountIDEncoding.EncodeToString(id[:]))
}

// MarshalText implements encoding.TextMarshaler.
func (id AccountID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler with [ParseAccountID].
func (id *AccountID) UnmarshalText(b []byte) error {
	parsed, err := ParseAccountID(string(b))
	if err != nil {
		return err
	}
	*id = parsed
	return nil
}

// ErrInvalidAccountID is returned by [ParseAccountID] for text that is not an
// account ID.
var ErrInvalidAccountID = errors.New("crypto: invalid account ID")

// ParseAccountID parses the text form of an account ID. It accepts exactly
// 32 base32 characters in either case and nothing else.
func ParseAccountID(s string) (AccountID, error) {
	var id AccountID
	if len(s) != 32 {
		return id, ErrInvalidAccountID
	}
	n, err := accountIDEncoding.Decode(id[:], []byte(strings.ToUpper(s)))
	if err != nil || n != AccountIDSize {
		return AccountID{}, ErrInvalidAccountID
	}
	return id, nil
}

// accountIDFromKey derives the account ID of an Ed25519 account public key.
// It implements PROTOCOL.md §2.1.
func accountIDFromKey(pub []byte) AccountID {
	h := sha256.New()
	h.Write([]byte(labelAccountID))
	h.Write(pub)
	var id AccountID
	copy(id[:], h.Sum(nil))
	return id
}

// DeviceID numbers a device within its account. Device IDs are assigned by
// the account's primary device when it publishes a device list; 0 is never a
// valid device ID.
type DeviceID uint32

// Address names one device of one account: the unit to which sessions are
// bound and to which the relay delivers.
type Address struct {
	Account AccountID
	Device  DeviceID
}

// String returns "accountid.device".
func (a Address) String() string { return fmt.Sprintf("%s.%d", a.Account, a.Device) }
