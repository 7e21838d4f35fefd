package wire

import (
	"encoding/binary"
	"fmt"
	"slices"

	"golang.org/x/crypto/cryptobyte"
)

// Byte slices in parsed frames alias the frame they were parsed from.

// Deliver is a FrameDeliver: one stored message for the device.
type Deliver struct {
	Cursor   [CursorSize]byte
	ID       [MessageIDSize]byte
	Priority uint8
	// StoredMillis is when the relay accepted the message, in Unix
	// milliseconds.
	StoredMillis uint64
	Header       []byte
	Body         []byte
}

// Ack is a FrameAck.
type Ack struct {
	Cursor [CursorSize]byte
}

// Send is a FrameSend.
type Send struct {
	// RequestID matches the SendResult to the Send on a WebSocket; over
	// HTTP it is ignored.
	RequestID uint32
	ID        [MessageIDSize]byte
	Priority  uint8
	// TTL is the retention in seconds; 0 asks for the relay's default.
	TTL       uint32
	Ephemeral bool
	// Sealed says the sender does not identify itself: each account then
	// carries its delivery access key.
	Sealed   bool
	Accounts []SendAccount
	Body     []byte
}

// SendAccount is one recipient account of a Send.
type SendAccount struct {
	Account [AccountSize]byte
	// AccessKey is present only in sealed sends.
	AccessKey [AccessKeySize]byte
	Devices   []SendDevice
}

// SendDevice is one recipient device of a Send, with its own header.
type SendDevice struct {
	Device uint32
	Header []byte
}

// Recipients returns the number of devices a Send addresses.
func (s *Send) Recipients() int {
	n := 0
	for i := range s.Accounts {
		n += len(s.Accounts[i].Devices)
	}
	return n
}

// SendResult is a FrameSendResult.
type SendResult struct {
	RequestID uint32
	// Status is an HTTP status code: 200 accepted, 4xx refused, 5xx failed.
	Status uint16
	// Code is a short machine-readable error code ("" when accepted).
	Code    string
	Missing []DeviceRef
	Extra   []DeviceRef
}

// DeviceRef names one device of one account.
type DeviceRef struct {
	Account [AccountSize]byte
	Device  uint32
}

// Ephemeral is a FrameEphemeral.
type Ephemeral struct {
	ID       [MessageIDSize]byte
	Priority uint8
	Header   []byte
	Body     []byte
}

const (
	flagEphemeral = 1 << 0
	flagSealed    = 1 << 1
	flagsKnown    = flagEphemeral | flagSealed
)

// builder starts a frame of type t with room for size more bytes.
func builder(t FrameType, dst []byte, size int) *cryptobyte.Builder {
	if cap(dst)-len(dst) < size+1 {
		nd := make([]byte, len(dst), len(dst)+size+1)
		copy(nd, dst)
		dst = nd
	}
	b := cryptobyte.NewBuilder(dst)
	b.AddUint8(uint8(t))
	return b
}

// finish returns the built frame. Marshalling can fail only on a value
// beyond the bounds of its length prefix, which is a programmer error: the
// bounds below are far inside them, and callers validate before.
func finish(b *cryptobyte.Builder) []byte {
	out, err := b.Bytes()
	if err != nil {
		panic("wire: marshal: " + err.Error())
	}
	return out
}

// open checks a frame's type and size and returns its body.
func open(frame []byte, want FrameType) (cryptobyte.String, error) {
	t, err := TypeOf(frame)
	if err != nil {
		return nil, err
	}
	if t != want {
		return nil, fmt.Errorf("%w: %s frame, want %s", ErrMalformed, t, want)
	}
	return cryptobyte.String(frame[1:]), nil
}

func malformed(t FrameType, what string) error {
	return fmt.Errorf("%w: %s: bad %s", ErrMalformed, t, what)
}

func tooLarge(t FrameType, what string) error {
	return fmt.Errorf("%w: %s: %s beyond its bound", ErrTooLarge, t, what)
}

// readFixed copies len(dst) bytes.
func readFixed(s *cryptobyte.String, dst []byte) bool { return s.CopyBytes(dst) }

// Append appends the frame to dst and returns the result.
func (d *Deliver) Append(dst []byte) []byte {
	if len(d.Header) > MaxHeaderSize || len(d.Body) > MaxBodySize {
		panic("wire: Deliver beyond its bounds")
	}
	// Hand-written rather than with a cryptobyte.Builder: this is the
	// relay's hot path, and it must not allocate beyond growing dst.
	dst = slices.Grow(dst, 1+CursorSize+MessageIDSize+1+8+2+len(d.Header)+3+len(d.Body))
	dst = append(dst, byte(FrameDeliver))
	dst = append(dst, d.Cursor[:]...)
	dst = append(dst, d.ID[:]...)
	dst = append(dst, d.Priority)
	dst = binary.BigEndian.AppendUint64(dst, d.StoredMillis)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(d.Header)))
	dst = append(dst, d.Header...)
	dst = append(dst, byte(len(d.Body)>>16), byte(len(d.Body)>>8), byte(len(d.Body)))
	return append(dst, d.Body...)
}

