package keyserver

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/internal/token"
	"github.com/sotto-im/sotto/keyserver/store"
)

// fetchBundles claims bundles and verifies them end to end as a client
// would: the device list against the account ID asked for, each bundle's
// signatures and identity against that list.
func fetchBundles(t testing.TB, e *testEnv, tok, account string, device crypto.DeviceID) []*crypto.PreKeyBundle {
	t.Helper()
	path := "/v1/bundles/" + account
	if device != 0 {
		path += fmt.Sprintf("/%d", device)
	}
	var br bundlesResponse
	e.must(http.StatusOK, e.do("POST", path, tok, nil)).decode(t, &br)
	id, _ := crypto.ParseAccountID(account)
	l, err := crypto.VerifyDeviceList(br.DeviceList, id)
	if err != nil {
		t.Fatalf("device list: %v", err)
	}
	var out []*crypto.PreKeyBundle
	for _, be := range br.Bundles {
		b, err := crypto.ParsePreKeyBundle(be.Bundle)
		if err != nil {
			t.Fatalf("bundle: %v", err)
		}
		if err := b.VerifyAgainst(l); err != nil || b.Address.Device != be.Device {
			t.Fatalf("bundle against list: %v", err)
		}
		out = append(out, b)
	}
	return out
}

func TestRegisterLoginFetch(t *testing.T) {
	e := newEnv(t, nil)
	alice := e.register(2, 1)
	bob := e.register(0, 0)
	btok := e.login(bob, 1)

	b := fetchBundles(t, e, btok, alice.id(), 1)
	if len(b) != 1 || b[0].OneTimePreKey == nil || b[0].KEMPreKey.LastResort {
		t.Fatalf("first fetch: %+v", b)
	}
	b = fetchBundles(t, e, btok, alice.id(), 0)
	if len(b) != 1 || b[0].OneTimePreKey == nil || !b[0].KEMPreKey.LastResort {
		t.Fatalf("second fetch: one-time EC and last resort expected")
	}
	b = fetchBundles(t, e, btok, alice.id(), 1)
	if b[0].OneTimePreKey != nil || !b[0].KEMPreKey.LastResort {
		t.Fatalf("third fetch: no one-time EC and last resort expected")
	}
	atok := e.login(alice, 1)
	var c countsResponse
	e.must(http.StatusOK, e.do("GET", "/v1/prekeys/count", atok, nil)).decode(t, &c)
	if c != (countsResponse{}) {
		t.Fatalf("counts = %+v", c)
	}
	e.must(http.StatusOK, e.do("POST", "/v1/prekeys", atok, alice.preKeys(alice.devices[1], false, 5, 3))).decode(t, &c)
	if c != (countsResponse{OneTimeEC: 5, OneTimeKEM: 3}) {
		t.Fatalf("counts after refill = %+v", c)
	}

	// A second device: linked through the list, then its own login and keys.
	e.addDevice(alice, atok, 2, 1, 1)
	b = fetchBundles(t, e, btok, alice.id(), 0)
	if len(b) != 2 || b[1].Address.Device != 2 || b[1].OneTimePreKey == nil {
		t.Fatalf("fetch of both devices: %d bundles", len(b))
	}
	// A device in the list without keys yet: 404 alone, skipped in "all".
	e.addDeviceNoKeys(alice, atok, 3)
	if r := e.do("POST", "/v1/bundles/"+alice.id()+"/3", btok, nil); r.status != 404 {
		t.Fatalf("device without keys: %d", r.status)
	}
	if got := fetchBundles(t, e, btok, alice.id(), 0); len(got) != 2 {
		t.Fatalf("fetch all with a keyless device: %d bundles", len(got))
	}

	ids, err := e.srv.DeviceIDs(t.Context(), alice.key.ID())
	if err != nil || !slices.Equal(ids, []crypto.DeviceID{1, 2, 3}) {
		t.Fatalf("DeviceIDs = %v, %v", ids, err)
	}
	var dr deviceIDsResponse
	e.must(http.StatusOK, e.do("GET", "/v1/accounts/"+alice.id()+"/devices", "", nil)).decode(t, &dr)
	if !slices.Equal(dr.Devices, ids) {
		t.Fatalf("devices endpoint = %v", dr.Devices)
	}
	if _, err := e.srv.DeviceIDs(t.Context(), crypto.GenerateAccountKey().ID()); err != ErrUnknownAccount {
		t.Fatalf("DeviceIDs of unknown account: %v", err)
	}
}

