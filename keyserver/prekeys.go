package keyserver

import (
	"encoding/binary"
	"errors"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/keyserver/store"
)

// preKeysRequest carries prekeys in their crypto encodings (base64 in
// JSON). Every field is optional in an upload.
type preKeysRequest struct {
	SignedPreKey     []byte   `json:"signed_prekey,omitempty"`
	LastResortPreKey []byte   `json:"last_resort_prekey,omitempty"`
	OneTimeEC        [][]byte `json:"one_time_ec_prekeys,omitempty"`
	OneTimeKEM       [][]byte `json:"one_time_kem_prekeys,omitempty"`
}

// parse verifies every key with the device identity key ik: signatures of
// the signed and ML-KEM prekeys, the last-resort flag, canonical encodings,
// batch sizes, and that no ID repeats within the upload.
func (p *preKeysRequest) parse(ik crypto.IdentityKey) (store.DeviceKeys, *apiError) {
	var k store.DeviceKeys
	if len(p.OneTimeEC) > MaxPreKeyBatch || len(p.OneTimeKEM) > MaxPreKeyBatch {
		return k, errTooManyPreKeys
	}
	if p.SignedPreKey != nil {
		spk, err := crypto.ParseSignedPreKey(p.SignedPreKey, ik)
		if err != nil {
			return k, preKeyError(err)
		}
		enc, _ := spk.MarshalBinary()
		k.SignedPreKey = &store.PreKey{ID: spk.ID, Encoded: enc}
	}
	if p.LastResortPreKey != nil {
		kpk, err := crypto.ParseKEMPreKey(p.LastResortPreKey, ik)
		if err != nil {
			return k, preKeyError(err)
		}
		if !kpk.LastResort {
			return k, errInvalidPreKey
		}
		enc, _ := kpk.MarshalBinary()
		k.LastResort = &store.PreKey{ID: kpk.ID, Encoded: enc}
	}
	seen := make(map[uint32]bool, len(p.OneTimeEC))
	for _, b := range p.OneTimeEC {
		otk, err := crypto.ParseOneTimePreKey(b)
		if err != nil {
			return k, preKeyError(err)
		}
		if seen[otk.ID] {
			return k, errDuplicatePreKey
		}
		seen[otk.ID] = true
		enc, _ := otk.MarshalBinary()
		k.OneTimeEC = append(k.OneTimeEC, store.PreKey{ID: otk.ID, Encoded: enc})
	}
	clear(seen)
	for _, b := range p.OneTimeKEM {
		kpk, err := crypto.ParseKEMPreKey(b, ik)
		if err != nil {
			return k, preKeyError(err)
		}
		if kpk.LastResort {
			return k, errInvalidPreKey
		}
		if seen[kpk.ID] {
			return k, errDuplicatePreKey
		}
		seen[kpk.ID] = true
		enc, _ := kpk.MarshalBinary()
		k.OneTimeKEM = append(k.OneTimeKEM, store.PreKey{ID: kpk.ID, Encoded: enc})
	}
	return k, nil
}

func preKeyError(err error) *apiError {
	if errors.Is(err, crypto.ErrBadSignature) {
		return errBadSignature
	}
	return errInvalidPreKey
}

// parsePreKeyUpload decodes and verifies an upload for the device whose
// identity key is ik.
func parsePreKeyUpload(r *http.Request, ik crypto.IdentityKey) (store.DeviceKeys, *apiError) {
	var req preKeysRequest
	if e := decodeBody(r, &req); e != nil {
		return store.DeviceKeys{}, e
	}
	keys, e := req.parse(ik)
	if e != nil {
		return keys, e
	}
	if keys.SignedPreKey == nil && keys.LastResort == nil && len(keys.OneTimeEC) == 0 && len(keys.OneTimeKEM) == 0 {
		return keys, errInvalidRequest
	}
	return keys, nil
}

type countsResponse struct {
	OneTimeEC  int `json:"one_time_ec"`
	OneTimeKEM int `json:"one_time_kem"`
}

// handleUploadPreKeys stores the caller's prekeys.
func (s *Server) handleUploadPreKeys(w http.ResponseWriter, r *http.Request) {
	a := authFrom(r.Context())
	ik, err := crypto.NewIdentityKey(a.Device.Identity[:])
	if err != nil {
		s.internal(w, r, "upload prekeys: stored identity", err)
		return
	}
	keys, e := parsePreKeyUpload(r, ik)
	if e != nil {
		writeError(w, e)
		return
	}
	addr := crypto.Address{Account: a.Claims.Account, Device: a.Claims.Device}
	if err := s.store.PutPreKeys(r.Context(), addr, keys); err != nil {
		if e := storeError(err); e != nil {
			writeError(w, e)
			return
		}
		s.internal(w, r, "upload prekeys", err)
		return
	}
	s.writeCounts(w, r, addr)
}

