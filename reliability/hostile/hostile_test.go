// Package hostile runs a battery of hostile requests against every HTTP and
// WebSocket surface of a real sottod (relay and key server in one process):
// each must get a 4xx or a closed connection, never a 5xx; the server must
// stay up; and nothing stored may change: a message queued before the
// battery is delivered after it, and the victim's device list, handle and
// prekeys are as they were.
package hostile

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/sotto-im/sotto/client"
	"github.com/sotto-im/sotto/client/store/memstore"
	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/internal/token"
	"github.com/sotto-im/sotto/relay/wire"
	"github.com/sotto-im/sotto/reliability/internal/harness"
)

// tokens mints device tokens with the server's own key (read from its data
// directory), as the key server would after a login: the battery's
// attacker is a registered user with a valid token of its own.
type tokens struct{ signer *token.Signer }

func newTokens(t *testing.T, data, issuer string) tokens {
	b, err := os.ReadFile(filepath.Join(data, "keys", "token.key"))
	if err != nil {
		t.Fatal(err)
	}
	seed, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(seed) != 32 {
		t.Fatalf("token key: %v", err)
	}
	return tokens{token.NewSigner(ed25519.NewKeyFromSeed(seed), issuer, "sotto")}
}

func (tk tokens) issue(t *testing.T, a crypto.Address) string {
	s, _, err := tk.signer.Issue(a.Account, a.Device, time.Now(), 30*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// hcase is one hostile request.
type hcase struct {
	name   string
	method string
	path   string // raw: sent as written
	body   []byte
	bearer string
	header map[string]string
	want   int // exact status wanted; 0: any 4xx
}

type result struct {
	status int
	body   []byte
	closed bool // the connection closed without an answer
}

func do(t *testing.T, base string, c hcase) result {
	t.Helper()
	req, err := http.NewRequest(c.method, base, bytes.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Opaque = c.path // keep %2F and .. as written
	if c.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+c.bearer)
	}
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	if c.body != nil && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		return result{closed: true}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return result{status: resp.StatusCode, body: b}
}

// raw writes bytes on a fresh TCP connection and returns the status line's
// code, or 0 if the connection closed without one.
func raw(t *testing.T, addr string, payload []byte) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	c.Write(payload)
	b, _ := io.ReadAll(io.LimitReader(c, 4096))
	var code int
	if _, err := fmt.Sscanf(string(b), "HTTP/1.1 %d", &code); err != nil {
		return 0
	}
	return code
}

func gzipBomb() []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zeros := make([]byte, 1<<20)
	for range 256 { // 256 MiB of zeros in about 256 KiB
		zw.Write(zeros)
	}
	zw.Close()
	return buf.Bytes()
}