func (e *testEnv) addDeviceNoKeys(a *testAccount, tok string, id crypto.DeviceID) {
	e.t.Helper()
	a.devices[id] = crypto.GenerateIdentityKey()
	var ids []crypto.DeviceID
	for d := range crypto.DeviceID(65) {
		if _, ok := a.devices[d]; ok {
			ids = append(ids, d)
		}
	}
	a.version++
	e.must(http.StatusOK, e.do("PUT", "/v1/accounts/"+a.id()+"/devicelist", tok, putDeviceListRequest{DeviceList: a.signList(e.t, a.version, ids...)}))
}

// TestEncodeBundleMatchesCrypto checks that the concatenated bundle is
// byte for byte crypto's encoding.
func TestEncodeBundleMatchesCrypto(t *testing.T) {
	ik := crypto.GenerateIdentityKey()
	spk := crypto.GenerateSignedPreKey(ik, 7)
	lrk := crypto.GenerateKEMPreKey(ik, 8, true)
	otk := crypto.GenerateOneTimePreKey(9)
	kem := crypto.GenerateKEMPreKey(ik, 10, false)
	id := crypto.GenerateAccountKey().ID()
	enc := func(m interface{ MarshalBinary() ([]byte, error) }) []byte { b, _ := m.MarshalBinary(); return b }
	for _, tc := range []struct {
		ec, kem bool
	}{{false, false}, {true, false}, {false, true}, {true, true}} {
		sb := store.Bundle{Device: store.Device{ID: 3, Identity: [32]byte(ik.Public().Bytes())},
			SignedPreKey: enc(&spk.SignedPreKey), LastResort: enc(&lrk.KEMPreKey)}
		want := &crypto.PreKeyBundle{Address: crypto.Address{Account: id, Device: 3}, Identity: ik.Public(),
			SignedPreKey: spk.SignedPreKey, KEMPreKey: lrk.KEMPreKey}
		if tc.ec {
			sb.OneTimeEC = enc(&otk.OneTimePreKey)
			want.OneTimePreKey = &otk.OneTimePreKey
		}
		if tc.kem {
			sb.OneTimeKEM = enc(&kem.KEMPreKey)
			want.KEMPreKey = kem.KEMPreKey
		}
		wb, _ := want.MarshalBinary()
		if got := encodeBundle(id, sb); !bytes.Equal(got, wb) {
			t.Fatalf("%+v: encodeBundle differs from crypto", tc)
		}
		if _, err := crypto.ParsePreKeyBundle(wb); err != nil {
			t.Fatal(err)
		}
	}
}

