package crypto

import (
	"fmt"
	"time"

	"golang.org/x/crypto/cryptobyte"
)

// Specification constants of device lists (PROTOCOL.md §2.3).
const (
	deviceListVersion = 1
	// MaxDevices bounds the devices of one account, so that a fan-out to
	// every device stays cheap and a list fits in one small message.
	MaxDevices = 64
)

// Device is one entry of a [DeviceList].
type Device struct {
	ID       DeviceID
	Identity IdentityKey
	Added    time.Time // second precision on the wire
}

// DeviceList is the set of an account's devices, signed by the account key.
// Its Version only grows: a list with a version not greater than one a
// client has seen is refused.
type DeviceList struct {
	AccountKey AccountKey
	Version    uint64
	Devices    []Device // sorted by ID, IDs unique and non-zero
}

// Account returns the ID of the account the list belongs to.
func (l *DeviceList) Account() AccountID { return l.AccountKey.ID() }

// Device returns the entry with the given ID.
func (l *DeviceList) Device(id DeviceID) (Device, bool) {
	for _, d := range l.Devices {
		if d.ID == id {
			return d, true
		}
	}
	return Device{}, false
}

// marshalBody encodes the signed part of the list (PROTOCOL.md §2.3).
func (l *DeviceList) marshalBody() ([]byte, error) {
	if err := l.check(); err != nil {
		return nil, err
	}
	var b cryptobyte.Builder
	b.AddUint8(deviceListVersion)
	b.AddBytes(l.AccountKey.pub[:])
	b.AddUint64(l.Version)
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		for _, d := range l.Devices {
			b.AddUint32(uint32(d.ID))
			b.AddBytes(d.Identity.ed[:])
			b.AddUint64(uint64(d.Added.Unix()))
		}
	})
	return b.Bytes()
}

func (l *DeviceList) check() error {
	if l.AccountKey.IsZero() {
		return fmt.Errorf("crypto: device list: %w", ErrInvalidKey)
	}
	if len(l.Devices) == 0 || len(l.Devices) > MaxDevices {
		return malformed("device list: device count")
	}
	for i, d := range l.Devices {
		if d.ID == 0 || d.Identity.IsZero() || d.Added.Unix() < 0 {
			return malformed("device list: device entry")
		}
		if i > 0 && l.Devices[i-1].ID >= d.ID {
			return malformed("device list: device IDs not strictly increasing")
		}
	}
	return nil
}

// SignDeviceList encodes and signs a device list with the account key. It
// returns the signed encoding that the key server stores and serves. The
// list's AccountKey must be the public half of k.
func SignDeviceList(k *AccountPrivateKey, l *DeviceList) ([]byte, error) {
	if !l.AccountKey.Equal(k.Public()) {
		return nil, fmt.Errorf("crypto: device list: account key is not the signer's")
	}
	body, err := l.marshalBody()
	if err != nil {
		return nil, err
	}
	var b cryptobyte.Builder
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(body) })
	b.AddBytes(k.sign(labelDeviceList, body))
	return b.Bytes()
}

// ParseSignedDeviceList parses a signed device list and verifies its
// signature with the account key it contains. It does not know which
// account the caller expected: use [VerifyDeviceList] for that.
func ParseSignedDeviceList(signed []byte) (*DeviceList, error) {
	s := cryptobyte.String(signed)
	var body cryptobyte.String
	var sig []byte
	if !s.ReadUint16LengthPrefixed(&body) || !s.ReadBytes(&sig, SignatureSize) || !s.Empty() {
		return nil, malformed("signed device list")
	}
	l, err := parseDeviceListBody(body)
	if err != nil {
		return nil, err
	}
	if !l.AccountKey.verify(labelDeviceList, body, sig) {
		return nil, fmt.Errorf("crypto: device list: %w", ErrBadSignature)
	}
	return l, nil
}

// VerifyDeviceList parses and verifies a signed device list and checks that
// it belongs to account want (its account key hashes to want). It returns
// *[AccountMismatchError] otherwise.
func VerifyDeviceList(signed []byte, want AccountID) (*DeviceList, error) {
	l, err := ParseSignedDeviceList(signed)
	if err != nil {
		return nil, err
	}
	if got := l.Account(); got != want {
		return nil, &AccountMismatchError{Want: want, Got: got}
	}
	return l, nil
}

// CheckSuccessor verifies that l may replace prev: same account, greater
// version. It returns [ErrStaleDeviceList] or *[AccountMismatchError].
func (l *DeviceList) CheckSuccessor(prev *DeviceList) error {
	if prev == nil {
		return nil
	}
	if !l.AccountKey.Equal(prev.AccountKey) {
		return &AccountMismatchError{Want: prev.Account(), Got: l.Account()}
	}
	if l.Version <= prev.Version {
		return ErrStaleDeviceList
	}
	return nil
}

func parseDeviceListBody(body []byte) (*DeviceList, error) {
	s := cryptobyte.String(body)
	var version uint8
	var accountKey []byte
	var devices cryptobyte.String
	l := new(DeviceList)
	if !s.ReadUint8(&version) || version != deviceListVersion ||
		!s.ReadBytes(&accountKey, PublicKeySize) ||
		!s.ReadUint64(&l.Version) ||
		!s.ReadUint16LengthPrefixed(&devices) || !s.Empty() {
		return nil, malformed("device list")
	}
	var err error
	if l.AccountKey, err = NewAccountKey(accountKey); err != nil {
		return nil, err
	}
	for !devices.Empty() {
		var id uint32
		var identity []byte
		var added uint64
		if !devices.ReadUint32(&id) || !devices.ReadBytes(&identity, PublicKeySize) || !devices.ReadUint64(&added) {
			return nil, malformed("device list: device entry")
		}
		if added > 1<<62 {
			return nil, malformed("device list: added time")
		}
		ik, err := NewIdentityKey(identity)
		if err != nil {
			return nil, err
		}
		l.Devices = append(l.Devices, Device{ID: DeviceID(id), Identity: ik, Added: time.Unix(int64(added), 0).UTC()})
	}
	if err := l.check(); err != nil {
		return nil, err
	}
	return l, nil
}
