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
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/sotto-im/sotto/crypto"
)

// keyServer is the client of the key server's JSON API (API.md). Binary
// values (signed device lists, prekeys, bundles, certificates) travel as
// the standard base64 of their canonical encodings (JSON []byte).
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

// preKeysJSON is the prekey upload of API.md; []byte fields are standard
// base64 in JSON.
type preKeysJSON struct {
	SignedPreKey []byte   `json:"signed_prekey,omitempty"`
	LastResort   []byte   `json:"last_resort_prekey,omitempty"`
	OneTimeEC    [][]byte `json:"one_time_ec_prekeys,omitempty"`
	OneTimeKEM   [][]byte `json:"one_time_kem_prekeys,omitempty"`
}

func (u *uploadKeys) json() preKeysJSON {
	var j preKeysJSON
	if u.SignedPreKey != nil {
		j.SignedPreKey, _ = u.SignedPreKey.MarshalBinary()
	}
	if u.LastResort != nil {
		j.LastResort, _ = u.LastResort.MarshalBinary()
	}
	for i := range u.OneTimeEC {
		b, _ := u.OneTimeEC[i].MarshalBinary()
		j.OneTimeEC = append(j.OneTimeEC, b)
	}
	for i := range u.OneTimeKEM {
		b, _ := u.OneTimeKEM[i].MarshalBinary()
		j.OneTimeKEM = append(j.OneTimeKEM, b)
	}
	return j
}

// register creates the account with its first device (POST /v1/accounts).
func (k *keyServer) register(ctx context.Context, accountKey crypto.AccountKey, signedList []byte, keys *uploadKeys) error {
	req := struct {
		AccountKey []byte      `json:"account_key"`
		DeviceList []byte      `json:"device_list"`
		PreKeys    preKeysJSON `json:"prekeys"`
	}{accountKey.Bytes(), signedList, keys.json()}
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
	if k.tok != "" && time.Until(k.tokExp) > time.Minute {
		t := k.tok
		k.mu.Unlock()
		return t, nil
	}
	k.mu.Unlock()
	var ch struct {
		Challenge []byte `json:"challenge"`
	}
	if err := k.do(ctx, http.MethodPost, "/v1/auth/challenge", false, struct{}{}, &ch); err != nil {
		return "", err
	}
	var res struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if err := k.do(ctx, http.MethodPost, "/v1/auth/login", false, map[string]any{
		"account": addr.Account.String(), "device": uint32(addr.Device), "challenge": ch.Challenge,
		"signature": ik.SignLoginChallenge(ch.Challenge)}, &res); err != nil {
		return "", err
	}
	k.mu.Lock()
	k.tok, k.tokExp = res.Token, res.ExpiresAt
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

// deviceList fetches an account's signed device list (unverified: the
// caller verifies it against the account ID).
func (k *keyServer) deviceList(ctx context.Context, a crypto.AccountID) ([]byte, error) {
	var res struct {
		DeviceList []byte `json:"device_list"`
	}
	if err := k.do(ctx, http.MethodGet, "/v1/accounts/"+a.String()+"/devicelist", false, nil, &res); err != nil {
		return nil, err
	}
	return res.DeviceList, nil
}

// bundle claims one device's prekey bundle (consuming a one-time prekey).
func (k *keyServer) bundle(ctx context.Context, addr crypto.Address) (*crypto.PreKeyBundle, error) {
	var res struct {
		Bundles []struct {
			Device crypto.DeviceID `json:"device"`
			Bundle []byte          `json:"bundle"`
		} `json:"bundles"`
	}
	path := fmt.Sprintf("/v1/bundles/%s/%d", addr.Account, addr.Device)
	if err := k.do(ctx, http.MethodPost, path, true, struct{}{}, &res); err != nil {
		return nil, err
	}
	for _, e := range res.Bundles {
		b, err := crypto.ParsePreKeyBundle(e.Bundle)
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
		OneTimeEC  int `json:"one_time_ec"`
		OneTimeKEM int `json:"one_time_kem"`
	}
	err = k.do(ctx, http.MethodGet, "/v1/prekeys/count", true, nil, &res)
	return res.OneTimeEC, res.OneTimeKEM, err
}

func (k *keyServer) uploadPreKeys(ctx context.Context, keys *uploadKeys) error {
	return k.do(ctx, http.MethodPost, "/v1/prekeys", true, keys.json(), nil)
}

func (k *keyServer) senderCertificate(ctx context.Context, addr crypto.Address, ik *crypto.IdentityPrivateKey, now func() time.Time) ([]byte, error) {
	if _, err := k.token(ctx, addr, ik, now); err != nil {
		return nil, err
	}
	var res struct {
		Certificate []byte `json:"certificate"`
	}
	if err := k.do(ctx, http.MethodGet, "/v1/certificate", true, nil, &res); err != nil {
		return nil, err
	}
	return res.Certificate, nil
}

func (k *keyServer) claimHandle(ctx context.Context, handle string) error {
	return k.do(ctx, http.MethodPut, "/v1/handle", true, map[string]string{"handle": handle}, nil)
}

func (k *keyServer) lookupHandle(ctx context.Context, handle string) (crypto.AccountID, error) {
	var res struct {
		Account string `json:"account"`
	}
	if err := k.do(ctx, http.MethodGet, "/v1/handles/"+url.PathEscape(handle), true, nil, &res); err != nil {
		return crypto.AccountID{}, err
	}
	return crypto.ParseAccountID(res.Account)
}

// replaceDeviceList publishes a new signed device list of this account.
func (k *keyServer) replaceDeviceList(ctx context.Context, a crypto.AccountID, signed []byte) error {
	return k.do(ctx, http.MethodPut, "/v1/accounts/"+a.String()+"/devicelist", true, map[string][]byte{"device_list": signed}, nil)
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