// TestConcurrentClaims: 64 goroutines fetch over HTTP the bundle of one
// device holding 100 one-time EC and 100 one-time ML-KEM prekeys. Each
// prekey is handed out at most once; once they run out, every fetch gets
// the last-resort key and no one-time EC key.
func TestConcurrentClaims(t *testing.T) {
	e := newEnv(t, nil)
	const keys, workers, each = 100, 64, 4
	alice := e.register(keys, keys)
	bob := e.register(0, 0)
	tok := e.login(bob, 1)

	type result struct {
		ec, kem   string
		lastResot bool
	}
	var mu sync.Mutex
	var results []result
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				b := fetchBundles(t, e, tok, alice.id(), 1)
				r := result{lastResot: b[0].KEMPreKey.LastResort}
				if b[0].OneTimePreKey != nil {
					r.ec = fmt.Sprint(b[0].OneTimePreKey.ID)
				}
				if !r.lastResot {
					r.kem = fmt.Sprint(b[0].KEMPreKey.ID)
				}
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	ec, kem := map[string]int{}, map[string]int{}
	for _, r := range results {
		if r.ec != "" {
			ec[r.ec]++
		}
		if r.kem != "" {
			kem[r.kem]++
		}
	}
	for id, n := range ec {
		if n != 1 {
			t.Errorf("one-time EC prekey %s handed out %d times", id, n)
		}
	}
	for id, n := range kem {
		if n != 1 {
			t.Errorf("one-time KEM prekey %s handed out %d times", id, n)
		}
	}
	if len(ec) != keys || len(kem) != keys {
		t.Errorf("handed out %d EC and %d KEM one-time prekeys, want %d each", len(ec), len(kem), keys)
	}
	// After they ran out: last resort, no one-time EC.
	for range 3 {
		b := fetchBundles(t, e, tok, alice.id(), 1)
		if b[0].OneTimePreKey != nil || !b[0].KEMPreKey.LastResort {
			t.Fatal("fetch after exhaustion did not fall back to the last-resort key")
		}
	}
	lastResort := 0
	for _, r := range results {
		if r.lastResot {
			if r.ec != "" {
				t.Error("a last-resort fetch also got a one-time EC key (both ran out together)")
			}
			lastResort++
		}
	}
	if lastResort != workers*each-keys {
		t.Errorf("%d last-resort fetches, want %d", lastResort, workers*each-keys)
	}
}

// forgeToken builds a token with arbitrary header and claims.
func forgeToken(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims, kid string) string {
	t.Helper()
	tk := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tk.Header["kid"] = kid
	}
	s, err := tk.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestTokens(t *testing.T) {
	e := newEnv(t, nil)
	alice := e.register(0, 0)
	good := e.login(alice, 1)
	e.must(http.StatusOK, e.do("GET", "/v1/prekeys/count", good, nil))

	now := time.Now()
	sub := alice.id() + ".1"
	kid := token.KeyIDOf(e.tokenSK.Public().(ed25519.PublicKey))
	claims := func(mod func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{"iss": testIssuer, "aud": testAudience, "sub": sub, "iat": now.Unix(),
			"nbf": now.Unix(), "exp": now.Add(30 * time.Minute).Unix(), "jti": "x1"}
		if mod != nil {
			mod(c)
		}
		return c
	}
	signed := func(mod func(jwt.MapClaims)) string {
		return forgeToken(t, jwt.SigningMethodEdDSA, e.tokenSK, claims(mod), kid)
	}
	_, otherSK, _ := ed25519.GenerateKey(nil)
	forgedSig := []byte(good)
	forgedSig[len(forgedSig)-5] ^= 'A' ^ 'B'
	if forgedSig[len(forgedSig)-5] == good[len(good)-5] {
		forgedSig[len(forgedSig)-5] ^= 1
	}
	none := forgeToken(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(nil), kid)
	hs := forgeToken(t, jwt.SigningMethodHS256, []byte(e.tokenSK.Public().(ed25519.PublicKey)), claims(nil), kid)

	// A device removed from the list: its token dies.
	bob := e.register(0, 0)
	btok := e.login(bob, 1)
	b2 := e.addDevice(bob, btok, 2, 0, 0)
	e.must(http.StatusOK, e.do("GET", "/v1/prekeys/count", b2, nil))
	bob.version++
	e.must(http.StatusOK, e.do("PUT", "/v1/accounts/"+bob.id()+"/devicelist", btok, putDeviceListRequest{DeviceList: bob.signList(t, bob.version, 1)}))

	for _, tc := range []struct {
		name, tok string
	}{
		{"forged signature", string(forgedSig)},
		{"alg none", none},
		{"HS256 keyed with the public key", hs},
		{"another key", forgeToken(t, jwt.SigningMethodEdDSA, otherSK, claims(nil), kid)},
		{"expired", signed(func(c jwt.MapClaims) {
			c["iat"], c["nbf"], c["exp"] = now.Add(-2*time.Hour).Unix(), now.Add(-2*time.Hour).Unix(), now.Add(-90*time.Minute).Unix()
		})},
		{"not yet valid", signed(func(c jwt.MapClaims) {
			c["iat"], c["nbf"], c["exp"] = now.Add(time.Hour).Unix(), now.Add(time.Hour).Unix(), now.Add(90*time.Minute).Unix()
		})},
		{"wrong audience", signed(func(c jwt.MapClaims) { c["aud"] = "someone-else" })},
		{"wrong issuer", signed(func(c jwt.MapClaims) { c["iss"] = "https://evil.test" })},
		{"lifetime too long", signed(func(c jwt.MapClaims) { c["exp"] = now.Add(5 * time.Hour).Unix() })},
		{"unknown device", signed(func(c jwt.MapClaims) { c["sub"] = alice.id() + ".9" })},
		{"unknown account", signed(func(c jwt.MapClaims) { c["sub"] = crypto.GenerateAccountKey().ID().String() + ".1" })},
		{"removed device", b2},
		{"garbage", "not.a.token"},
		{"empty", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do("GET", "/v1/prekeys/count", tc.tok, nil)
			if r.status != http.StatusUnauthorized || r.errorCode() != "unauthorized" {
				t.Fatalf("status %d code %q, want 401 unauthorized", r.status, r.errorCode())
			}
		})
	}
	// The same token once the clock passes its expiry (cache included).
	e.offset.Store(int64(2 * time.Hour))
	if r := e.do("GET", "/v1/prekeys/count", good, nil); r.status != http.StatusUnauthorized {
		t.Fatalf("token used past expiry: %d", r.status)
	}
}