func nested(depth int) []byte {
	return []byte(strings.Repeat("[", depth) + strings.Repeat("]", depth))
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func TestHostileBattery(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the sottod binary")
	}
	data := t.TempDir()
	srv := harness.StartT(t, data)
	base := srv.URL
	roots := []crypto.TrustRoot{srv.Trust}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// The victim, bob, has a handle and a message waiting for him.
	aliceSt, bobSt := memstore.New(), memstore.New()
	alice, err := client.Create(ctx, harness.Options(base, roots, aliceSt))
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	bobOpts := harness.Options(base, roots, bobSt)
	bobOpts.Handle = "bob_victim"
	bob, err := client.Create(ctx, bobOpts)
	if err != nil {
		t.Fatal(err)
	}
	bobAddr := bob.Address()
	bobInvite := bob.Invite(false).String()
	aliceInvite := alice.Invite(false).String()
	bc, err := alice.AddContact(ctx, bobInvite)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.AddContact(ctx, aliceInvite); err != nil {
		t.Fatal(err)
	}
	bob.Close()
	canaryID, err := alice.Send(ctx, bc.Conversation, client.Text("canary queued before the battery"))
	if err != nil {
		t.Fatal(err)
	}
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		if m, err := alice.Message(ctx, bc.Conversation, canaryID); err == nil && m.Status >= client.StatusSent {
			break
		}
		if time.Since(start) > 30*time.Second {
			t.Fatal("canary never accepted")
		}
	}

	get := func(path string) []byte {
		r := do(t, base, hcase{method: "GET", path: path})
		if r.status != 200 {
			t.Fatalf("GET %s: %d %s", path, r.status, r.body)
		}
		return r.body
	}
	bobAcct := bobAddr.Account.String()
	listBefore := get("/v1/accounts/" + bobAcct + "/devicelist")

	tk := newTokens(t, data, base)
	attackerAddr := alice.Address()
	attacker := tk.issue(t, attackerAddr)
	forged := func() string { // right claims, wrong key
		_, k, _ := ed25519.GenerateKey(rand.Reader)
		s, _, _ := token.NewSigner(k, base, "sotto").Issue(bobAddr.Account, bobAddr.Device, time.Now(), time.Hour)
		return s
	}()
	wrongAud := func() string {
		b, _ := os.ReadFile(filepath.Join(data, "keys", "token.key"))
		seed, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
		s, _, _ := token.NewSigner(ed25519.NewKeyFromSeed(seed), base, "not-sotto").Issue(bobAddr.Account, bobAddr.Device, time.Now(), time.Hour)
		return s
	}()
	wrongIss := func() string {
		b, _ := os.ReadFile(filepath.Join(data, "keys", "token.key"))
		seed, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
		s, _, _ := token.NewSigner(ed25519.NewKeyFromSeed(seed), "https://evil.example", "sotto").Issue(bobAddr.Account, bobAddr.Device, time.Now(), time.Hour)
		return s
	}()
	expired := func() string {
		s, _, _ := tk.signer.Issue(bobAddr.Account, bobAddr.Device, time.Now().Add(-3*time.Hour), time.Hour)
		return s
	}()
	enc := base64.RawURLEncoding.EncodeToString
	algNone := enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." +
		enc([]byte(fmt.Sprintf(`{"sub":"%s.%d","iss":%q,"aud":"sotto","exp":%d}`, bobAcct, bobAddr.Device, base, time.Now().Add(time.Hour).Unix()))) + "."
	ghost := crypto.Address{Account: crypto.AccountID{1, 2, 3}, Device: 1}
	ghostTok := tk.issue(t, ghost) // a valid signature for an account that does not exist

	sendFrame := func(to crypto.Address, sealed bool, key [32]byte, body []byte) []byte {
		m := &wire.Send{Body: body, Sealed: sealed,
			Accounts: []wire.SendAccount{{Account: to.Account, AccessKey: key, Devices: []wire.SendDevice{{Device: uint32(to.Device), Header: []byte("h")}}}}}
		rand.Read(m.ID[:])
		return m.Marshal()
	}
	validFrame := sendFrame(bobAddr, false, [32]byte{}, []byte("x"))
	// Integer overflow in the frame's own lengths: claim huge counts.
	overflow := append([]byte(nil), validFrame...)
	for i := 20; i < len(overflow) && i < 40; i++ {
		overflow[i] = 0xff
	}

	// A challenge spent once.
	var ch struct {
		Challenge []byte `json:"challenge"`
	}
	if r := do(t, base, hcase{method: "POST", path: "/v1/auth/challenge", body: []byte("{}")}); r.status != 200 || json.Unmarshal(r.body, &ch) != nil {
		t.Fatalf("challenge: %d %s", r.status, r.body)
	}
	login := func(sig []byte) []byte {
		b, _ := json.Marshal(map[string]any{"account": bobAcct, "device": uint32(bobAddr.Device), "challenge": ch.Challenge, "signature": sig})
		return b
	}
	badSig := login(make([]byte, 64))

	big := bytes.Repeat([]byte("a"), 2<<20)
	bomb := gzipBomb()
	purgeBody := []byte(`{"account":"` + bobAcct + `"}`)

	cases := []hcase{
		// Authentication bypass.
		{name: "ks: devicelist put without token", method: "PUT", path: "/v1/accounts/" + bobAcct + "/devicelist", body: []byte(`{}`), want: 401},
		{name: "ks: delete account without token", method: "DELETE", path: "/v1/accounts/" + bobAcct, want: 401},
		{name: "ks: prekey upload without token", method: "POST", path: "/v1/prekeys", body: []byte(`{}`), want: 401},
		{name: "ks: prekey count without token", method: "GET", path: "/v1/prekeys/count", want: 401},
		{name: "ks: bundles without token", method: "POST", path: "/v1/bundles/" + bobAcct, want: 401},
		{name: "ks: certificate without token", method: "GET", path: "/v1/certificate", want: 401},
		{name: "ks: handle claim without token", method: "PUT", path: "/v1/handle", body: []byte(`{"handle":"bob_victim"}`), want: 401},
		{name: "ks: handle lookup without token", method: "GET", path: "/v1/handles/bob_victim", want: 401},
		{name: "relay: access key without token", method: "PUT", path: "/v1/relay/access-key", body: []byte(`{"access_key":"` + b64(make([]byte, 32)) + `"}`), want: 401},
		{name: "relay: push without token", method: "PUT", path: "/v1/relay/push", body: []byte(`{}`), want: 401},
		{name: "relay: blob upload without token", method: "POST", path: "/v1/blobs", body: []byte("data"), want: 401},
		{name: "relay: identified send without token", method: "POST", path: "/v1/messages", body: validFrame, want: 401},
		{name: "relay: sealed send with a zero access key", method: "POST", path: "/v1/messages", body: sendFrame(bobAddr, true, [32]byte{}, []byte("x")), want: 401},
		{name: "relay: sealed send with a wrong access key", method: "POST", path: "/v1/messages", body: sendFrame(bobAddr, true, [32]byte{9}, []byte("x")), want: 401},
		{name: "token: forged signature", method: "DELETE", path: "/v1/accounts/" + bobAcct, bearer: forged, want: 401},
		{name: "token: alg none", method: "DELETE", path: "/v1/accounts/" + bobAcct, bearer: algNone, want: 401},
		{name: "token: wrong audience", method: "DELETE", path: "/v1/accounts/" + bobAcct, bearer: wrongAud, want: 401},
		{name: "token: wrong issuer", method: "DELETE", path: "/v1/accounts/" + bobAcct, bearer: wrongIss, want: 401},
		{name: "token: expired", method: "DELETE", path: "/v1/accounts/" + bobAcct, bearer: expired, want: 401},
		{name: "token: garbage", method: "GET", path: "/v1/certificate", bearer: "not.a.token", want: 401},
		{name: "token: 64 KiB", method: "GET", path: "/v1/certificate", bearer: strings.Repeat("A", 64<<10)},
		{name: "token: account that does not exist", method: "GET", path: "/v1/certificate", bearer: ghostTok, want: 401},
		{name: "token: lower-case scheme, empty", method: "GET", path: "/v1/certificate", header: map[string]string{"Authorization": "bearer "}, want: 401},
		{name: "token: basic scheme", method: "GET", path: "/v1/certificate", header: map[string]string{"Authorization": "Basic YWxpY2U6cHc="}, want: 401},

		// Acting on another account's resources (attacker has a valid token).
		{name: "ks: attacker replaces victim's device list", method: "PUT", path: "/v1/accounts/" + bobAcct + "/devicelist", bearer: attacker, body: []byte(`{"device_list":"AAAA"}`)},
		{name: "ks: attacker deletes victim's account", method: "DELETE", path: "/v1/accounts/" + bobAcct, bearer: attacker, want: 403},
		{name: "ks: attacker claims victim's handle", method: "PUT", path: "/v1/handle", bearer: attacker, body: []byte(`{"handle":"bob_victim"}`), want: 409},
		{name: "ks: attacker claims a look-alike of victim's handle", method: "PUT", path: "/v1/handle", bearer: attacker, body: []byte(`{"handle":"b0b_victim"}`), want: 409},
		{name: "ks: attacker posts to a provisioning address it guessed", method: "PUT", path: "/v1/provisioning/" + strings.Repeat("A", 43), bearer: attacker, body: []byte(`{}`)},
		{name: "relay: purge victim without the internal key", method: "POST", path: "/internal/v1/purge", body: purgeBody},
		{name: "relay: purge victim with a forged HMAC", method: "POST", path: "/internal/v1/purge", body: purgeBody, header: map[string]string{"X-Sotto-Timestamp": "1", "X-Sotto-Signature": b64(make([]byte, 32))}},
		{name: "relay: purge victim with attacker's token", method: "POST", path: "/internal/v1/purge", body: purgeBody, bearer: attacker},

		// Replays.
		{name: "ks: login with a bad signature", method: "POST", path: "/v1/auth/login", body: badSig, want: 401},
		{name: "ks: the same challenge replayed", method: "POST", path: "/v1/auth/login", body: badSig, want: 401},
		{name: "ks: login with an invented challenge", method: "POST", path: "/v1/auth/login", body: []byte(`{"account":"` + bobAcct + `","device":1,"challenge":"` + b64(make([]byte, 32)) + `","signature":"` + b64(make([]byte, 64)) + `"}`), want: 401},

		// Path traversal and odd IDs.
		{name: "relay: blob ../ traversal", method: "GET", path: "/v1/blobs/..%2F..%2Fkeys%2Ftoken.key"},
		{name: "relay: blob raw ../", method: "GET", path: "/v1/blobs/../../keys/token.key"},
		{name: "relay: blob id too long", method: "GET", path: "/v1/blobs/" + strings.Repeat("a", 4096)},
		{name: "relay: blob id with NUL", method: "GET", path: "/v1/blobs/abc%00def"},
		{name: "relay: blob unknown id", method: "GET", path: "/v1/blobs/" + strings.Repeat("A", 43), want: 404},
		{name: "ks: account id traversal", method: "GET", path: "/v1/accounts/..%2F..%2Fkeys/devicelist"},
		{name: "ks: account id invalid", method: "GET", path: "/v1/accounts/not-an-account/devicelist", want: 400},
		{name: "ks: provisioning traversal", method: "GET", path: "/v1/provisioning/..%2F..%2Fkeys%2Finternal.key"},
		{name: "ks: device id overflow", method: "POST", path: "/v1/bundles/" + bobAcct + "/99999999999999999999", bearer: attacker},
		{name: "ks: device id negative", method: "POST", path: "/v1/bundles/" + bobAcct + "/-1", bearer: attacker},
		{name: "ks: device id zero", method: "POST", path: "/v1/bundles/" + bobAcct + "/0", bearer: attacker},

		// Oversized and deeply nested bodies.
		{name: "ks: 2 MiB registration", method: "POST", path: "/v1/accounts", body: big, want: 413},
		{name: "ks: 2 MiB handle claim", method: "PUT", path: "/v1/handle", bearer: attacker, body: big, want: 413},
		{name: "ks: nested JSON registration", method: "POST", path: "/v1/accounts", body: nested(100000)},
		{name: "ks: nested JSON handle claim", method: "PUT", path: "/v1/handle", bearer: attacker, body: nested(5000)},
		{name: "ks: nested JSON login", method: "POST", path: "/v1/auth/login", body: nested(5000)},
		{name: "relay: 2 MiB send", method: "POST", path: "/v1/messages", bearer: attacker, body: big, want: 413},
		{name: "relay: nested JSON access key", method: "PUT", path: "/v1/relay/access-key", bearer: attacker, body: nested(5000)},
		{name: "relay: nested JSON push", method: "PUT", path: "/v1/relay/push", bearer: attacker, body: nested(5000)},

		// Compression bombs: servers must not inflate request bodies.
		{name: "ks: gzip bomb registration", method: "POST", path: "/v1/accounts", body: bomb, header: map[string]string{"Content-Encoding": "gzip"}},
		{name: "relay: gzip bomb send", method: "POST", path: "/v1/messages", bearer: attacker, body: bomb, header: map[string]string{"Content-Encoding": "gzip"}},
		{name: "relay: gzip bomb access key", method: "PUT", path: "/v1/relay/access-key", bearer: attacker, body: bomb, header: map[string]string{"Content-Encoding": "gzip"}},

		// Invalid UTF-8, confusables, odd handles.
		{name: "ks: handle invalid UTF-8", method: "PUT", path: "/v1/handle", bearer: attacker, body: []byte("{\"handle\":\"b\xffb\"}"), want: 400},
		{name: "ks: handle Cyrillic a", method: "PUT", path: "/v1/handle", bearer: attacker, body: []byte(`{"handle":"` + "\u0430lice_x" + `"}`), want: 400},
		{name: "ks: handle full-width", method: "PUT", path: "/v1/handle", bearer: attacker, body: []byte(`{"handle":"` + "\uff42ob_victim" + `"}`), want: 400},
		{name: "ks: handle zero-width joiner", method: "PUT", path: "/v1/handle", bearer: attacker, body: []byte(`{"handle":"bob` + "\u200d" + `_victim"}`), want: 400},
		{name: "ks: handle lookup invalid UTF-8", method: "GET", path: "/v1/handles/b%FFb", bearer: attacker},
		{name: "ks: handle lookup Cyrillic", method: "GET", path: "/v1/handles/%D0%B0lice", bearer: attacker},
		{name: "ks: login with invalid UTF-8 account", method: "POST", path: "/v1/auth/login", body: []byte("{\"account\":\"\xff\xfe\",\"device\":1}"), want: 400},
		{name: "ks: registration with invalid UTF-8", method: "POST", path: "/v1/accounts", body: []byte("{\"account_key\":\"\xff\"}"), want: 400},

		// Integer overflows in lengths.
		{name: "relay: send frame with huge length fields", method: "POST", path: "/v1/messages", bearer: attacker, body: overflow, want: 400},
		{name: "relay: send frame truncated", method: "POST", path: "/v1/messages", bearer: attacker, body: validFrame[:len(validFrame)/2], want: 400},
		{name: "relay: send frame empty", method: "POST", path: "/v1/messages", bearer: attacker, body: []byte{}, want: 400},
		{name: "ks: login device 2^32", method: "POST", path: "/v1/auth/login", body: []byte(`{"account":"` + bobAcct + `","device":4294967296,"challenge":"","signature":""}`), want: 400},
		{name: "ks: login device -1", method: "POST", path: "/v1/auth/login", body: []byte(`{"account":"` + bobAcct + `","device":-1}`), want: 400},
		{name: "ks: login device 1e400", method: "POST", path: "/v1/auth/login", body: []byte(`{"account":"` + bobAcct + `","device":1e400}`), want: 400},

		// Methods and routes.
		{name: "unknown route", method: "GET", path: "/v1/../../etc/passwd"},
		{name: "TRACE", method: "TRACE", path: "/v1/messages"},
		{name: "wrong method on messages", method: "GET", path: "/v1/messages", want: 405},
		{name: "relay: ws without upgrade", method: "GET", path: "/v1/relay/ws", bearer: attacker},
	}

	check := func(c hcase, r result) {
		t.Helper()
		switch {
		case r.closed:
			// A closed connection is an acceptable refusal.
		case r.status >= 500:
			t.Errorf("%s: %d %s", c.name, r.status, r.body)
		case r.status < 400:
			t.Errorf("%s: accepted with %d %s", c.name, r.status, r.body)
		case c.want != 0 && r.status != c.want:
			t.Errorf("%s: %d, want %d (%s)", c.name, r.status, c.want, r.body)
		}
		if !r.closed && r.status >= 400 && r.status != 431 && r.status != 400 || (r.status == 400 && bytes.HasPrefix(r.body, []byte("{"))) {
			var e struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			if json.Unmarshal(r.body, &e) != nil || e.Error.Code == "" {
				t.Errorf("%s: %d without a JSON error body: %q", c.name, r.status, r.body)
			}
		}
	}
	n := 0
	for _, c := range cases {
		check(c, do(t, base, c))
		n++
	}

	// Raw protocol abuse.
	addr := strings.TrimPrefix(base, "http://")
	for _, rc := range []struct {
		name    string
		payload []byte
	}{
		{"2 MiB header", []byte("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 2<<20) + "\r\n\r\n")},
		{"blob larger than the limit (declared)", []byte("POST /v1/blobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + attacker + "\r\nContent-Length: 104857601\r\n\r\nxx")},
		{"Content-Length overflow", []byte("POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551616\r\n\r\n")},
		{"negative Content-Length", []byte("POST /v1/blobs HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n")},
		{"two Content-Lengths", []byte("POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabc")},
		{"chunked size overflow", []byte("POST /v1/accounts HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n")},
		{"garbage request line", []byte("\x00\x01\x02 / HTTP/9.9\r\n\r\n")},
	} {
		code := raw(t, addr, rc.payload)
		if code != 0 && (code < 400 || code >= 500) {
			t.Errorf("raw %s: %d", rc.name, code)
		}
		n++
	}

	// WebSocket surface.
	wsURL := "ws" + strings.TrimPrefix(base, "http") + "/v1/relay/ws"
	dial := func(bearer string, proto ...string) (*websocket.Conn, int, error) {
		h := http.Header{}
		if bearer != "" {
			h.Set("Authorization", "Bearer "+bearer)
		}
		dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, resp, err := websocket.Dial(dctx, wsURL, &websocket.DialOptions{HTTPHeader: h, Subprotocols: proto})
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		return c, status, err
	}
	for _, wc := range []struct {
		name, bearer string
		proto        []string
	}{
		{"ws: no token", "", []string{wire.Subprotocol}},
		{"ws: forged token", forged, []string{wire.Subprotocol}},
		{"ws: expired token", expired, []string{wire.Subprotocol}},
	} {
		c, status, err := dial(wc.bearer, wc.proto...)
		if err == nil {
			c.CloseNow()
			t.Errorf("%s: connected", wc.name)
		} else if status < 400 || status >= 500 {
			t.Errorf("%s: status %d (%v)", wc.name, status, err)
		}
		n++
	}
	// With a wrong subprotocol: refused, or accepted without one (and then
	// closed by the server or useless).
	if c, status, err := dial(attacker, "evil.v9"); err == nil {
		if c.Subprotocol() == "evil.v9" {
			t.Error("ws: a foreign subprotocol was accepted")
		}
		c.CloseNow()
	} else if status >= 500 {
		t.Errorf("ws: wrong subprotocol: %d", status)
	}
	n++

	// Hostile frames from an authenticated attacker: each closes the
	// connection (or is answered) and never reaches the victim.
	wsFrames := []struct {
		name  string
		frame []byte
	}{
		{"ws: unknown frame type", []byte{0x7f, 1, 2, 3}},
		{"ws: empty frame", []byte{}},
		{"ws: truncated send", validFrame[:5]},
		{"ws: send with huge lengths", overflow},
		{"ws: ack of a cursor never delivered", (&wire.Ack{Cursor: [wire.CursorSize]byte{0xff, 0xff, 0xff}}).Marshal()},
		{"ws: oversized frame", make([]byte, wire.MaxFrameSize+1)},
	}
	for _, wf := range wsFrames {
		c, _, err := dial(attacker, wire.Subprotocol)
		if err != nil {
			t.Fatalf("%s: dial: %v", wf.name, err)
		}
		c.SetReadLimit(2 * wire.MaxFrameSize)
		wctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c.Write(wctx, websocket.MessageBinary, wf.frame)
		// Read until the server closes or goes quiet.
		for {
			if _, _, err := c.Read(wctx); err != nil {
				break
			}
		}
		cancel()
		c.CloseNow()
		n++
	}
	// A frame flood: thousands of frames as fast as possible.
	if c, _, err := dial(attacker, wire.Subprotocol); err == nil {
		fctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		sent := 0
		for ; sent < 20000; sent++ {
			if err := c.Write(fctx, websocket.MessageBinary, []byte{0x7f}); err != nil {
				break
			}
		}
		cancel()
		c.CloseNow()
		t.Logf("frame flood: %d frames written before the connection ended", sent)
		n++
	}
	// Text frames instead of binary.
	if c, _, err := dial(attacker, wire.Subprotocol); err == nil {
		wctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c.Write(wctx, websocket.MessageText, []byte(`{"type":"send"}`))
		for {
			if _, _, err := c.Read(wctx); err != nil {
				break
			}
		}
		cancel()
		c.CloseNow()
		n++
	}
	// Many connections for one device at once (each displaces the last).
	for range 50 {
		if c, _, err := dial(attacker, wire.Subprotocol); err == nil {
			defer c.CloseNow()
		}
	}
	n++

	// A validly signed token of an account the key server does not know
	// (deleted, or never registered) is refused by the relay, which checks
	// the device against the directory (RELIABILITY.md, Found 3, fixed).
	r := do(t, base, hcase{name: "relay: send with a token of no account", method: "POST", path: "/v1/messages", body: validFrame, bearer: ghostTok})
	if r.status != http.StatusUnauthorized {
		t.Errorf("relay: send with a token of no account: %d %s", r.status, r.body)
	}
	n++
	if c, _, err := dial(ghostTok, wire.Subprotocol); err == nil {
		c.CloseNow()
		t.Error("relay: WebSocket with a token of no account connected")
	}
	n++

	t.Logf("%d hostile cases", n)
	if n < 60 {
		t.Errorf("only %d cases", n)
	}

	// The server is up and nothing stored changed.
	if err := srv.WaitReady(10 * time.Second); err != nil {
		t.Fatalf("after the battery: %v", err)
	}
	if !srv.Running() {
		t.Fatal("sottod exited")
	}
	if after := get("/v1/accounts/" + bobAcct + "/devicelist"); !bytes.Equal(after, listBefore) {
		t.Error("the victim's device list changed")
	}
	lookup := do(t, base, hcase{method: "GET", path: "/v1/handles/bob_victim", bearer: attacker})
	if lookup.status != 200 || !bytes.Contains(lookup.body, []byte(bobAcct)) {
		t.Errorf("the victim's handle: %d %s", lookup.status, lookup.body)
	}
	bob, err = client.Open(ctx, harness.Options(base, roots, bobSt))
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	u := harness.Watch("bob", bob, bobSt)
	if _, err := u.WaitMessage("canary queued before the battery", 60*time.Second); err != nil {
		t.Fatal(err)
	}
}
