package client

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sotto-im/sotto/crypto"
)

// keyServer is the client of the key server's JSON API (API.md). Binary
// values (signed device lists, prekeys, bundles, certificates) travel as
// unpadded base64url of their canonical encodings.
type keyServer struct {
	base string
	hc   *http.Client

	mu      sync.Mutex
	tok     string
	tokExp  time.Time
	addr    crypto.Address
	ik      *crypto.IdentityPrivateKey
	nowFunc func() time.Time
}

func newKeyServer(base string, hc *http.Client) *keyServer {
	return &keyServer{base: strings.TrimRight(base, "/"), hc: hc}
}

var b64 = base64.RawURLEncoding

// APIError is an error answered by a server: its HTTP status and the code
// and message of its JSON error body.
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("client: server answered %d %s: %s", e.Status, e.Code, e.Message)
}

// do sends a JSON request and decodes a JSON answer into out (if non-nil).
func (k *keyServer) do(ctx context.Context, method, path string, auth bool, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, k.base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth {
		tok, err := k.currentToken(ctx)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := k.hc.Do(req)
	if err != nil {
		return fmt.Errorf("client: key server: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&e)
		return &APIError{Status: resp.StatusCode, Code: e.Error.Code, Message: e.Error.Message}
	}
	if out == nil {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 8<<20)).Decode(out); err != nil {
		return fmt.Errorf("client: key server %s %s: bad answer: %w", method, path, err)
	}
	return nil
}

func encodeAll[T interface{ MarshalBinary() ([]byte, error) }](keys []T) []string {
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		b, _ := k.MarshalBinary()
		out = append(out, b64.EncodeToString(b))
	}
	return out
}

type preKeysJSON struct {
	SignedPreKey string   `json:"signed_prekey,omitempty"`
	LastResort   string   `json:"last_resort_prekey,omitempty"`
	OneTimeEC    []string `json:"one_time_prekeys,omitempty"`
	OneTimeKEM   []string `json:"one_time_kem_prekeys,omitempty"`
}

func (u *uploadKeys) json() preKeysJSON {
	var j preKeysJSON
	if u.SignedPreKey != nil {
		b, _ := u.SignedPreKey.MarshalBinary()
		j.SignedPreKey = b64.EncodeToString(b)
	}
	if u.LastResort != nil {
		b, _ := u.LastResort.MarshalBinary()
		j.LastResort = b64.EncodeToString(b)
	}
	for i := range u.OneTimeEC {
		b, _ := u.OneTimeEC[i].MarshalBinary()
		j.OneTimeEC = append(j.OneTimeEC, b64.EncodeToString(b))
	}
	for i := range u.OneTimeKEM {
		b, _ := u.OneTimeKEM[i].MarshalBinary()
		j.OneTimeKEM = append(j.OneTimeKEM, b64.EncodeToString(b))
	}
	return j
}

// register creates the account with its first device.
func (k *keyServer) register(ctx context.Context, signedList []byte, device crypto.DeviceID, keys *uploadKeys) error {
	req := struct {
		DeviceList string      `json:"device_list"`
		Device     uint32      `json:"device"`
		PreKeys    preKeysJSON `json:"prekeys"`
	}{b64.EncodeToString(signedList), uint32(device), keys.json()}
	return k.do(ctx, http.MethodPost, "/v1/accounts", false, req, nil)
}

// login remembers the device's credentials and fetches a first token.
func (k *keyServer) login(ctx context.Context, addr crypto.Address, ik *crypto.IdentityPrivateKey, now func() time.Time) error {
	_, err := k.token(ctx, addr, ik, now)
	return err
}

// token returns a valid device token, logging in (challenge, signature)
// when the cached one is missing or about to expire.
func (k *keyServer) token(ctx context.Context, addr crypto.Address, ik *crypto.IdentityPrivateKey, now func() time.Time) (string, error) {
	k.mu.Lock()
	k.addr, k.ik, k.nowFunc = addr, ik, now
	if k.tok != "" && k.tokExp.Sub(now()) > time.Minute {
		t := k.tok
		k.mu.Unlock()
		return t, nil
	}
	k.mu.Unlock()
	var ch struct {
		Challenge string `json:"challenge"`
	}
	if err := k.do(ctx, http.MethodPost, "/v1/login/challenge", false, map[string]any{
		"account": addr.Account.String(), "device": uint32(addr.Device)}, &ch); err != nil {
		return "", err
	}
	raw, err := b64.DecodeString(ch.Challenge)
	if err != nil {
		return "", errors.New("client: key server: bad challenge")
	}
	var res struct {
		Token   string    `json:"token"`
		Expires time.Time `json:"expires"`
	}
	if err := k.do(ctx, http.MethodPost, "/v1/login", false, map[string]any{
		"account": addr.Account.String(), "device": uint32(addr.Device), "challenge": ch.Challenge,
		"signature": b64.EncodeToString(ik.SignLoginChallenge(raw))}, &res); err != nil {
		return "", err
	}
	k.mu.Lock()
	k.tok, k.tokExp = res.Token, res.Expires
	k.mu.Unlock()
	return res.Token, nil
}