func TestChallengeSingleUse(t *testing.T) {
	e := newEnv(t, nil)
	alice := e.register(0, 0)
	var ch challengeResponse
	e.must(200, e.do("POST", "/v1/auth/challenge", "", nil)).decode(t, &ch)
	req := loginRequest{Account: alice.id(), Device: 1, Challenge: ch.Challenge, Signature: alice.devices[1].SignLoginChallenge(ch.Challenge)}
	e.must(200, e.do("POST", "/v1/auth/login", "", req))
	if r := e.do("POST", "/v1/auth/login", "", req); r.status != 401 {
		t.Fatalf("challenge answered twice: %d", r.status)
	}
	// A wrong signature spends the challenge too.
	e.must(200, e.do("POST", "/v1/auth/challenge", "", nil)).decode(t, &ch)
	bad := loginRequest{Account: alice.id(), Device: 1, Challenge: ch.Challenge, Signature: crypto.GenerateIdentityKey().SignLoginChallenge(ch.Challenge)}
	e.must(401, e.do("POST", "/v1/auth/login", "", bad))
	bad.Signature = alice.devices[1].SignLoginChallenge(ch.Challenge)
	e.must(401, e.do("POST", "/v1/auth/login", "", bad))
	// An expired challenge.
	e.must(200, e.do("POST", "/v1/auth/challenge", "", nil)).decode(t, &ch)
	e.offset.Store(int64(ChallengeLifetime + time.Second))
	req = loginRequest{Account: alice.id(), Device: 1, Challenge: ch.Challenge, Signature: alice.devices[1].SignLoginChallenge(ch.Challenge)}
	e.must(401, e.do("POST", "/v1/auth/login", "", req))
	// A challenge the server never issued, and one signed for a device
	// that is not the one claimed.
	e.must(401, e.do("POST", "/v1/auth/login", "", loginRequest{Account: alice.id(), Device: 1, Challenge: make([]byte, 32), Signature: alice.devices[1].SignLoginChallenge(make([]byte, 32))}))
}

