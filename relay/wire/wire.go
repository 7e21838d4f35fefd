// Package wire defines the frames that the relay and its clients exchange:
// their byte layouts, their bounds, and their canonical encoding. It does no
// I/O; the relay's server and the client's transport both build on it.
//
// # Protocol flow
//
// A device opens a WebSocket to GET /v1/relay/ws with the subprotocol
// [Subprotocol] ("sotto.v1") and its device token (a JWT) in the
// Authorization: Bearer header. Every WebSocket message is binary and
// carries exactly one frame: one [FrameType] byte followed by the frame's
// body. Per-message compression is off: ciphertext does not compress.
//
//	device                                        relay
//	  |  -- WebSocket upgrade, Bearer JWT ------->  |  authenticate: the token names the queue
//	  |  <-- Deliver (backlog, oldest first) -----  |  at most Window unacknowledged at once
//	  |  -- Ack(cursor) ------------------------->  |  deletes the message, frees a window slot
//	  |  <-- Drained -----------------------------  |  once: the backlog has been sent
//	  |  <-- Deliver (live) ----------------------  |  as messages arrive
//	  |  -- Send(request ID, ...) --------------->  |  stored durably (or, if ephemeral, forwarded)
//	  |  <-- SendResult(request ID, status) ------  |  only after the store synced
//	  |  <-- Ephemeral ---------------------------  |  typing, presence: never stored, never acked
//
// Messages are delivered in queue order: higher priority first, first in
// first out within a priority. A message stays queued until the device
// acknowledges its cursor; whatever was delivered but not acknowledged when
// a connection ends is delivered again on the next connection, so a device
// must de-duplicate by message ID. A second connection for the same device
// displaces the first, which is closed with status code 4001 (see the
// relay's server package for the close codes).
//
// The same Send frame is the body of an HTTP POST /v1/messages; the answer
// to it is then an HTTP status with a JSON body instead of a SendResult.
//
// Sends may be pipelined: the relay stores the Send frames of one
// connection in the order of their frames (so a recipient device sees one
// sender's messages in the order they were sent), with up to
// [MaxSendsInFlight] unanswered at once. A refused send does not hold up the
// ones after it, so a client that needs strict order stops sending after a
// refusal until it has dealt with it.
//
// Sealed sends must not go over the authenticated connection, which would
// tie the sealed sender to the connection's account. A device sends them
// over a WebSocket to GET /v1/relay/ws/send with the same subprotocol and NO
// Authorization header: a send-only connection tied to no account. On it the
// device writes only Send frames with the sealed flag set and reads only
// SendResults; a Send without the flag is answered 401 "unauthorized" (the
// connection stays open), any other device-to-relay frame closes it with
// 1008, and nothing is ever delivered on it.
//
// # Encoding
//
// Bodies use the TLS presentation-language style encoding of
// golang.org/x/crypto/cryptobyte: big-endian fixed-size integers and
// length-prefixed byte strings and lists. Every length is checked against
// the bound named below, and a parser accepts exactly the bytes its
// marshaller produces: parse then marshal reproduces the input byte for
// byte, and trailing bytes are an error. A receiver ignores frames whose
// type it does not know, so that new frame types can be added without a new
// protocol version; a frame of a known type that does not parse is a
// protocol error and closes the connection.
package wire

import (
	"errors"
	"fmt"
)

// ProtocolVersion is the version of the frame protocol described here. The
// WebSocket subprotocol name carries it.
//
// Changelog:
//   - 1: first version: Deliver, Drained, Ack, Send, SendResult, Ephemeral.
const ProtocolVersion = 1

// Subprotocol is the WebSocket subprotocol a client must offer and the
// relay accepts; it names [ProtocolVersion].
const Subprotocol = "sotto.v1"

// Specification constants: bounds every implementation MUST enforce.
const (
	// MaxFrameSize bounds one frame (type byte included). It is what one
	// connection may make the relay buffer at once, and it fits a group
	// send to MaxRecipients devices with small per-device headers plus a
	// MaxBodySize body; attachments go to blobs, never into frames.
	MaxFrameSize = 1 << 20
	// MaxBodySize bounds a message's shared body: messages are text and
	// small control data; anything bigger travels as a blob.
	MaxBodySize = 256 << 10
	// MaxHeaderSize bounds a per-recipient header (a sealed-sender envelope
	// or a key wrapped for one device is a few hundred bytes).
	MaxHeaderSize = 4096
	// MaxRecipients bounds the devices of one Send, like Signal's limit for
	// multi-recipient sends.
	MaxRecipients = 5000
	// MaxErrorCodeLen bounds the error code string of a SendResult.
	MaxErrorCodeLen = 64
	// MaxTTL is the longest retention a sender may ask for (90 days), in
	// seconds; 0 means the relay's default.
	MaxTTL = 90 * 24 * 60 * 60
	// MaxSendsInFlight is how many Send frames a client may have written on
	// one connection and not yet seen answered: the relay stores a
	// connection's sends in the order of their frames, up to this many at
	// once, and stops reading the connection while that many are
	// unanswered (so a client that writes more only waits). SendResults
	// may come back in any order; a client matches them by request ID.
	MaxSendsInFlight = 64
)