// Marshal returns the frame.
func (d *Deliver) Marshal() []byte { return d.Append(nil) }

// ParseDeliver parses a FrameDeliver.
func ParseDeliver(frame []byte) (*Deliver, error) {
	s, err := open(frame, FrameDeliver)
	if err != nil {
		return nil, err
	}
	d := new(Deliver)
	var header, body cryptobyte.String
	if !readFixed(&s, d.Cursor[:]) || !readFixed(&s, d.ID[:]) || !s.ReadUint8(&d.Priority) ||
		!s.ReadUint64(&d.StoredMillis) || !s.ReadUint16LengthPrefixed(&header) ||
		!s.ReadUint24LengthPrefixed(&body) || !s.Empty() {
		return nil, malformed(FrameDeliver, "layout")
	}
	if len(header) > MaxHeaderSize {
		return nil, tooLarge(FrameDeliver, "header")
	}
	if len(body) > MaxBodySize {
		return nil, tooLarge(FrameDeliver, "body")
	}
	d.Header, d.Body = header, body
	return d, nil
}

// DrainedFrame returns the FrameDrained frame.
func DrainedFrame() []byte { return []byte{byte(FrameDrained)} }

// ParseDrained checks a FrameDrained.
func ParseDrained(frame []byte) error {
	s, err := open(frame, FrameDrained)
	if err != nil {
		return err
	}
	if !s.Empty() {
		return malformed(FrameDrained, "length")
	}
	return nil
}

// Append appends the frame to dst and returns the result.
func (a *Ack) Append(dst []byte) []byte {
	b := builder(FrameAck, dst, CursorSize)
	b.AddBytes(a.Cursor[:])
	return finish(b)
}

// Marshal returns the frame.
func (a *Ack) Marshal() []byte { return a.Append(nil) }

// ParseAck parses a FrameAck.
func ParseAck(frame []byte) (*Ack, error) {
	s, err := open(frame, FrameAck)
	if err != nil {
		return nil, err
	}
	a := new(Ack)
	if !readFixed(&s, a.Cursor[:]) || !s.Empty() {
		return nil, malformed(FrameAck, "layout")
	}
	return a, nil
}

// size returns the encoded size of a Send's body.
func (s *Send) size() int {
	n := 4 + MessageIDSize + 1 + 4 + 1 + 3 + 3 + len(s.Body)
	for i := range s.Accounts {
		n += AccountSize + 3
		if s.Sealed {
			n += AccessKeySize
		}
		for j := range s.Accounts[i].Devices {
			n += 4 + 2 + len(s.Accounts[i].Devices[j].Header)
		}
	}
	return n
}

// Append appends the frame to dst and returns the result. It panics if the
// Send is beyond the bounds that ParseSend enforces.
func (s *Send) Append(dst []byte) []byte {
	if s.Recipients() > MaxRecipients || len(s.Body) > MaxBodySize || s.size()+1 > MaxFrameSize {
		panic("wire: Send beyond its bounds")
	}
	b := builder(FrameSend, dst, s.size())
	b.AddUint32(s.RequestID)
	b.AddBytes(s.ID[:])
	b.AddUint8(s.Priority)
	b.AddUint32(s.TTL)
	var flags uint8
	if s.Ephemeral {
		flags |= flagEphemeral
	}
	if s.Sealed {
		flags |= flagSealed
	}
	b.AddUint8(flags)
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
		for i := range s.Accounts {
			a := &s.Accounts[i]
			b.AddBytes(a.Account[:])
			if s.Sealed {
				b.AddBytes(a.AccessKey[:])
			}
			b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
				for j := range a.Devices {
					if len(a.Devices[j].Header) > MaxHeaderSize {
						panic("wire: Send header beyond its bound")
					}
					b.AddUint32(a.Devices[j].Device)
					b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(a.Devices[j].Header) })
				}
			})
		}
	})
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(s.Body) })
	return finish(b)
}

// Marshal returns the frame.
func (s *Send) Marshal() []byte { return s.Append(nil) }

