package keyserver

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/sotto-im/sotto/crypto"
)

// snapshot returns every key and value in the store.
func snapshot(t *testing.T, e *testEnv) map[string]string {
	t.Helper()
	m := map[string]string{}
	if err := e.db.Scan(func(k, v []byte) bool { m[string(k)] = string(v); return true }); err != nil {
		t.Fatal(err)
	}
	return m
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// TestHostileRequests sends requests an attacker would: each gets a 4xx
// with a stable error code, nothing is stored, and the server keeps serving.
func TestHostileRequests(t *testing.T) {
	e := newEnv(t, nil)
	alice := e.register(2, 2)
	tok := e.login(alice, 1)
	ik := alice.devices[1]

	// A valid registration to mutate.
	reg := func(mod func(a *testAccount, r *registerRequest)) []byte {
		a, r := newTestAccount(t, 1, 1)
		if mod != nil {
			mod(a, &r)
		}
		return mustJSON(r)
	}
	small := crypto.GenerateIdentityKey()
	otherAcct := crypto.GenerateAccountKey()
	lowOrder := make([]byte, 32)
	lowOrder[0] = 1 // the identity point
	kemBytes := func(id uint32, lastResort bool, key *crypto.IdentityPrivateKey) []byte {
		b, _ := crypto.GenerateKEMPreKey(key, id, lastResort).MarshalBinary()
		return b
	}
	ecBytes := func(id uint32) []byte { b, _ := crypto.GenerateOneTimePreKey(id).MarshalBinary(); return b }
	var manyKEM [][]byte
	for i := range MaxPreKeyBatch + 1 {
		manyKEM = append(manyKEM, kemBytes(uint32(1000+i), false, ik))
	}
	var tenThousand [][]byte
	one := ecBytes(5)
	for range 10_000 {
		tenThousand = append(tenThousand, one)
	}
	nonCanonicalKEM := kemBytes(77, false, ik)
	for i := 7; i < 7+40; i++ {
		nonCanonicalKEM[i] = 0xff // coefficients ≥ q: not a canonical ML-KEM key
	}
	deep := `{"prekeys":` + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + `}`
	huge := `{"account_key":"` + strings.Repeat("A", 1<<20) + `"}`
	id := alice.id()
	stranger := crypto.GenerateAccountKey().ID().String()

	type hostile struct {
		name, method, path string
		auth               bool
		body               any // []byte, string, or nil
		ctype              string
		status             int
		code               string
	}
	cases := []hostile{
		// Malformed JSON and encodings.
		{"malformed JSON", "POST", "/v1/accounts", false, `{"account_key":`, "", 400, "malformed_json"},
		{"trailing data", "POST", "/v1/accounts", false, string(reg(nil)) + `{}`, "", 400, "malformed_json"},
		{"unknown field", "POST", "/v1/accounts", false, `{"account_key":"","admin":true}`, "", 400, "malformed_json"},
		{"bad base64", "POST", "/v1/accounts", false, `{"account_key":"!!!not base64!!!"}`, "", 400, "malformed_json"},
		{"wrong JSON type", "PUT", "/v1/accounts/" + id + "/devicelist", true, `{"device_list": 5}`, "", 400, "malformed_json"},
		{"deep nesting", "POST", "/v1/accounts", false, deep, "", 400, "malformed_json"},
		{"JSON null", "POST", "/v1/accounts", false, `null`, "", 400, "invalid_key"},
		{"wrong content type", "POST", "/v1/accounts", false, reg(nil), "text/plain", 415, "unsupported_media_type"},
		// Sizes.
		{"oversized body", "POST", "/v1/accounts", false, huge, "", 413, "body_too_large"},
		{"10,000 one-time prekeys", "POST", "/v1/prekeys", true, mustJSON(preKeysRequest{OneTimeEC: tenThousand}), "", 400, "too_many_prekeys"},
		{"batch of 101 KEM prekeys", "POST", "/v1/prekeys", true, mustJSON(preKeysRequest{OneTimeKEM: manyKEM}), "", 400, "too_many_prekeys"},
		{"oversized small-route body", "POST", "/v1/auth/login", false, `{"account":"` + strings.Repeat("a", MaxSmallBody) + `"}`, "", 413, "body_too_large"},
		// Keys.
		{"account key of wrong length", "POST", "/v1/accounts", false, reg(func(a *testAccount, r *registerRequest) { r.AccountKey = r.AccountKey[:31] }), "", 400, "invalid_key"},
		{"account key of small order", "POST", "/v1/accounts", false, reg(func(a *testAccount, r *registerRequest) { r.AccountKey = lowOrder }), "", 400, "invalid_key"},
		{"device list of another account", "POST", "/v1/accounts", false, reg(func(a *testAccount, r *registerRequest) { r.AccountKey = otherAcct.Public().Bytes() }), "", 400, "account_mismatch"},
		{"device list with bad signature", "POST", "/v1/accounts", false, reg(func(a *testAccount, r *registerRequest) { r.DeviceList[len(r.DeviceList)-1] ^= 1 }), "", 400, "bad_signature"},
		{"truncated device list", "POST", "/v1/accounts", false, reg(func(a *testAccount, r *registerRequest) { r.DeviceList = r.DeviceList[:40] }), "", 400, "invalid_device_list"},
		{"registration with two devices", "POST", "/v1/accounts", false, reg(func(a *testAccount, r *registerRequest) {
			a.devices[2] = small
			r.DeviceList = a.signList(t, 1, 1, 2)
		}), "", 400, "invalid_device_list"},
		{"missing signed prekey", "POST", "/v1/accounts", false, reg(func(a *testAccount, r *registerRequest) { r.PreKeys.SignedPreKey = nil }), "", 400, "invalid_request"},
		{"signed prekey of another identity", "POST", "/v1/accounts", false, reg(func(a *testAccount, r *registerRequest) {
			r.PreKeys.SignedPreKey, _ = crypto.GenerateSignedPreKey(small, 1).MarshalBinary()
		}), "", 400, "bad_signature"},
		{"last resort not flagged", "POST", "/v1/accounts", false, reg(func(a *testAccount, r *registerRequest) {
			r.PreKeys.LastResortPreKey = kemBytes(3, false, a.devices[1])
		}), "", 400, "invalid_prekey"},
		{"one-time EC prekey of wrong length", "POST", "/v1/accounts", false, reg(func(a *testAccount, r *registerRequest) {
			r.PreKeys.OneTimeEC = [][]byte{make([]byte, 35)}
		}), "", 400, "invalid_prekey"},
		{"non-canonical ML-KEM key", "POST", "/v1/prekeys", true, mustJSON(preKeysRequest{OneTimeKEM: [][]byte{nonCanonicalKEM}}), "", 400, "invalid_prekey"},
		{"duplicate IDs in a registration", "POST", "/v1/accounts", false, reg(func(a *testAccount, r *registerRequest) {
			r.PreKeys.OneTimeEC = [][]byte{ecBytes(9), ecBytes(9)}
		}), "", 409, "duplicate_prekey"},
		{"duplicate of a stored ID", "POST", "/v1/prekeys", true, mustJSON(preKeysRequest{OneTimeEC: [][]byte{ecBytes(3)}}), "", 409, "duplicate_prekey"},
		{"empty upload", "POST", "/v1/prekeys", true, `{}`, "", 400, "invalid_request"},
		{"account already registered", "POST", "/v1/accounts", false, reg(func(a *testAccount, r *registerRequest) {
			a.key = alice.key
			a.devices[1] = ik
			r.AccountKey = alice.key.Public().Bytes()
			r.DeviceList = a.signList(t, 1, 1)
			r.PreKeys = a.preKeys(ik, true, 0, 0)
		}), "", 409, "account_exists"},
		// Login.
		{"login with a bad account ID", "POST", "/v1/auth/login", false, `{"account":"x","device":1}`, "", 400, "invalid_account_id"},
		{"login for device 0", "POST", "/v1/auth/login", false, `{"account":"` + id + `","device":0}`, "", 400, "invalid_device_id"},
		{"login with a short challenge", "POST", "/v1/auth/login", false, `{"account":"` + id + `","device":1,"challenge":"AAAA","signature":"AAAA"}`, "", 400, "invalid_request"},
		{"negative device", "POST", "/v1/auth/login", false, `{"account":"` + id + `","device":-1}`, "", 400, "malformed_json"},
		// Paths.
		{"path trick in account ID", "GET", "/v1/accounts/..%2F..%2Fetc%2Fpasswd/devicelist", false, nil, "", 400, "invalid_account_id"},
		{"account ID of wrong length", "GET", "/v1/accounts/" + id + "a/devicelist", false, nil, "", 400, "invalid_account_id"},
		{"account ID with padding", "GET", "/v1/accounts/" + id[:31] + "=/devicelist", false, nil, "", 400, "invalid_account_id"},
		{"device 0", "POST", "/v1/bundles/" + id + "/0", true, nil, "", 400, "invalid_device_id"},
		{"device with leading zero", "POST", "/v1/bundles/" + id + "/01", true, nil, "", 400, "invalid_device_id"},
		{"device beyond uint32", "POST", "/v1/bundles/" + id + "/4294967296", true, nil, "", 400, "invalid_device_id"},
		{"device with sign", "POST", "/v1/bundles/" + id + "/+1", true, nil, "", 400, "invalid_device_id"},
		{"device not in the list", "POST", "/v1/bundles/" + id + "/7", true, nil, "", 404, "not_found"},
		{"unknown account", "POST", "/v1/bundles/" + stranger, true, nil, "", 404, "not_found"},
		{"another account's list", "PUT", "/v1/accounts/" + stranger + "/devicelist", true, `{"device_list":""}`, "", 403, "forbidden"},
		{"delete another account", "DELETE", "/v1/accounts/" + stranger, true, nil, "", 403, "forbidden"},
		{"provisioning address too short", "GET", "/v1/provisioning/abc", false, nil, "", 400, "invalid_address"},
		{"provisioning path trick", "PUT", "/v1/provisioning/..%2f..%2fadmin", true, `{"message":"AA=="}`, "", 400, "invalid_address"},
		{"unknown route", "GET", "/v1/admin", false, nil, "", 404, "not_found"},
		{"wrong method", "DELETE", "/v1/trust-root", false, nil, "", 405, "method_not_allowed"},
		// Handles.
		{"confusable handle (Cyrillic a)", "PUT", "/v1/handle", true, `{"handle":"аlice"}`, "", 400, "invalid_handle"},
		{"full-width handle", "PUT", "/v1/handle", true, `{"handle":"ａｌｉｃｅ"}`, "", 400, "invalid_handle"},
		{"handle with zero-width space", "PUT", "/v1/handle", true, `{"handle":"ali\u200bce"}`, "", 400, "invalid_handle"},
		{"handle too long", "PUT", "/v1/handle", true, `{"handle":"` + strings.Repeat("a", 33) + `"}`, "", 400, "invalid_handle"},
		{"handle lookup with NUL", "GET", "/v1/handles/ali%00ce", true, nil, "", 400, "invalid_handle"},
		// Auth.
		{"no token", "GET", "/v1/prekeys/count", false, nil, "", 401, "unauthorized"},
	}
	if len(cases) < 30 {
		t.Fatalf("only %d hostile cases", len(cases))
	}
	before := snapshot(t, e)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body []byte
			switch b := tc.body.(type) {
			case string:
				body = []byte(b)
			case []byte:
				body = b
			}
			req, _ := http.NewRequest(tc.method, e.http.URL+tc.path, bytes.NewReader(body))
			if tc.body != nil {
				ct := tc.ctype
				if ct == "" {
					ct = "application/json"
				}
				req.Header.Set("Content-Type", ct)
			}
			if tc.auth {
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			res, err := e.http.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var out struct {
				Error struct{ Code, Message string }
			}
			err = json.NewDecoder(res.Body).Decode(&out)
			res.Body.Close()
			if res.StatusCode != tc.status || out.Error.Code != tc.code || err != nil {
				t.Fatalf("got %d %q (%v), want %d %q", res.StatusCode, out.Error.Code, err, tc.status, tc.code)
			}
			if res.StatusCode >= 500 {
				t.Fatal("server error")
			}
		})
	}
	after := snapshot(t, e)
	if len(before) != len(after) {
		t.Fatalf("hostile requests changed the store: %d keys before, %d after", len(before), len(after))
	}
	for k, v := range before {
		if after[k] != v {
			t.Fatalf("hostile requests changed key %x", k)
		}
	}
	// Still serving, and alice still works.
	e.must(200, e.do("GET", "/v1/accounts/"+id+"/devicelist", "", nil))
	var c countsResponse
	e.must(200, e.do("GET", "/v1/prekeys/count", tok, nil)).decode(t, &c)
	if c != (countsResponse{OneTimeEC: 2, OneTimeKEM: 2}) {
		t.Fatalf("counts changed: %+v", c)
	}
}