func TestDeviceListUpdates(t *testing.T) {
	e := newEnv(t, nil)
	alice := e.register(3, 3)
	tok := e.login(alice, 1)
	tok2 := e.addDevice(alice, tok, 2, 4, 4) // version 2: devices 1, 2
	mallory := e.register(0, 0)
	mtok := e.login(mallory, 1)

	path := "/v1/accounts/" + alice.id() + "/devicelist"
	current := func() deviceListResponse {
		var d deviceListResponse
		e.must(200, e.do("GET", path, "", nil)).decode(t, &d)
		return d
	}
	before := current()
	if before.Version != 2 {
		t.Fatalf("version = %d", before.Version)
	}
	otherKey := crypto.GenerateAccountKey()
	badSig := alice.signList(t, 5, 1, 2)
	badSig[len(badSig)-1] ^= 1
	foreign := &testAccount{key: otherKey, devices: alice.devices}

	for _, tc := range []struct {
		name, tok, path string
		list            []byte
		status          int
		code            string
	}{
		{"lower version", tok, path, alice.signList(t, 1, 1, 2), 409, "stale_device_list"},
		{"equal version", tok, path, alice.signList(t, 2, 1), 409, "stale_device_list"},
		{"bad signature", tok, path, badSig, 400, "bad_signature"},
		{"another account's list", tok, path, foreign.signList(t, 9, 1), 400, "account_mismatch"},
		{"submitted by another account", mtok, path, alice.signList(t, 9, 1), 403, "forbidden"},
		{"malformed", tok, path, []byte{1, 2, 3}, 400, "invalid_device_list"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do("PUT", tc.path, tc.tok, putDeviceListRequest{DeviceList: tc.list})
			if r.status != tc.status || r.errorCode() != tc.code {
				t.Fatalf("status %d code %q, want %d %q", r.status, r.errorCode(), tc.status, tc.code)
			}
			if got := current(); got.Version != before.Version || !bytes.Equal(got.DeviceList, before.DeviceList) {
				t.Fatal("refused list changed the state")
			}
		})
	}

	// Remove device 2: its prekeys go, the relay is told, its token dies.
	e.must(200, e.do("PUT", path, tok, putDeviceListRequest{DeviceList: alice.signList(t, 3, 1)}))
	if e.purger.devices[0] != (crypto.Address{Account: alice.key.ID(), Device: 2}) {
		t.Fatalf("purged %v", e.purger.devices)
	}
	e.must(401, e.do("GET", "/v1/prekeys/count", tok2, nil))
	// A list submitted with the removed device's token is refused, state unchanged.
	r := e.do("PUT", path, tok2, putDeviceListRequest{DeviceList: alice.signList(t, 4, 1, 2)})
	if r.status != 401 || current().Version != 3 {
		t.Fatalf("removed device's list: %d, version %d", r.status, current().Version)
	}
	// Device 2's keys were deleted with it.
	if _, err := e.db.Counts(t.Context(), crypto.Address{Account: alice.key.ID(), Device: 2}); err == nil {
		t.Fatal("removed device still has prekey counts")
	}
	found := false
	e.db.Scan(func(k, v []byte) bool {
		if bytes.HasPrefix(k, devicePrefixForTest(alice.key.ID(), 2)) {
			found = true
		}
		return true
	})
	if found {
		t.Fatal("removed device's keys remain in the store")
	}
}

func devicePrefixForTest(id crypto.AccountID, d crypto.DeviceID) []byte {
	p := append([]byte{'a'}, id[:]...)
	p = append(p, 0x02)
	return append(p, byte(d>>24), byte(d>>16), byte(d>>8), byte(d))
}

