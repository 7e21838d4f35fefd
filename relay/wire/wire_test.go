package wire

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// samples returns one valid frame of each type, for round trips, fuzz seeds
// and the truncation sweeps.
func samples() map[string][]byte {
	d := &Deliver{Priority: 3, StoredMillis: 1700000000123, Header: []byte("hdr"), Body: []byte("body bytes")}
	d.Cursor[0], d.Cursor[8] = 252, 7
	d.ID[0] = 0xaa
	send := &Send{RequestID: 9, Priority: 1, TTL: 3600, Sealed: true, Body: []byte("shared body"),
		Accounts: []SendAccount{
			{Account: [20]byte{1}, AccessKey: [32]byte{2}, Devices: []SendDevice{{Device: 1, Header: []byte("h1")}, {Device: 2}}},
			{Account: [20]byte{3}, AccessKey: [32]byte{4}, Devices: []SendDevice{{Device: 7, Header: []byte("h7")}}},
		}}
	send.ID[15] = 1
	eph := &Send{RequestID: 1, Ephemeral: true, Accounts: []SendAccount{{Account: [20]byte{9}, Devices: []SendDevice{{Device: 1}}}}, Body: []byte("typing")}
	res := &SendResult{RequestID: 9, Status: 409, Code: "mismatched_devices",
		Missing: []DeviceRef{{Account: [20]byte{1}, Device: 3}}, Extra: []DeviceRef{{Account: [20]byte{1}, Device: 2}}}
	return map[string][]byte{
		"deliver":    d.Marshal(),
		"drained":    DrainedFrame(),
		"ack":        (&Ack{Cursor: [9]byte{1, 2, 3}}).Marshal(),
		"send":       send.Marshal(),
		"sendeph":    eph.Marshal(),
		"sendresult": res.Marshal(),
		"okresult":   (&SendResult{RequestID: 1, Status: 200}).Marshal(),
		"ephemeral":  (&Ephemeral{Priority: 2, Header: []byte("h"), Body: []byte("b")}).Marshal(),
	}
}

// reparse parses a frame of any type and marshals it again.
func reparse(frame []byte) ([]byte, error) {
	t, err := TypeOf(frame)
	if err != nil {
		return nil, err
	}
	switch t {
	case FrameDeliver:
		v, err := ParseDeliver(frame)
		if err != nil {
			return nil, err
		}
		return v.Marshal(), nil
	case FrameDrained:
		if err := ParseDrained(frame); err != nil {
			return nil, err
		}
		return DrainedFrame(), nil
	case FrameAck:
		v, err := ParseAck(frame)
		if err != nil {
			return nil, err
		}
		return v.Marshal(), nil
	case FrameSend:
		v, err := ParseSend(frame)
		if err != nil {
			return nil, err
		}
		return v.Marshal(), nil
	case FrameSendResult:
		v, err := ParseSendResult(frame)
		if err != nil {
			return nil, err
		}
		return v.Marshal(), nil
	case FrameEphemeral:
		v, err := ParseEphemeral(frame)
		if err != nil {
			return nil, err
		}
		return v.Marshal(), nil
	}
	return nil, errUnknown
}

var errUnknown = errors.New("unknown type")

func TestRoundTrip(t *testing.T) {
	for name, frame := range samples() {
		out, err := reparse(frame)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(out, frame) {
			t.Errorf("%s: parse→marshal changed the frame:\n%x\n%x", name, frame, out)
		}
	}
	s, err := ParseSend(samples()["send"])
	if err != nil {
		t.Fatal(err)
	}
	if !s.Sealed || s.Ephemeral || s.Recipients() != 3 || string(s.Accounts[0].Devices[0].Header) != "h1" || s.TTL != 3600 {
		t.Errorf("parsed Send = %+v", s)
	}
}

// TestTruncationsAndExtensions sweeps every truncation and a few
// extensions of every valid frame: each must be refused with a typed error.
func TestTruncationsAndExtensions(t *testing.T) {
	for name, frame := range samples() {
		for n := 0; n < len(frame); n++ {
			if name == "drained" && n == 1 {
				continue
			}
			v, err := reparse(frame[:n])
			if err == nil {
				t.Errorf("%s truncated to %d: accepted (%x)", name, n, v)
				continue
			}
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) {
				t.Errorf("%s truncated to %d: untyped error %v", name, n, err)
			}
		}
		for _, ext := range [][]byte{{0}, {0xff}, []byte("trailing")} {
			if _, err := reparse(append(append([]byte{}, frame...), ext...)); !errors.Is(err, ErrMalformed) {
				t.Errorf("%s extended by %x: err = %v, want ErrMalformed", name, ext, err)
			}
		}
	}
}

