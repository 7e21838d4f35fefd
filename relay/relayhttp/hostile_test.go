package relayhttp_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/sotto-im/sotto/internal/token"
	"github.com/sotto-im/sotto/relay/server"
	"github.com/sotto-im/sotto/relay/store"
	"github.com/sotto-im/sotto/relay/wire"
)

// TestHostileInputs sends bad requests over HTTP and bad frames over the
// WebSocket. Each must get a clear error (a 4xx with a JSON body, or a
// closed connection with the right code); afterwards the relay still works
// and the message stored before them is intact.
func TestHostileInputs(t *testing.T) {
	e := newEnv(t, envOptions{})
	bob := store.QueueID{Account: e.account(1, 2), Device: 1}
	alice := store.QueueID{Account: e.account(1), Device: 1}
	from := e.token(alice)
	kept := msg(bob, 0, "stored before the attack")
	kept.Accounts[0].Devices = append(kept.Accounts[0].Devices, wire.SendDevice{Device: 2})
	e.mustSend(from, kept)

	valid := func() *wire.Send {
		m := msg(bob, 0, "x")
		m.Accounts[0].Devices = append(m.Accounts[0].Devices, wire.SendDevice{Device: 2})
		return m
	}
	mod := func(f func(*wire.Send)) []byte {
		m := valid()
		f(m)
		return m.Marshal()
	}
	withTTL := func(ttl uint32) []byte {
		b := valid().Marshal()
		binary.BigEndian.PutUint32(b[22:], ttl) // type(1) request id(4) message id(16) priority(1)
		return b
	}
	hugeRecipients := func(n int) []byte {
		// Built by hand: Marshal refuses to exceed MaxRecipients.
		var devs []byte
		for i := range n {
			devs = binary.BigEndian.AppendUint32(devs, uint32(i+1))
			devs = append(devs, 0, 0)
		}
		acct := append(bob.Account[:], byte(len(devs)>>16), byte(len(devs)>>8), byte(len(devs)))
		acct = append(acct, devs...)
		b := []byte{byte(wire.FrameSend), 0, 0, 0, 1}
		b = append(b, make([]byte, 16+1+4+1)...)
		b = append(b, byte(len(acct)>>16), byte(len(acct)>>8), byte(len(acct)))
		b = append(b, acct...)
		return append(b, 0, 0, 1, 'x')
	}
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	forged, _, _ := token.NewSigner(otherKey, "sotto-test", "relay").Issue(alice.Account, alice.Device, time.Now(), time.Minute)
	expired, _, _ := e.signer.Issue(alice.Account, alice.Device, time.Now().Add(-2*time.Hour), time.Minute)
	wrongAud, _, _ := token.NewSigner(otherKey, "sotto-test", "keyserver").Issue(alice.Account, alice.Device, time.Now(), time.Minute)
	sendBytes := valid().Marshal()

	httpCases := []struct {
		name         string
		method, path string
		bearer       string
		body         []byte
		header       []string
		status       int
		code         string
	}{
		// Bad Send frames.
		{"empty send body", "POST", "/v1/messages", from, nil, nil, 400, "bad_frame"},
		{"ack frame as send", "POST", "/v1/messages", from, (&wire.Ack{}).Marshal(), nil, 400, "bad_frame"},
		{"send truncated by one", "POST", "/v1/messages", from, sendBytes[:len(sendBytes)-1], nil, 400, "bad_frame"},
		{"send truncated to its header", "POST", "/v1/messages", from, sendBytes[:10], nil, 400, "bad_frame"},
		{"send with trailing bytes", "POST", "/v1/messages", from, append(append([]byte{}, sendBytes...), 0), nil, 400, "bad_frame"},
		{"send with unknown flag", "POST", "/v1/messages", from, func() []byte { b := valid().Marshal(); b[26] |= 0x80; return b }(), nil, 400, "bad_frame"},
		{"send over MaxFrameSize", "POST", "/v1/messages", from, make([]byte, wire.MaxFrameSize+1), nil, 413, "too_large"},
		{"100,000-recipient send", "POST", "/v1/messages", from, hugeRecipients(100_000), nil, 400, "too_large"},
		{"TTL of 2^32-1 seconds (negative as int32)", "POST", "/v1/messages", from, withTTL(0xffffffff), nil, 400, "too_large"},
		{"TTL one past 90 days", "POST", "/v1/messages", from, withTTL(wire.MaxTTL + 1), nil, 400, "too_large"},
		{"no recipients", "POST", "/v1/messages", from, mod(func(m *wire.Send) { m.Accounts = nil }), nil, 400, server.CodeBadRequest},
		{"account with no devices", "POST", "/v1/messages", from, mod(func(m *wire.Send) { m.Accounts[0].Devices = nil }), nil, 400, server.CodeBadRequest},
		{"same device twice", "POST", "/v1/messages", from, mod(func(m *wire.Send) { m.Accounts[0].Devices[1].Device = 1 }), nil, 400, server.CodeBadRequest},
		{"same account twice", "POST", "/v1/messages", from, mod(func(m *wire.Send) { m.Accounts = append(m.Accounts, m.Accounts[0]) }), nil, 400, server.CodeBadRequest},
		// Wrong or missing authentication.
		{"identified send without token", "POST", "/v1/messages", "", sendBytes, nil, 401, server.CodeUnauthorized},
		{"garbage token", "POST", "/v1/messages", "not.a.jwt", sendBytes, nil, 401, server.CodeUnauthorized},
		{"token signed by another key", "POST", "/v1/messages", forged, sendBytes, nil, 401, server.CodeUnauthorized},
		{"expired token", "POST", "/v1/messages", expired, sendBytes, nil, 401, server.CodeUnauthorized},
		{"token for another audience", "POST", "/v1/messages", wrongAud, sendBytes, nil, 401, server.CodeUnauthorized},
		{"basic auth instead of bearer", "POST", "/v1/messages", "", sendBytes, []string{"Authorization", "Basic YTpi"}, 401, server.CodeUnauthorized},
		{"sealed send with wrong key", "POST", "/v1/messages", "", mod(func(m *wire.Send) { m.Sealed = true; m.Accounts[0].AccessKey[0] = 1 }), nil, 401, server.CodeUnauthorized},
		{"access key without token", "PUT", "/v1/relay/access-key", "", []byte(`{"access_key":"AAAA"}`), nil, 401, server.CodeUnauthorized},
		{"websocket without token", "GET", "/v1/relay/ws", "", nil, []string{"Connection", "Upgrade", "Upgrade", "websocket", "Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol", "sotto.v1"}, 401, server.CodeUnauthorized},
		{"websocket without subprotocol", "GET", "/v1/relay/ws", from, nil, []string{"Connection", "Upgrade", "Upgrade", "websocket", "Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="}, 400, "bad_subprotocol"},
		{"send socket with a token", "GET", "/v1/relay/ws/send", from, nil, []string{"Connection", "Upgrade", "Upgrade", "websocket", "Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol", "sotto.v1"}, 400, server.CodeBadRequest},
		{"send socket with basic auth", "GET", "/v1/relay/ws/send", "", nil, []string{"Authorization", "Basic YTpi", "Connection", "Upgrade", "Upgrade", "websocket", "Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol", "sotto.v1"}, 400, server.CodeBadRequest},
		{"send socket without subprotocol", "GET", "/v1/relay/ws/send", "", nil, []string{"Connection", "Upgrade", "Upgrade", "websocket", "Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="}, 400, "bad_subprotocol"},
		{"send socket without upgrade", "GET", "/v1/relay/ws/send", "", nil, []string{"Sec-WebSocket-Protocol", "sotto.v1"}, 426, "upgrade_required"},
		{"websocket without upgrade", "GET", "/v1/relay/ws", from, nil, []string{"Sec-WebSocket-Protocol", "sotto.v1"}, 426, "upgrade_required"},
		{"send socket POST", "POST", "/v1/relay/ws/send", "", sendBytes, nil, 405, "method_not_allowed"},
		// Bad registrations.
		{"access key not JSON", "PUT", "/v1/relay/access-key", from, []byte("{"), nil, 400, server.CodeBadRequest},
		{"access key too short", "PUT", "/v1/relay/access-key", from, []byte(`{"access_key":"AAAA"}`), nil, 400, server.CodeBadRequest},
		{"access key body too large", "PUT", "/v1/relay/access-key", from, bytes.Repeat([]byte(" "), 5000), nil, 413, "too_large"},
		{"push URL too long", "PUT", "/v1/relay/push", from, []byte(`{"url":"https://` + strings.Repeat("a", 3000) + `"}`), nil, 400, "push_not_allowed"},
		{"push URL empty", "PUT", "/v1/relay/push", from, []byte(`{"url":""}`), nil, 400, server.CodeBadRequest},
		// Bad blob requests.
		{"blob range syntax", "GET", "/v1/blobs/AAAAAAAAAAAAAAAAAAAAAA", "", nil, []string{"Range", "bytes=abc"}, 404, "not_found"},
		{"blob id with path tricks", "GET", "/v1/blobs/..%2F..%2Fetc", "", nil, nil, 404, "not_found"},
		{"blob upload over the size limit", "POST", "/v1/blobs", from, make([]byte, 2<<20), nil, 413, "too_large"},
		// Routing.
		{"unknown route", "GET", "/v1/nothing", "", nil, nil, 404, "not_found"},
		{"wrong method", "DELETE", "/v1/messages", "", nil, nil, 405, "method_not_allowed"},
	}
	for _, tc := range httpCases {
		t.Run("http/"+tc.name, func(t *testing.T) {
			status, body := e.do(tc.method, tc.path, tc.bearer, tc.body, tc.header...)
			if status != tc.status {
				t.Fatalf("status %d, want %d (%s)", status, tc.status, body)
			}
			if code := errCode(t, body); code != tc.code {
				t.Fatalf("code %q, want %q", code, tc.code)
			}
			if bytes.Contains(body, []byte("store:")) || bytes.Contains(body, []byte("pebble")) || bytes.Contains(body, []byte("token:")) {
				t.Fatalf("internal error text in %s", body)
			}
		})
	}

	// A chunked upload (no Content-Length).
	t.Run("http/blob upload without length", func(t *testing.T) {
		req, _ := http.NewRequest("POST", e.url("/v1/blobs"), struct{ *strings.Reader }{strings.NewReader("abc")})
		req.Header.Set("Authorization", "Bearer "+from)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusLengthRequired {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})

	// An invalid range on a real blob.
	t.Run("http/unsatisfiable range", func(t *testing.T) {
		status, body := e.do("POST", "/v1/blobs", from, []byte("0123456789"))
		if status != 201 {
			t.Fatalf("upload %d", status)
		}
		id := string(body[7:29])
		for _, r := range []string{"bytes=10-20", "bytes=5-2", "bytes=99999999999999999999-"} {
			status, body := e.do("GET", "/v1/blobs/"+id, "", nil, "Range", r)
			if status != 416 || errCode(t, body) != "bad_range" {
				t.Fatalf("range %s: %d %s", r, status, body)
			}
		}
	})

	wsCases := []struct {
		name  string
		send  func(d *device) error
		close websocket.StatusCode // 0: the connection must stay open
	}{
		{"text message", func(d *device) error {
			return d.c.Write(context.Background(), websocket.MessageText, []byte("hello"))
		}, websocket.StatusPolicyViolation},
		{"empty binary message", func(d *device) error { return d.write(nil) }, websocket.StatusPolicyViolation},
		{"frame over MaxFrameSize", func(d *device) error { return d.write(make([]byte, wire.MaxFrameSize+1)) }, websocket.StatusMessageTooBig},
		{"truncated ack", func(d *device) error { return d.write([]byte{byte(wire.FrameAck), 1, 2}) }, websocket.StatusPolicyViolation},
		{"ack with trailing byte", func(d *device) error { return d.write(append((&wire.Ack{}).Marshal(), 0)) }, websocket.StatusPolicyViolation},
		{"deliver frame from a device", func(d *device) error { return d.write((&wire.Deliver{}).Marshal()) }, websocket.StatusPolicyViolation},
		{"drained frame from a device", func(d *device) error { return d.write(wire.DrainedFrame()) }, websocket.StatusPolicyViolation},
		{"malformed send", func(d *device) error { return d.write(sendBytes[:20]) }, websocket.StatusPolicyViolation},
		{"100,000-recipient send", func(d *device) error { return d.write(hugeRecipients(100_000)) }, websocket.StatusPolicyViolation},
		{"send with TTL 2^32-1", func(d *device) error { return d.write(withTTL(0xffffffff)) }, websocket.StatusPolicyViolation},
		{"unknown frame type is skipped", func(d *device) error { return d.write([]byte{0x7f, 1, 2, 3}) }, 0},
		{"ack of a cursor never delivered", func(d *device) error {
			return d.write((&wire.Ack{Cursor: [9]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}).Marshal())
		}, 0},
	}
	for _, tc := range wsCases {
		t.Run("ws/"+tc.name, func(t *testing.T) {
			d := e.dial(alice)
			d.drained()
			if err := tc.send(d); err != nil {
				t.Fatal(err)
			}
			if tc.close == 0 {
				// Still open and working: a send over it is answered.
				m := valid()
				m.RequestID = 5
				if err := d.write(m.Marshal()); err != nil {
					t.Fatal(err)
				}
				r, err := wire.ParseSendResult(d.next())
				if err != nil || r.Status != 200 {
					t.Fatalf("after %s: %+v %v", tc.name, r, err)
				}
				d.c.Close(websocket.StatusNormalClosure, "")
				return
			}
			if code := d.closeStatus(); code != tc.close {
				t.Fatalf("closed with %d, want %d", code, tc.close)
			}
		})
	}

	// The anonymous send-only socket: the same frames, plus what it must
	// refuse. A refused Send is answered and the connection stays open;
	// any frame but a Send closes it.
	key := [32]byte{0xa}
	e.setAccessKey(bob, key)
	sealed := func(f func(*wire.Send)) []byte {
		m := valid()
		m.Sealed = true
		m.Accounts[0].AccessKey = key
		m.RequestID = 9
		f(m)
		return m.Marshal()
	}
	sendWSCases := []struct {
		name   string
		frame  []byte
		status uint16 // a SendResult with this status, the connection open
		close  websocket.StatusCode
	}{
		{"identified send", mod(func(m *wire.Send) { m.RequestID = 9 }), 401, 0},
		{"sealed send with a wrong access key", sealed(func(m *wire.Send) { m.Accounts[0].AccessKey[0] ^= 1 }), 401, 0},
		{"sealed send with a zero access key", sealed(func(m *wire.Send) { m.Accounts[0].AccessKey = [32]byte{} }), 401, 0},
		{"sealed send to an unknown account", sealed(func(m *wire.Send) { m.Accounts[0].Account[0] ^= 1 }), 410, 0},
		{"sealed send naming a device too few", sealed(func(m *wire.Send) { m.Accounts[0].Devices = m.Accounts[0].Devices[:1] }), 409, 0},
		{"sealed send with no recipients", sealed(func(m *wire.Send) { m.Accounts = nil }), 400, 0},
		{"unknown frame type is skipped", []byte{0x7f, 1, 2, 3}, 0, 0},
		{"empty binary message", []byte{}, 0, websocket.StatusPolicyViolation},
		{"ack", (&wire.Ack{}).Marshal(), 0, websocket.StatusPolicyViolation},
		{"truncated ack", []byte{byte(wire.FrameAck), 1, 2}, 0, websocket.StatusPolicyViolation},
		{"deliver frame", (&wire.Deliver{}).Marshal(), 0, websocket.StatusPolicyViolation},
		{"drained frame", wire.DrainedFrame(), 0, websocket.StatusPolicyViolation},
		{"send result frame", (&wire.SendResult{Status: 200}).Marshal(), 0, websocket.StatusPolicyViolation},
		{"malformed send", sendBytes[:20], 0, websocket.StatusPolicyViolation},
		{"100,000-recipient send", hugeRecipients(100_000), 0, websocket.StatusPolicyViolation},
		{"frame over MaxFrameSize", make([]byte, wire.MaxFrameSize+1), 0, websocket.StatusMessageTooBig},
	}
	for _, tc := range sendWSCases {
		t.Run("ws-send/"+tc.name, func(t *testing.T) {
			d := e.dialSend()
			if err := d.write(tc.frame); err != nil {
				t.Fatal(err)
			}
			if tc.close != 0 {
				if code := d.closeStatus(); code != tc.close {
					t.Fatalf("closed with %d, want %d", code, tc.close)
				}
				return
			}
			if tc.status != 0 {
				r, err := wire.ParseSendResult(d.next())
				if err != nil || r.RequestID != 9 || r.Status != tc.status {
					t.Fatalf("result %+v, %v; want status %d", r, err, tc.status)
				}
			}
			// Still open and working.
			if err := d.write(sealed(func(m *wire.Send) { m.RequestID = 5 })); err != nil {
				t.Fatal(err)
			}
			r, err := wire.ParseSendResult(d.next())
			if err != nil || r.RequestID != 5 || r.Status != 200 {
				t.Fatalf("after %s: %+v %v", tc.name, r, err)
			}
			d.c.Close(websocket.StatusNormalClosure, "")
		})
	}
	// A text message closes it too.
	t.Run("ws-send/text message", func(t *testing.T) {
		d := e.dialSend()
		if err := d.c.Write(context.Background(), websocket.MessageText, []byte("hello")); err != nil {
			t.Fatal(err)
		}
		if code := d.closeStatus(); code != websocket.StatusPolicyViolation {
			t.Fatalf("closed with %d", code)
		}
	})

	// The relay is still up, and the message stored first is intact.
	d := e.dial(bob)
	m := d.deliver()
	if string(m.Body) != "stored before the attack" || m.ID != kept.ID {
		t.Fatalf("first message now %q", m.Body)
	}
}
