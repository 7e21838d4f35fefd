package testenv

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/internal/token"
	"github.com/sotto-im/sotto/relay/server"
)

// keyServer is a small in-memory key server speaking the client's key
// server API, standing in for package keyserver until its HTTP API is
// available. It verifies what it stores with the crypto package, as the
// real one does, and hands each one-time prekey out once.
type keyServer struct {
	certs  *crypto.CertificateSigner
	tokens *token.Signer

	mu         sync.Mutex
	lists      map[crypto.AccountID]*crypto.DeviceList
	signed     map[crypto.AccountID][]byte
	keys       map[crypto.Address]*devKeys
	handles    map[string]crypto.AccountID
	challenges map[string]crypto.Address
}

type devKeys struct {
	spk, lastResort []byte
	otk, kem        [][]byte
}

func newKeyServer(certs *crypto.CertificateSigner, tokens *token.Signer) *keyServer {
	return &keyServer{certs: certs, tokens: tokens, lists: map[crypto.AccountID]*crypto.DeviceList{},
		signed: map[crypto.AccountID][]byte{}, keys: map[crypto.Address]*devKeys{},
		handles: map[string]crypto.AccountID{}, challenges: map[string]crypto.Address{}}
}

// Devices implements server.Directory for the relay.
func (k *keyServer) Devices(_ context.Context, a crypto.AccountID) ([]crypto.DeviceID, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	l, ok := k.lists[a]
	if !ok {
		return nil, server.ErrUnknownAccount
	}
	var out []crypto.DeviceID
	for _, d := range l.Devices {
		out = append(out, d.ID)
	}
	return out, nil
}

func (k *keyServer) count(addr crypto.Address) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	if d := k.keys[addr]; d != nil {
		return len(d.otk)
	}
	return 0
}

var b64 = base64.RawURLEncoding

type preKeysJSON struct {
	SignedPreKey string   `json:"signed_prekey,omitempty"`
	LastResort   string   `json:"last_resort_prekey,omitempty"`
	OneTimeEC    []string `json:"one_time_prekeys,omitempty"`
	OneTimeKEM   []string `json:"one_time_kem_prekeys,omitempty"`
}

func fail(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": code}})
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func (k *keyServer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/accounts", k.register)
	mux.HandleFunc("POST /v1/login/challenge", k.challenge)
	mux.HandleFunc("POST /v1/login", k.login)
	mux.HandleFunc("GET /v1/accounts/{id}/devices", k.deviceList)
	mux.HandleFunc("PUT /v1/devices", k.auth(k.putDevices))
	mux.HandleFunc("GET /v1/bundles/{id}", k.auth(k.bundles))
	mux.HandleFunc("GET /v1/prekeys/count", k.auth(k.counts))
	mux.HandleFunc("PUT /v1/prekeys", k.auth(k.putPreKeys))
	mux.HandleFunc("GET /v1/certificate", k.auth(k.certificate))
	mux.HandleFunc("PUT /v1/handle", k.auth(k.putHandle))
	mux.HandleFunc("GET /v1/handles/{h}", k.lookupHandle)
	return mux
}

func (k *keyServer) auth(h func(http.ResponseWriter, *http.Request, crypto.Address)) http.HandlerFunc {
	v := token.NewVerifier(token.KeysOf(k.tokens.Public()), "sotto-test", "sotto")
	return func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			fail(w, 401, "unauthorized")
			return
		}
		c, err := v.Verify(r.Context(), tok, time.Now())
		if err != nil {
			fail(w, 401, "unauthorized")
			return
		}
		h(w, r, crypto.Address{Account: c.Account, Device: c.Device})
	}
}

func decodeKeys(j preKeysJSON, ik crypto.IdentityKey, d *devKeys) bool {
	dec := func(s string) []byte { b, _ := b64.DecodeString(s); return b }
	if j.SignedPreKey != "" {
		b := dec(j.SignedPreKey)
		if _, err := crypto.ParseSignedPreKey(b, ik); err != nil {
			return false
		}
		d.spk = b
	}
	if j.LastResort != "" {
		b := dec(j.LastResort)
		if _, err := crypto.ParseKEMPreKey(b, ik); err != nil {
			return false
		}
		d.lastResort = b
	}
	for _, s := range j.OneTimeEC {
		b := dec(s)
		if _, err := crypto.ParseOneTimePreKey(b); err != nil {
			return false
		}
		d.otk = append(d.otk, b)
	}
	for _, s := range j.OneTimeKEM {
		b := dec(s)
		if _, err := crypto.ParseKEMPreKey(b, ik); err != nil {
			return false
		}
		d.kem = append(d.kem, b)
	}
	return true
}