func (k *keyServer) currentToken(ctx context.Context) (string, error) {
	k.mu.Lock()
	addr, ik, now := k.addr, k.ik, k.nowFunc
	k.mu.Unlock()
	if ik == nil {
		return "", errors.New("client: not logged in")
	}
	return k.token(ctx, addr, ik, now)
}

func (k *keyServer) deviceList(ctx context.Context, a crypto.AccountID) ([]byte, error) {
	var res struct {
		DeviceList string `json:"device_list"`
	}
	if err := k.do(ctx, http.MethodGet, "/v1/accounts/"+a.String()+"/devices", false, nil, &res); err != nil {
		return nil, err
	}
	return b64.DecodeString(res.DeviceList)
}

func (k *keyServer) bundle(ctx context.Context, addr crypto.Address) (*crypto.PreKeyBundle, error) {
	var res struct {
		Bundles []string `json:"bundles"`
	}
	path := fmt.Sprintf("/v1/bundles/%s?device=%d", addr.Account, addr.Device)
	if err := k.do(ctx, http.MethodGet, path, true, nil, &res); err != nil {
		return nil, err
	}
	for _, s := range res.Bundles {
		raw, err := b64.DecodeString(s)
		if err != nil {
			continue
		}
		b, err := crypto.ParsePreKeyBundle(raw)
		if err != nil {
			return nil, wrap("bundle", err)
		}
		if b.Address == addr {
			return b, nil
		}
	}
	return nil, fmt.Errorf("client: key server has no bundle for %s", addr)
}

func (k *keyServer) counts(ctx context.Context) (ec, kem int, err error) {
	var res struct {
		OneTime    int `json:"one_time_prekeys"`
		OneTimeKEM int `json:"one_time_kem_prekeys"`
	}
	err = k.do(ctx, http.MethodGet, "/v1/prekeys/count", true, nil, &res)
	return res.OneTime, res.OneTimeKEM, err
}

func (k *keyServer) uploadPreKeys(ctx context.Context, keys *uploadKeys) error {
	return k.do(ctx, http.MethodPut, "/v1/prekeys", true, keys.json(), nil)
}

func (k *keyServer) senderCertificate(ctx context.Context, addr crypto.Address, ik *crypto.IdentityPrivateKey, now func() time.Time) ([]byte, error) {
	if _, err := k.token(ctx, addr, ik, now); err != nil {
		return nil, err
	}
	var res struct {
		Certificate string `json:"certificate"`
	}
	if err := k.do(ctx, http.MethodGet, "/v1/certificate", true, nil, &res); err != nil {
		return nil, err
	}
	return b64.DecodeString(res.Certificate)
}

func (k *keyServer) claimHandle(ctx context.Context, handle string) error {
	return k.do(ctx, http.MethodPut, "/v1/handle", true, map[string]string{"handle": handle}, nil)
}

func (k *keyServer) lookupHandle(ctx context.Context, handle string) (crypto.AccountID, error) {
	var res struct {
		Account crypto.AccountID `json:"account"`
	}
	err := k.do(ctx, http.MethodGet, "/v1/handles/"+handle, false, nil, &res)
	return res.Account, err
}

func (k *keyServer) replaceDeviceList(ctx context.Context, signed []byte) error {
	return k.do(ctx, http.MethodPut, "/v1/devices", true, map[string]string{"device_list": b64.EncodeToString(signed)}, nil)
}

// setAccessKey registers the account's delivery access key with the relay.
func (k *keyServer) setAccessKey(ctx context.Context, relayURL string, key [32]byte) error {
	rk := &keyServer{base: strings.TrimRight(relayURL, "/"), hc: k.hc}
	tok, err := k.currentToken(ctx)
	if err != nil {
		return err
	}
	rk.tok, rk.tokExp = tok, time.Now().Add(time.Hour)
	rk.addr, rk.ik, rk.nowFunc = k.addr, k.ik, time.Now
	return rk.doWithToken(ctx, http.MethodPut, "/v1/relay/access-key", tok, map[string]string{"access_key": b64.EncodeToString(key[:])})
}

func (k *keyServer) doWithToken(ctx context.Context, method, path, tok string, in any) error {
	b, _ := json.Marshal(in)
	req, err := http.NewRequestWithContext(ctx, method, k.base+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := k.hc.Do(req)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 300 {
		return &APIError{Status: resp.StatusCode}
	}
	return nil
}
