package keyserver

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/sotto-im/sotto/crypto"
)

// The decoders of request bodies, fuzzed: whatever the bytes, they return
// either a verified value or a 4xx API error, and never panic.

func fuzzRequest(body []byte) *http.Request {
	r := httptest.NewRequest("POST", "/", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Body = http.MaxBytesReader(httptest.NewRecorder(), r.Body, MaxPreKeyBody)
	return r
}

func check4xx(t *testing.T, e *apiError) {
	t.Helper()
	if e.Status < 400 || e.Status > 499 || e.Code == "" {
		t.Fatalf("decoder answered %d %q", e.Status, e.Code)
	}
}

func FuzzRegistration(f *testing.F) {
	_, req := newTestAccount(f, 1, 1)
	f.Add(mustJSON(req))
	f.Add([]byte(`{"account_key":"AAAA","device_list":"","prekeys":{}}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"prekeys":{"one_time_ec_prekeys":[null,"AA=="]}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		reg, e := parseRegistration(fuzzRequest(body))
		if e != nil {
			check4xx(t, e)
			return
		}
		// Accepted: the list verifies for the account and names the device.
		l, err := crypto.VerifyDeviceList(reg.account.DeviceList, reg.account.ID)
		if err != nil || len(l.Devices) != 1 || l.Devices[0].ID != reg.device || reg.keys.SignedPreKey == nil || reg.keys.LastResort == nil {
			t.Fatalf("accepted an unverifiable registration: %v", err)
		}
	})
}

func FuzzPreKeyUpload(f *testing.F) {
	a, req := newTestAccount(f, 2, 1)
	ik := a.devices[1].Public()
	f.Add(mustJSON(req.PreKeys))
	f.Add([]byte(`{"signed_prekey":"AAAA"}`))
	f.Add([]byte(`{"one_time_kem_prekeys":["AAAAAAE="]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		keys, e := parsePreKeyUpload(fuzzRequest(body), ik)
		if e != nil {
			check4xx(t, e)
			return
		}
		if len(keys.OneTimeEC) > MaxPreKeyBatch || len(keys.OneTimeKEM) > MaxPreKeyBatch {
			t.Fatal("accepted an oversized batch")
		}
		if keys.SignedPreKey != nil {
			if _, err := crypto.ParseSignedPreKey(keys.SignedPreKey.Encoded, ik); err != nil {
				t.Fatalf("accepted an unverifiable signed prekey: %v", err)
			}
		}
	})
}

func FuzzLogin(f *testing.F) {
	f.Add([]byte(`{"account":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","device":1,"challenge":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","signature":""}`))
	f.Add([]byte(`{"device":4294967296}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		addr, req, e := parseLogin(fuzzRequest(body))
		if e != nil {
			check4xx(t, e)
			return
		}
		if addr.Device == 0 || len(req.Challenge) != challengeSize || len(req.Signature) != crypto.SignatureSize {
			t.Fatal("accepted a malformed login")
		}
	})
}

func FuzzDeviceListUpdate(f *testing.F) {
	a, req := newTestAccount(f, 0, 0)
	f.Add(mustJSON(putDeviceListRequest{DeviceList: req.DeviceList}))
	f.Add([]byte(`{"device_list":"AQID"}`))
	id := a.key.ID()
	f.Fuzz(func(t *testing.T, body []byte) {
		l, signed, e := parseDeviceListUpdate(fuzzRequest(body), id)
		if e != nil {
			check4xx(t, e)
			return
		}
		if l.Account() != id {
			t.Fatal("accepted another account's list")
		}
		if _, err := crypto.VerifyDeviceList(signed, id); err != nil {
			t.Fatal(err)
		}
	})
}

func FuzzHandleClaim(f *testing.F) {
	f.Add([]byte(`{"handle":"@Alice"}`))
	f.Add([]byte(`{"handle":"аlice"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		h, e := parseHandleClaim(fuzzRequest(body))
		if e != nil {
			check4xx(t, e)
			return
		}
		if again, ok := NormalizeHandle(h); !ok || again != h {
			t.Fatalf("normalized handle %q is not a fixed point", h)
		}
		for i := 0; i < len(h); i++ {
			if h[i] >= 0x80 {
				t.Fatalf("non-ASCII handle %q accepted", h)
			}
		}
	})
}