// ParseSend parses a FrameSend. It checks the layout and the bounds
// (MaxRecipients, MaxHeaderSize, MaxBodySize, MaxTTL, known flags); whether
// the recipients make sense is the relay's business.
func ParseSend(frame []byte) (*Send, error) {
	s, err := open(frame, FrameSend)
	if err != nil {
		return nil, err
	}
	m := new(Send)
	var flags uint8
	var accounts, body cryptobyte.String
	if !s.ReadUint32(&m.RequestID) || !readFixed(&s, m.ID[:]) || !s.ReadUint8(&m.Priority) ||
		!s.ReadUint32(&m.TTL) || !s.ReadUint8(&flags) || !s.ReadUint24LengthPrefixed(&accounts) ||
		!s.ReadUint24LengthPrefixed(&body) || !s.Empty() {
		return nil, malformed(FrameSend, "layout")
	}
	if flags&^flagsKnown != 0 {
		return nil, malformed(FrameSend, "flags")
	}
	if m.TTL > MaxTTL {
		return nil, tooLarge(FrameSend, "ttl")
	}
	if len(body) > MaxBodySize {
		return nil, tooLarge(FrameSend, "body")
	}
	m.Ephemeral = flags&flagEphemeral != 0
	m.Sealed = flags&flagSealed != 0
	m.Body = body
	total := 0
	for !accounts.Empty() {
		var a SendAccount
		var devices cryptobyte.String
		if !readFixed(&accounts, a.Account[:]) {
			return nil, malformed(FrameSend, "account")
		}
		if m.Sealed && !readFixed(&accounts, a.AccessKey[:]) {
			return nil, malformed(FrameSend, "access key")
		}
		if !accounts.ReadUint24LengthPrefixed(&devices) {
			return nil, malformed(FrameSend, "device list")
		}
		for !devices.Empty() {
			var d SendDevice
			var header cryptobyte.String
			if !devices.ReadUint32(&d.Device) || !devices.ReadUint16LengthPrefixed(&header) {
				return nil, malformed(FrameSend, "device")
			}
			if len(header) > MaxHeaderSize {
				return nil, tooLarge(FrameSend, "header")
			}
			if total++; total > MaxRecipients {
				return nil, tooLarge(FrameSend, "recipient count")
			}
			d.Header = header
			a.Devices = append(a.Devices, d)
		}
		m.Accounts = append(m.Accounts, a)
	}
	return m, nil
}

// Append appends the frame to dst and returns the result.
func (r *SendResult) Append(dst []byte) []byte {
	if len(r.Code) > MaxErrorCodeLen {
		panic("wire: SendResult code beyond its bound")
	}
	b := builder(FrameSendResult, dst, 4+2+1+len(r.Code)+6+(len(r.Missing)+len(r.Extra))*(AccountSize+4))
	b.AddUint32(r.RequestID)
	b.AddUint16(r.Status)
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(r.Code)) })
	for _, list := range [][]DeviceRef{r.Missing, r.Extra} {
		b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
			for _, d := range list {
				b.AddBytes(d.Account[:])
				b.AddUint32(d.Device)
			}
		})
	}
	return finish(b)
}

// Marshal returns the frame.
func (r *SendResult) Marshal() []byte { return r.Append(nil) }

// ParseSendResult parses a FrameSendResult.
func ParseSendResult(frame []byte) (*SendResult, error) {
	s, err := open(frame, FrameSendResult)
	if err != nil {
		return nil, err
	}
	r := new(SendResult)
	var code, missing, extra cryptobyte.String
	if !s.ReadUint32(&r.RequestID) || !s.ReadUint16(&r.Status) || !s.ReadUint8LengthPrefixed(&code) ||
		!s.ReadUint24LengthPrefixed(&missing) || !s.ReadUint24LengthPrefixed(&extra) || !s.Empty() {
		return nil, malformed(FrameSendResult, "layout")
	}
	if len(code) > MaxErrorCodeLen {
		return nil, tooLarge(FrameSendResult, "code")
	}
	r.Code = string(code)
	for _, l := range []struct {
		s   *cryptobyte.String
		dst *[]DeviceRef
	}{{&missing, &r.Missing}, {&extra, &r.Extra}} {
		if len(*l.s)%(AccountSize+4) != 0 {
			return nil, malformed(FrameSendResult, "device list")
		}
		if len(*l.s)/(AccountSize+4) > MaxRecipients {
			return nil, tooLarge(FrameSendResult, "device list")
		}
		for !l.s.Empty() {
			var d DeviceRef
			readFixed(l.s, d.Account[:])
			l.s.ReadUint32(&d.Device)
			*l.dst = append(*l.dst, d)
		}
	}
	return r, nil
}

// Append appends the frame to dst and returns the result.
func (e *Ephemeral) Append(dst []byte) []byte {
	if len(e.Header) > MaxHeaderSize || len(e.Body) > MaxBodySize {
		panic("wire: Ephemeral beyond its bounds")
	}
	b := builder(FrameEphemeral, dst, MessageIDSize+1+2+len(e.Header)+3+len(e.Body))
	b.AddBytes(e.ID[:])
	b.AddUint8(e.Priority)
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(e.Header) })
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(e.Body) })
	return finish(b)
}

// Marshal returns the frame.
func (e *Ephemeral) Marshal() []byte { return e.Append(nil) }

// ParseEphemeral parses a FrameEphemeral.
func ParseEphemeral(frame []byte) (*Ephemeral, error) {
	s, err := open(frame, FrameEphemeral)
	if err != nil {
		return nil, err
	}
	e := new(Ephemeral)
	var header, body cryptobyte.String
	if !readFixed(&s, e.ID[:]) || !s.ReadUint8(&e.Priority) || !s.ReadUint16LengthPrefixed(&header) ||
		!s.ReadUint24LengthPrefixed(&body) || !s.Empty() {
		return nil, malformed(FrameEphemeral, "layout")
	}
	if len(header) > MaxHeaderSize {
		return nil, tooLarge(FrameEphemeral, "header")
	}
	if len(body) > MaxBodySize {
		return nil, tooLarge(FrameEphemeral, "body")
	}
	e.Header, e.Body = header, body
	return e, nil
}