func (k *keyServer) register(w http.ResponseWriter, r *http.Request) {
	var req struct {
		DeviceList string      `json:"device_list"`
		Device     uint32      `json:"device"`
		PreKeys    preKeysJSON `json:"prekeys"`
	}
	if json.NewDecoder(r.Body).Decode(&req) != nil {
		fail(w, 400, "bad_request")
		return
	}
	signed, _ := b64.DecodeString(req.DeviceList)
	l, err := crypto.ParseSignedDeviceList(signed)
	if err != nil {
		fail(w, 400, "bad_device_list")
		return
	}
	dev, ok := l.Device(crypto.DeviceID(req.Device))
	if !ok {
		fail(w, 400, "bad_device")
		return
	}
	d := new(devKeys)
	if !decodeKeys(req.PreKeys, dev.Identity, d) || d.spk == nil || d.lastResort == nil {
		fail(w, 400, "bad_prekeys")
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.lists[l.Account()]; ok {
		fail(w, 409, "exists")
		return
	}
	k.lists[l.Account()], k.signed[l.Account()] = l, signed
	k.keys[crypto.Address{Account: l.Account(), Device: dev.ID}] = d
	w.WriteHeader(201)
}

type loginReq struct {
	Account   crypto.AccountID `json:"account"`
	Device    uint32           `json:"device"`
	Challenge string           `json:"challenge"`
	Signature string           `json:"signature"`
}

func (k *keyServer) challenge(w http.ResponseWriter, r *http.Request) {
	var req loginReq
	if json.NewDecoder(r.Body).Decode(&req) != nil {
		fail(w, 400, "bad_request")
		return
	}
	ch := make([]byte, 32)
	rand.Read(ch)
	s := b64.EncodeToString(ch)
	k.mu.Lock()
	k.challenges[s] = crypto.Address{Account: req.Account, Device: crypto.DeviceID(req.Device)}
	k.mu.Unlock()
	reply(w, map[string]string{"challenge": s})
}

func (k *keyServer) login(w http.ResponseWriter, r *http.Request) {
	var req loginReq
	if json.NewDecoder(r.Body).Decode(&req) != nil {
		fail(w, 400, "bad_request")
		return
	}
	addr := crypto.Address{Account: req.Account, Device: crypto.DeviceID(req.Device)}
	k.mu.Lock()
	want, ok := k.challenges[req.Challenge]
	delete(k.challenges, req.Challenge)
	l := k.lists[addr.Account]
	k.mu.Unlock()
	if !ok || want != addr || l == nil {
		fail(w, 401, "unauthorized")
		return
	}
	dev, ok := l.Device(addr.Device)
	ch, _ := b64.DecodeString(req.Challenge)
	sig, _ := b64.DecodeString(req.Signature)
	if !ok || dev.Identity.VerifyLoginChallenge(ch, sig) != nil {
		fail(w, 401, "unauthorized")
		return
	}
	tok, c, err := k.tokens.Issue(addr.Account, addr.Device, time.Now(), time.Hour)
	if err != nil {
		fail(w, 500, "internal")
		return
	}
	reply(w, map[string]any{"token": tok, "expires": c.Expires})
}

func (k *keyServer) deviceList(w http.ResponseWriter, r *http.Request) {
	a, err := crypto.ParseAccountID(r.PathValue("id"))
	if err != nil {
		fail(w, 400, "bad_account")
		return
	}
	k.mu.Lock()
	signed, ok := k.signed[a]
	k.mu.Unlock()
	if !ok {
		fail(w, 404, "not_found")
		return
	}
	reply(w, map[string]string{"device_list": b64.EncodeToString(signed)})
}

func (k *keyServer) putDevices(w http.ResponseWriter, r *http.Request, from crypto.Address) {
	var req struct {
		DeviceList string `json:"device_list"`
	}
	if json.NewDecoder(r.Body).Decode(&req) != nil {
		fail(w, 400, "bad_request")
		return
	}
	signed, _ := b64.DecodeString(req.DeviceList)
	l, err := crypto.VerifyDeviceList(signed, from.Account)
	if err != nil {
		fail(w, 400, "bad_device_list")
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if old := k.lists[from.Account]; old != nil && l.Version <= old.Version {
		fail(w, 409, "stale_device_list")
		return
	}
	k.lists[from.Account], k.signed[from.Account] = l, signed
	w.WriteHeader(204)
}

func (k *keyServer) bundles(w http.ResponseWriter, r *http.Request, _ crypto.Address) {
	a, err := crypto.ParseAccountID(r.PathValue("id"))
	if err != nil {
		fail(w, 400, "bad_account")
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	l := k.lists[a]
	if l == nil {
		fail(w, 404, "not_found")
		return
	}
	var out []string
	want, _ := strconv.Atoi(r.URL.Query().Get("device"))
	for _, dev := range l.Devices {
		if want != 0 && int(dev.ID) != want {
			continue
		}
		addr := crypto.Address{Account: a, Device: dev.ID}
		d := k.keys[addr]
		if d == nil {
			continue
		}
		b := &crypto.PreKeyBundle{Address: addr, Identity: dev.Identity}
		spk, err1 := crypto.ParseSignedPreKey(d.spk, dev.Identity)
		kemRaw := d.lastResort
		if len(d.kem) > 0 {
			kemRaw, d.kem = d.kem[0], d.kem[1:]
		}
		kem, err2 := crypto.ParseKEMPreKey(kemRaw, dev.Identity)
		if err1 != nil || err2 != nil {
			continue
		}
		b.SignedPreKey, b.KEMPreKey = *spk, *kem
		if len(d.otk) > 0 {
			otk, err := crypto.ParseOneTimePreKey(d.otk[0])
			d.otk = d.otk[1:]
			if err == nil {
				b.OneTimePreKey = otk
			}
		}
		raw, _ := b.MarshalBinary()
		out = append(out, b64.EncodeToString(raw))
	}
	reply(w, map[string]any{"bundles": out})
}

func (k *keyServer) counts(w http.ResponseWriter, _ *http.Request, from crypto.Address) {
	k.mu.Lock()
	d := k.keys[from]
	var ec, kem int
	if d != nil {
		ec, kem = len(d.otk), len(d.kem)
	}
	k.mu.Unlock()
	reply(w, map[string]int{"one_time_prekeys": ec, "one_time_kem_prekeys": kem})
}

func (k *keyServer) putPreKeys(w http.ResponseWriter, r *http.Request, from crypto.Address) {
	var req preKeysJSON
	if json.NewDecoder(r.Body).Decode(&req) != nil {
		fail(w, 400, "bad_request")
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	l := k.lists[from.Account]
	dev, ok := l.Device(from.Device)
	if !ok {
		fail(w, 403, "forbidden")
		return
	}
	d := k.keys[from]
	if d == nil {
		d = new(devKeys)
		k.keys[from] = d
	}
	if !decodeKeys(req, dev.Identity, d) {
		fail(w, 400, "bad_prekeys")
		return
	}
	w.WriteHeader(204)
}

func (k *keyServer) certificate(w http.ResponseWriter, _ *http.Request, from crypto.Address) {
	k.mu.Lock()
	l := k.lists[from.Account]
	k.mu.Unlock()
	dev, ok := l.Device(from.Device)
	if !ok {
		fail(w, 403, "forbidden")
		return
	}
	c, err := k.certs.Issue(from, dev.Identity, time.Now().Add(24*time.Hour))
	if err != nil {
		fail(w, 500, "internal")
		return
	}
	reply(w, map[string]string{"certificate": b64.EncodeToString(c.Bytes())})
}

func (k *keyServer) putHandle(w http.ResponseWriter, r *http.Request, from crypto.Address) {
	var req struct {
		Handle string `json:"handle"`
	}
	if json.NewDecoder(r.Body).Decode(&req) != nil || req.Handle == "" {
		fail(w, 400, "bad_request")
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if a, ok := k.handles[req.Handle]; ok && a != from.Account {
		fail(w, 409, "handle_taken")
		return
	}
	k.handles[req.Handle] = from.Account
	w.WriteHeader(204)
}

func (k *keyServer) lookupHandle(w http.ResponseWriter, r *http.Request) {
	k.mu.Lock()
	a, ok := k.handles[r.PathValue("h")]
	k.mu.Unlock()
	if !ok {
		fail(w, 404, "not_found")
		return
	}
	reply(w, map[string]string{"account": a.String()})
}