func TestDeleteAccountLeavesNothing(t *testing.T) {
	e := newEnv(t, nil)
	alice := e.register(5, 5)
	tok := e.login(alice, 1)
	e.addDevice(alice, tok, 2, 5, 5)
	e.must(200, e.do("PUT", "/v1/handle", tok, handleRequest{Handle: "Alice_W"}))
	bob := e.register(2, 2)
	btok := e.login(bob, 1)
	fetchBundles(t, e, btok, alice.id(), 0)

	// A device token alone, another account's key, or a replayed challenge
	// do not delete the account.
	e.must(400, e.do("DELETE", "/v1/accounts/"+alice.id(), tok, nil))
	e.must(401, e.do("DELETE", "/v1/accounts/"+alice.id(), tok, e.deletion(bob.key)))
	del := e.deletion(alice.key)
	bad := del
	bad.Signature = alice.devices[1].SignLoginChallenge(del.Challenge)
	e.must(401, e.do("DELETE", "/v1/accounts/"+alice.id(), tok, bad)) // spends the challenge
	e.must(401, e.do("DELETE", "/v1/accounts/"+alice.id(), tok, del))
	if len(e.purger.accounts) != 0 {
		t.Fatal("a refused deletion reached the relay")
	}
	e.must(204, e.do("DELETE", "/v1/accounts/"+alice.id(), tok, e.deletion(alice.key)))
	if len(e.purger.accounts) != 2 || e.purger.accounts[0] != alice.key.ID() {
		t.Fatalf("purger calls: %v", e.purger.accounts)
	}
	// Everything that identifies the account, in any form.
	aid := alice.key.ID()
	needles := [][]byte{aid[:], []byte(alice.id()), alice.key.Public().Bytes(), []byte("alice_w"), []byte("alicew")}
	for _, ik := range alice.devices {
		needles = append(needles, ik.Public().Bytes())
	}
	n := 0
	if err := e.db.Scan(func(k, v []byte) bool {
		n++
		for _, nd := range needles {
			if bytes.Contains(k, nd) || bytes.Contains(v, nd) {
				t.Errorf("key %x still holds a trace of the deleted account", k)
			}
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("scan saw nothing: bob's data should be there (control)")
	}
	e.must(401, e.do("GET", "/v1/prekeys/count", tok, nil))
	e.must(404, e.do("GET", "/v1/accounts/"+alice.id()+"/devicelist", "", nil))
	e.must(404, e.do("POST", "/v1/bundles/"+alice.id(), btok, nil))
	// The control: bob is intact.
	e.must(200, e.do("GET", "/v1/prekeys/count", btok, nil))
}

func TestDeleteAccountPurgeFailureKeepsAccount(t *testing.T) {
	e := newEnv(t, nil)
	alice := e.register(1, 1)
	tok := e.login(alice, 1)
	e.purger.fail = true
	r := e.do("DELETE", "/v1/accounts/"+alice.id(), tok, e.deletion(alice.key))
	if r.status != 500 || r.errorCode() != "internal" || strings.Contains(string(r.body), "unreachable") {
		t.Fatalf("purge failure: %d %s", r.status, r.body)
	}
	e.must(200, e.do("GET", "/v1/accounts/"+alice.id()+"/devicelist", "", nil))
}

func TestCertificateTrustRootJWKS(t *testing.T) {
	e := newEnv(t, nil)
	alice := e.register(0, 0)
	tok := e.login(alice, 1)
	var tr trustRootResponse
	e.must(200, e.do("GET", "/v1/trust-root", "", nil)).decode(t, &tr)
	root, err := crypto.ParseTrustRoot(tr.TrustRoot)
	if err != nil || !bytes.Equal(root.Bytes(), e.signer.TrustRoot().Bytes()) {
		t.Fatalf("trust root: %v", err)
	}
	for _, m := range []string{"GET", "POST"} {
		var cr certificateResponse
		e.must(200, e.do(m, "/v1/certificate", tok, nil)).decode(t, &cr)
		c, err := crypto.ParseSenderCertificate(cr.Certificate, []crypto.TrustRoot{root}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if c.Sender != (crypto.Address{Account: alice.key.ID(), Device: 1}) || !c.Identity.Equal(alice.devices[1].Public()) {
			t.Fatal("certificate names the wrong sender")
		}
		if d := time.Until(c.Expires); d > DefaultCertificateLifetime || d < DefaultCertificateLifetime-time.Minute {
			t.Fatalf("certificate lifetime %v", d)
		}
	}
	e.must(401, e.do("GET", "/v1/certificate", "", nil))

	// JWKS: a relay in another process verifies the tokens with it.
	v := token.NewVerifier(token.NewRemoteKeys(e.http.URL+"/.well-known/jwks.json", e.http.Client()), testIssuer, testAudience)
	cl, err := v.Verify(t.Context(), tok, time.Now())
	if err != nil || cl.Account != alice.key.ID() || cl.Device != 1 {
		t.Fatalf("remote verification: %+v, %v", cl, err)
	}
}

func TestKeyRotation(t *testing.T) {
	old := newEnv(t, nil)
	alice := old.register(0, 0)
	oldTok := old.login(alice, 1)
	// A new server on the same store with a new key and the old one as previous.
	_, newSK, _ := ed25519.GenerateKey(nil)
	cfg := Config{Issuer: testIssuer, Audience: testAudience, TokenKey: newSK,
		PreviousTokenKeys: []ed25519.PublicKey{old.tokenSK.Public().(ed25519.PublicKey)},
		CertificateSigner: old.signer, Limits: unlimited()}
	s, err := New(cfg, old.db, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := &testEnv{t: t, db: old.db, srv: s, tokenSK: newSK}
	e.http = newHTTPServer(t, s)
	e.must(200, e.do("GET", "/v1/prekeys/count", oldTok, nil))
	newTok := e.login(alice, 1)
	e.must(200, e.do("GET", "/v1/prekeys/count", newTok, nil))
	var jwks token.JWKS
	e.must(200, e.do("GET", "/.well-known/jwks.json", "", nil)).decode(t, &jwks)
	if len(jwks.Keys) != 2 {
		t.Fatalf("JWKS holds %d keys, want 2", len(jwks.Keys))
	}
	// The old server does not know the new key.
	old.must(401, old.do("GET", "/v1/prekeys/count", newTok, nil))
}

func TestProvisioning(t *testing.T) {
	e := newEnv(t, nil)
	alice := e.register(0, 0)
	tok := e.login(alice, 1)
	var pa provisioningAddressResponse
	e.must(201, e.do("POST", "/v1/provisioning", "", nil)).decode(t, &pa)
	path := "/v1/provisioning/" + pa.Address
	e.must(204, e.do("GET", path, "", nil)) // not posted yet
	e.must(401, e.do("PUT", path, "", provisioningMessage{Message: []byte("x")}))
	e.must(204, e.do("PUT", path, tok, provisioningMessage{Message: []byte("ciphertext")}))
	if r := e.do("PUT", path, tok, provisioningMessage{Message: []byte("again")}); r.errorCode() != "already_posted" {
		t.Fatalf("second post: %d %s", r.status, r.body)
	}
	var m provisioningMessage
	e.must(200, e.do("GET", path, "", nil)).decode(t, &m)
	if string(m.Message) != "ciphertext" {
		t.Fatalf("message = %q", m.Message)
	}
	e.must(404, e.do("GET", path, "", nil)) // fetched once
	// Expiry.
	e.must(201, e.do("POST", "/v1/provisioning", "", nil)).decode(t, &pa)
	e.offset.Store(int64(ProvisioningLifetime + time.Second))
	e.must(404, e.do("GET", "/v1/provisioning/"+pa.Address, "", nil))
}

func TestHandles(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{"alice", "alice"}, {"@Alice", "alice"}, {"ALICE.W", "alice.w"}, {"a_1.b", "a_1.b"},
		{"ab", ""}, {"1alice", ""}, {"alice.", ""}, {"al..ice", ""}, {"al._ice", ""}, {".alice", ""},
		{"аlice", ""}, {"ａlice", ""}, {"ali ce", ""}, {"alice\u200b", ""}, {"ali-ce", ""},
		{strings.Repeat("a", 32), strings.Repeat("a", 32)}, {strings.Repeat("a", 33), ""}, {"@@alice", ""}, {"", ""},
	} {
		got, ok := NormalizeHandle(tc.in)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("NormalizeHandle(%q) = %q, %v; want %q", tc.in, got, ok, tc.want)
		}
	}
	for _, pair := range [][2]string{{"alice", "a1ice"}, {"bob", "b0b"}, {"alice", "al.ice"}, {"modem", "rnodern"}, {"wave", "vvave"}} {
		if handleSkeleton(pair[0]) != handleSkeleton(pair[1]) {
			t.Errorf("%q and %q should collide", pair[0], pair[1])
		}
	}

	e := newEnv(t, nil)
	alice, bob := e.register(0, 0), e.register(0, 0)
	atok, btok := e.login(alice, 1), e.login(bob, 1)
	e.must(200, e.do("PUT", "/v1/handle", atok, handleRequest{Handle: "@Alice"}))
	if r := e.do("PUT", "/v1/handle", btok, handleRequest{Handle: "a1ice"}); r.errorCode() != "handle_taken" {
		t.Fatalf("look-alike claim: %d %s", r.status, r.body)
	}
	var hr handleResponse
	e.must(200, e.do("GET", "/v1/handles/ALICE", btok, nil)).decode(t, &hr)
	if hr.Account != alice.id() {
		t.Fatalf("lookup = %+v", hr)
	}
	e.must(404, e.do("GET", "/v1/handles/a1ice", btok, nil))
	e.must(400, e.do("GET", "/v1/handles/%D0%B0lice", btok, nil))
	e.must(204, e.do("DELETE", "/v1/handle", atok, nil))
	e.must(404, e.do("DELETE", "/v1/handle", atok, nil))
	e.must(404, e.do("GET", "/v1/handles/alice", btok, nil))
	e.must(200, e.do("PUT", "/v1/handle", btok, handleRequest{Handle: "a1ice"}))
}

func TestRateLimits(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.Limits.HandleLookup = Rate{Limit: 0.001, Burst: 3}
		c.Limits.Unauthenticated = Rate{Limit: 0.001, Burst: 40}
	})
	alice := e.register(0, 0)
	tok := e.login(alice, 1)
	for i := range 3 {
		e.must(404, e.do("GET", fmt.Sprintf("/v1/handles/nobody%d", i), tok, nil))
	}
	r := e.do("GET", "/v1/handles/nobody9", tok, nil)
	if r.status != 429 || r.errorCode() != "rate_limited" || r.header.Get("Retry-After") == "" {
		t.Fatalf("4th lookup: %d %q Retry-After=%q", r.status, r.errorCode(), r.header.Get("Retry-After"))
	}
	// Unauthenticated endpoints per IP.
	n := 0
	for range 50 {
		if e.do("POST", "/v1/auth/challenge", "", nil).status == 429 {
			n++
		}
	}
	if n == 0 {
		t.Fatal("challenge flood never limited")
	}
	// The limiter's table stays bounded.
	l := newLimiter("t", Rate{Limit: 1, Burst: 1}, 10, func(string) {})
	for i := range 100 {
		l.allow(fmt.Sprint(i), time.Now())
	}
	if l.size() != 10 {
		t.Fatalf("limiter tracks %d keys, want 10", l.size())
	}
	ok, _ := l.allow("99", time.Now())
	if ok {
		t.Fatal("recently seen key lost its bucket")
	}
}