func TestHostileFrames(t *testing.T) {
	big := func(n int) []byte { return bytes.Repeat([]byte{0}, n) }
	u24 := func(n int) []byte { return []byte{byte(n >> 16), byte(n >> 8), byte(n)} }
	sendHead := func(flags byte) []byte {
		b := []byte{byte(FrameSend), 0, 0, 0, 1}
		b = append(b, big(16)...)
		b = append(b, 0, 0, 0, 0, 0, flags)
		return b
	}
	oneDevice := func(header int) []byte {
		acct := append(big(20), u24(6+header)...)
		acct = append(acct, 0, 0, 0, 1, byte(header>>8), byte(header))
		return append(acct, big(header)...)
	}
	manyDevices := func(n int) []byte {
		acct := append(big(20), u24(6*n)...)
		for i := 0; i < n; i++ {
			acct = append(acct, 0, 0, 0, byte(i), 0, 0)
		}
		return acct
	}
	withAccounts := func(flags byte, accts []byte, body []byte) []byte {
		b := append(sendHead(flags), u24(len(accts))...)
		b = append(b, accts...)
		b = append(b, u24(len(body))...)
		return append(b, body...)
	}
	ttl := func(v uint32) []byte {
		f := (&Send{TTL: 1}).Marshal()
		f[22], f[23], f[24], f[25] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
		return f
	}
	tests := []struct {
		name  string
		frame []byte
		want  error
	}{
		// bad lengths
		{"empty frame", nil, ErrMalformed},
		{"oversize frame", append([]byte{byte(FrameAck)}, big(MaxFrameSize)...), ErrTooLarge},
		{"ack short cursor", []byte{byte(FrameAck), 1, 2}, ErrMalformed},
		{"drained with body", []byte{byte(FrameDrained), 0}, ErrMalformed},
		{"deliver header length past end", append(append([]byte{byte(FrameDeliver)}, big(34)...), 0xff, 0xff), ErrMalformed},
		{"send accounts length past end", append(sendHead(0), 0xff, 0xff, 0xff), ErrMalformed},
		{"send device list past account", withAccounts(0, append(big(20), 0, 0, 9, 1), nil), ErrMalformed},
		{"send half a device", withAccounts(0, append(big(20), 0, 0, 3, 0, 0, 1), nil), ErrMalformed},
		{"sendresult list not multiple of 24", append([]byte{byte(FrameSendResult), 0, 0, 0, 1, 0, 200, 0, 0, 0, 5}, append(big(5), 0, 0, 0)...), ErrMalformed},
		// bad encodings
		{"send unknown flag", withAccounts(0x04, nil, nil), ErrMalformed},
		{"sealed send without access key", withAccounts(flagSealed, append(big(20), 0, 0, 0), nil), ErrMalformed},
		{"wrong type for parser", append([]byte{byte(FrameAck)}, big(8)...), ErrMalformed},
		// bounds
		{"send header over MaxHeaderSize", withAccounts(0, oneDevice(MaxHeaderSize+1), nil), ErrTooLarge},
		{"send body over MaxBodySize", withAccounts(0, oneDevice(0), big(MaxBodySize+1)), ErrTooLarge},
		{"send too many recipients", withAccounts(0, manyDevices(MaxRecipients+1), nil), ErrTooLarge},
		{"send TTL over MaxTTL", ttl(MaxTTL + 1), ErrTooLarge},
		{"send TTL max uint32 (negative as int32)", ttl(0xffffffff), ErrTooLarge},
		{"sendresult code too long", append([]byte{byte(FrameSendResult), 0, 0, 0, 1, 0, 200, 65}, append(big(65), big(6)...)...), ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if len(tt.frame) > 0 && FrameType(tt.frame[0]) == FrameAck && strings.HasPrefix(tt.name, "wrong type") {
				_, err = ParseSend(tt.frame)
			} else {
				_, err = reparse(tt.frame)
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "wire: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
	// Edges of the bounds are accepted.
	for name, f := range map[string][]byte{
		"header at MaxHeaderSize": withAccounts(0, oneDevice(MaxHeaderSize), nil),
		"MaxRecipients":           withAccounts(0, manyDevices(MaxRecipients), nil),
		"TTL at MaxTTL":           ttl(MaxTTL),
	} {
		if _, err := reparse(f); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestUnknownType(t *testing.T) {
	ft, err := TypeOf([]byte{0x7f, 1, 2})
	if err != nil || ft.Known() {
		t.Fatalf("TypeOf unknown = %v, %v", ft, err)
	}
	if FrameType(0).Known() || !FrameEphemeral.Known() {
		t.Fatal("Known bounds wrong")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range samples() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		out, err := reparse(frame)
		if err != nil {
			return
		}
		if !bytes.Equal(out, frame) {
			t.Fatalf("parse→marshal not canonical:\n in %x\nout %x", frame, out)
		}
	})
}

func BenchmarkDeliverAppend(b *testing.B) {
	d := &Deliver{Header: make([]byte, 64), Body: make([]byte, 256)}
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = d.Append(buf[:0])
	}
}

func TestDeliverAppendAllocs(t *testing.T) {
	d := &Deliver{Header: make([]byte, 64), Body: make([]byte, 256)}
	buf := make([]byte, 0, 512)
	if n := testing.AllocsPerRun(100, func() { buf = d.Append(buf[:0]) }); n > 0 {
		t.Errorf("Deliver.Append allocates %v times, want 0", n)
	}
}