// Fixed sizes of the fields below.
const (
	CursorSize    = 9
	MessageIDSize = 16
	AccountSize   = 20
	AccessKeySize = 32
)

// FrameType is the first byte of every frame.
type FrameType byte

// Frame types. Integers are big-endian; "x<uN>" is a byte string prefixed
// by its length as an N-bit integer; "list<uN>" is a sequence of items
// prefixed by its total length in bytes as an N-bit integer.
const (
	// FrameDeliver (relay → device) carries one stored message:
	//
	//	cursor[9] | message id[16] | priority u8 | stored u64 (Unix ms) |
	//	header<u16> | body<u24>
	//
	// The device acknowledges it with an Ack of the same cursor.
	FrameDeliver FrameType = 0x01
	// FrameDrained (relay → device) has an empty body. It is sent once per
	// connection, after the last message that was queued when the
	// connection started had been sent (at once if there was none).
	FrameDrained FrameType = 0x02
	// FrameAck (device → relay) acknowledges one delivered message, which
	// the relay then deletes:
	//
	//	cursor[9]
	FrameAck FrameType = 0x03
	// FrameSend (device → relay, and the body of POST /v1/messages) asks
	// the relay to queue one message for one or more devices:
	//
	//	request id u32 | message id[16] | priority u8 | ttl u32 (seconds,
	//	0 = default, at most MaxTTL) | flags u8 (bit 0 ephemeral, bit 1
	//	sealed, other bits zero) | accounts list<u24> | body<u24>
	//
	//	account = account id[20] | access key[32] (only if sealed) |
	//	          devices list<u24>
	//	device  = device id u32 | header<u16>
	//
	// The body is stored once and shared by every recipient device; each
	// device receives its own header with it.
	FrameSend FrameType = 0x04
	// FrameSendResult (relay → device) answers a Send frame:
	//
	//	request id u32 | status u16 (an HTTP status code) | code<u8> |
	//	missing list<u24> | extra list<u24>
	//
	//	missing/extra item = account id[20] | device id u32
	//
	// missing and extra are filled only for status 409 (the send's device
	// list differs from the recipient's current one).
	FrameSendResult FrameType = 0x05
	// FrameEphemeral (relay → device) carries an ephemeral message, which
	// is never stored and needs no Ack:
	//
	//	message id[16] | priority u8 | header<u16> | body<u24>
	FrameEphemeral FrameType = 0x06
)

// String returns the frame type's name, for logs.
func (t FrameType) String() string {
	switch t {
	case FrameDeliver:
		return "Deliver"
	case FrameDrained:
		return "Drained"
	case FrameAck:
		return "Ack"
	case FrameSend:
		return "Send"
	case FrameSendResult:
		return "SendResult"
	case FrameEphemeral:
		return "Ephemeral"
	}
	return fmt.Sprintf("FrameType(%#02x)", byte(t))
}

// Known reports whether t is a frame type of this protocol version.
func (t FrameType) Known() bool { return t >= FrameDeliver && t <= FrameEphemeral }

// Errors returned by the parsers; test with errors.Is.
var (
	// ErrMalformed reports a frame that does not follow its layout.
	ErrMalformed = errors.New("wire: malformed frame")
	// ErrTooLarge reports a frame or a field beyond its bound.
	ErrTooLarge = errors.New("wire: frame too large")
)

// TypeOf returns the type of a frame, reporting ErrMalformed for an empty
// one and ErrTooLarge for one beyond MaxFrameSize.
func TypeOf(frame []byte) (FrameType, error) {
	if len(frame) == 0 {
		return 0, fmt.Errorf("%w: empty", ErrMalformed)
	}
	if len(frame) > MaxFrameSize {
		return 0, fmt.Errorf("%w: %d bytes", ErrTooLarge, len(frame))
	}
	return FrameType(frame[0]), nil
}