// handleCounts answers the caller's one-time prekey counts.
func (s *Server) handleCounts(w http.ResponseWriter, r *http.Request) {
	a := authFrom(r.Context())
	s.writeCounts(w, r, crypto.Address{Account: a.Claims.Account, Device: a.Claims.Device})
}

func (s *Server) writeCounts(w http.ResponseWriter, r *http.Request, addr crypto.Address) {
	c, err := s.store.Counts(r.Context(), addr)
	if err != nil {
		if e := storeError(err); e != nil {
			writeError(w, e)
			return
		}
		s.internal(w, r, "counts", err)
		return
	}
	writeJSON(w, http.StatusOK, countsResponse{OneTimeEC: c.OneTimeEC, OneTimeKEM: c.OneTimeKEM})
}

type bundleEntry struct {
	Device crypto.DeviceID `json:"device"`
	Bundle []byte          `json:"bundle"`
}

type bundlesResponse struct {
	Account    string        `json:"account"`
	DeviceList []byte        `json:"device_list"`
	Bundles    []bundleEntry `json:"bundles"`
}

// handleBundles claims the bundles of one device ({device} given) or of
// every device of the account. It is a POST because it changes state: each
// call consumes one-time prekeys.
func (s *Server) handleBundles(w http.ResponseWriter, r *http.Request) {
	id, e := accountParam(r)
	if e != nil {
		writeError(w, e)
		return
	}
	var devices []crypto.DeviceID
	if p := chi.URLParam(r, "device"); p != "" {
		d, e := parseDeviceID(p)
		if e != nil {
			writeError(w, e)
			return
		}
		devices = []crypto.DeviceID{d}
	}
	a, bundles, err := s.store.ClaimBundles(r.Context(), id, devices)
	if err != nil {
		if e := storeError(err); e != nil {
			writeError(w, e)
			return
		}
		s.internal(w, r, "claim bundles", err)
		return
	}
	if len(devices) == 1 && len(bundles) == 0 {
		// The device exists but has not uploaded its keys yet.
		writeError(w, errNotFound)
		return
	}
	resp := bundlesResponse{Account: id.String(), DeviceList: a.DeviceList, Bundles: make([]bundleEntry, len(bundles))}
	for i, b := range bundles {
		resp.Bundles[i] = bundleEntry{Device: b.Device.ID, Bundle: encodeBundle(id, b)}
		if b.OneTimeEC != nil {
			s.metrics.claims.WithLabelValues("ec").Inc()
		}
		if b.OneTimeKEM != nil {
			s.metrics.claims.WithLabelValues("kem").Inc()
		} else {
			s.metrics.claims.WithLabelValues("last_resort").Inc()
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

// encodeBundle writes the crypto.PreKeyBundle encoding (PROTOCOL.md §3.2)
// from the stored encodings of its parts, which were verified and
// re-marshalled by crypto when uploaded:
//
//	version u8 (1) || account [20] || device u32 || identity_key [32]
//	|| SignedPreKey || KEMPreKey || has_one_time u8 || [OneTimePreKey]
//
// Concatenating avoids re-parsing an ML-KEM key per fetch; a test checks
// that the output is byte for byte what crypto.PreKeyBundle.MarshalBinary
// produces.
func encodeBundle(id crypto.AccountID, b store.Bundle) []byte {
	kem := b.OneTimeKEM
	if kem == nil {
		kem = b.LastResort
	}
	out := make([]byte, 0, 1+crypto.AccountIDSize+4+crypto.PublicKeySize+len(b.SignedPreKey)+len(kem)+1+len(b.OneTimeEC))
	out = append(out, bundleVersion)
	out = append(out, id[:]...)
	out = binary.BigEndian.AppendUint32(out, uint32(b.Device.ID))
	out = append(out, b.Device.Identity[:]...)
	out = append(out, b.SignedPreKey...)
	out = append(out, kem...)
	if b.OneTimeEC != nil {
		out = append(out, 1)
		out = append(out, b.OneTimeEC...)
	} else {
		out = append(out, 0)
	}
	return out
}

// bundleVersion is the version byte of crypto's PreKeyBundle encoding.
const bundleVersion = 1