func TestNoSecretsInErrors(t *testing.T) {
	e := newEnv(t, nil)
	r := e.do("POST", "/v1/accounts", "", `{"account_key": "`+base64.StdEncoding.EncodeToString(make([]byte, 32))+`"}`)
	var v map[string]map[string]string
	if err := json.Unmarshal(r.body, &v); err != nil || v["error"]["code"] == "" {
		t.Fatalf("error body %s", r.body)
	}
	if strings.Contains(r.header.Get("Content-Type"), "json") == false {
		t.Fatal("error not JSON")
	}
}

// TestReusedDeviceIDKeepsOldTokenDead: device 2 is removed and its ID given
// to a new device; the old device's token stays refused, the new one's works.
func TestReusedDeviceIDKeepsOldTokenDead(t *testing.T) {
	e := newEnv(t, nil)
	alice := e.register(0, 0)
	tok := e.login(alice, 1)
	old := e.addDevice(alice, tok, 2, 0, 0)
	alice.version++
	e.must(200, e.do("PUT", "/v1/accounts/"+alice.id()+"/devicelist", tok, putDeviceListRequest{DeviceList: alice.signList(t, alice.version, 1)}))
	e.offset.Store(int64(2 * time.Second))
	delete(alice.devices, 2)
	fresh := e.addDevice(alice, tok, 2, 1, 1)
	e.must(401, e.do("GET", "/v1/prekeys/count", old, nil))
	e.must(200, e.do("GET", "/v1/prekeys/count", fresh, nil))
}
