package keyserver

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/keyserver/store"
)

// accountParam parses the {account} path parameter.
func accountParam(r *http.Request) (crypto.AccountID, *apiError) {
	id, err := crypto.ParseAccountID(chi.URLParam(r, "account"))
	if err != nil {
		return crypto.AccountID{}, errInvalidAccountID
	}
	return id, nil
}

// parseDeviceID accepts the canonical decimal form of a non-zero uint32.
func parseDeviceID(s string) (crypto.DeviceID, *apiError) {
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil || v == 0 || strconv.FormatUint(v, 10) != s {
		return 0, errInvalidDeviceID
	}
	return crypto.DeviceID(v), nil
}

// verifiedList maps the errors of crypto.VerifyDeviceList to API errors.
func verifiedList(signed []byte, want crypto.AccountID) (*crypto.DeviceList, *apiError) {
	l, err := crypto.VerifyDeviceList(signed, want)
	if err != nil {
		if _, ok := errors.AsType[*crypto.AccountMismatchError](err); ok {
			return nil, errAccountMismatch
		}
		switch {
		case errors.Is(err, crypto.ErrBadSignature):
			return nil, errBadSignature
		case errors.Is(err, crypto.ErrInvalidKey):
			return nil, errInvalidKey
		default:
			return nil, errInvalidDeviceList
		}
	}
	return l, nil
}

// accountRecord builds the store record of a verified list.
func accountRecord(l *crypto.DeviceList, signed []byte) *store.Account {
	a := &store.Account{ID: l.Account(), Version: l.Version, DeviceList: signed}
	copy(a.Key[:], l.AccountKey.Bytes())
	for _, d := range l.Devices {
		dev := store.Device{ID: d.ID}
		copy(dev.Identity[:], d.Identity.Bytes())
		a.Devices = append(a.Devices, dev)
	}
	return a
}

type registerRequest struct {
	AccountKey []byte         `json:"account_key"`
	DeviceList []byte         `json:"device_list"`
	PreKeys    preKeysRequest `json:"prekeys"`
}

type registerResponse struct {
	Account string          `json:"account"`
	Device  crypto.DeviceID `json:"device"`
}

// registration is a verified registration request.
type registration struct {
	account *store.Account
	device  crypto.DeviceID
	keys    store.DeviceKeys
}

// parseRegistration decodes a registration and verifies all of it: the
// account key, the device list signed by it holding exactly one device,
// and that device's prekeys signed by its identity key.
func parseRegistration(r *http.Request) (*registration, *apiError) {
	var req registerRequest
	if e := decodeBody(r, &req); e != nil {
		return nil, e
	}
	ak, err := crypto.NewAccountKey(req.AccountKey)
	if err != nil {
		return nil, errInvalidKey
	}
	l, e := verifiedList(req.DeviceList, ak.ID())
	if e != nil {
		return nil, e
	}
	if len(l.Devices) != 1 {
		return nil, errInvalidDeviceList
	}
	dev := l.Devices[0]
	keys, e := req.PreKeys.parse(dev.Identity)
	if e != nil {
		return nil, e
	}
	if keys.SignedPreKey == nil || keys.LastResort == nil {
		return nil, errInvalidRequest
	}
	return &registration{account: accountRecord(l, req.DeviceList), device: dev.ID, keys: keys}, nil
}

// handleRegister registers an account with its first device.
func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) {
	reg, e := parseRegistration(r)
	if e != nil {
		writeError(w, e)
		return
	}
	if err := s.store.CreateAccount(r.Context(), reg.account, reg.device, reg.keys); err != nil {
		if e := storeError(err); e != nil {
			writeError(w, e)
			return
		}
		s.internal(w, r, "register", err)
		return
	}
	writeJSON(w, http.StatusCreated, registerResponse{Account: reg.account.ID.String(), Device: reg.device})
}

// storeError maps the store's sentinel errors to API errors, or nil for an
// internal error.
func storeError(err error) *apiError {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errNotFound
	case errors.Is(err, store.ErrExists):
		return errAccountExists
	case errors.Is(err, store.ErrVersion):
		return errStaleDeviceList
	case errors.Is(err, store.ErrDuplicatePreKey):
		return errDuplicatePreKey
	case errors.Is(err, store.ErrTooManyPreKeys):
		return errPreKeyLimit
	case errors.Is(err, store.ErrHandleTaken):
		return errHandleTaken
	}
	return nil
}

type deviceListResponse struct {
	Account    string `json:"account"`
	Version    uint64 `json:"version"`
	DeviceList []byte `json:"device_list"`
}

// handleGetDeviceList serves the signed device list.
func (s *Server) handleGetDeviceList(w http.ResponseWriter, r *http.Request) {
	id, e := accountParam(r)
	if e != nil {
		writeError(w, e)
		return
	}
	a, err := s.store.Account(r.Context(), id)
	if err != nil {
		if e := storeError(err); e != nil {
			writeError(w, e)
			return
		}
		s.internal(w, r, "get device list", err)
		return
	}
	writeJSON(w, http.StatusOK, deviceListResponse{Account: id.String(), Version: a.Version, DeviceList: a.DeviceList})
}

type deviceIDsResponse struct {
	Account string            `json:"account"`
	Devices []crypto.DeviceID `json:"devices"`
}

// handleDeviceIDs serves the account's device IDs: the information of
// DeviceIDs, for a relay in another process.
func (s *Server) handleDeviceIDs(w http.ResponseWriter, r *http.Request) {
	id, e := accountParam(r)
	if e != nil {
		writeError(w, e)
		return
	}
	ids, err := s.DeviceIDs(r.Context(), id)
	if errors.Is(err, ErrUnknownAccount) {
		writeError(w, errNotFound)
		return
	} else if err != nil {
		s.internal(w, r, "device IDs", err)
		return
	}
	writeJSON(w, http.StatusOK, deviceIDsResponse{Account: id.String(), Devices: ids})
}

type putDeviceListRequest struct {
	DeviceList []byte `json:"device_list"`
}

// parseDeviceListUpdate decodes and verifies a new device list for id.
func parseDeviceListUpdate(r *http.Request, id crypto.AccountID) (*crypto.DeviceList, []byte, *apiError) {
	var req putDeviceListRequest
	if e := decodeBody(r, &req); e != nil {
		return nil, nil, e
	}
	l, e := verifiedList(req.DeviceList, id)
	if e != nil {
		return nil, nil, e
	}
	return l, req.DeviceList, nil
}

// handlePutDeviceList publishes a new device list. The submitter is an
// authenticated device of the current list; the new list is signed by the
// account key and its version grows. Removed devices lose their prekeys
// (in the same write), their tokens (checked on every request) and their
// relay queues (through the Purger).
func (s *Server) handlePutDeviceList(w http.ResponseWriter, r *http.Request) {
	id, e := accountParam(r)
	if e != nil {
		writeError(w, e)
		return
	}
	if !s.sameAccount(w, r, id) {
		return
	}
	l, signed, e := parseDeviceListUpdate(r, id)
	if e != nil {
		writeError(w, e)
		return
	}
	if l.Version <= authFrom(r.Context()).Account.Version {
		writeError(w, errStaleDeviceList)
		return
	}
	removed, err := s.store.ReplaceDeviceList(r.Context(), accountRecord(l, signed))
	if err != nil {
		if e := storeError(err); e != nil {
			writeError(w, e)
			return
		}
		s.internal(w, r, "replace device list", err)
		return
	}
	now := s.cfg.Now()
	for _, d := range removed {
		addr := crypto.Address{Account: id, Device: d}
		s.revoked.revoke(addr, now)
		s.purgeDevice(r, addr)
	}
	writeJSON(w, http.StatusOK, deviceListResponse{Account: id.String(), Version: l.Version, DeviceList: signed})
}

func (s *Server) purgeDevice(r *http.Request, addr crypto.Address) {
	if s.cfg.Purger == nil {
		return
	}
	if err := s.cfg.Purger.PurgeDevice(r.Context(), addr); err != nil {
		// The list is already authoritative: the relay refuses the device
		// and its queue expires; count and log rather than fail the update.
		s.metrics.purgeFailures.Inc()
		s.log.Error("purge device failed", "err", err)
	}
}

// handleDeleteAccount erases the account: the relay's queues and blobs
// first (so that a failure leaves the account intact and the client can
// retry), then everything the key server holds, then the relay again for
// messages that arrived in between.
// deleteAccountRequest carries the account key's signature of a login
// challenge under the "account deletion" label.
type deleteAccountRequest struct {
	Challenge []byte `json:"challenge"`
	Signature []byte `json:"signature"`
}

func (s *Server) handleDeleteAccount(w http.ResponseWriter, r *http.Request) {
	id, e := accountParam(r)
	if e != nil {
		writeError(w, e)
		return
	}
	if !s.sameAccount(w, r, id) {
		return
	}
	// A device token alone is not enough: deletion is signed by the
	// account key over a fresh challenge (PROTOCOL.md §2.6), so that a
	// linked or stolen device cannot erase the account.
	var req deleteAccountRequest
	if e := decodeBody(r, &req); e != nil {
		writeError(w, e)
		return
	}
	if len(req.Challenge) != challengeSize || len(req.Signature) != crypto.SignatureSize {
		writeError(w, errInvalidRequest)
		return
	}
	if !s.challenges.take(req.Challenge, s.cfg.Now()) {
		s.metrics.authFailures.WithLabelValues("challenge").Inc()
		writeError(w, errUnauthorized)
		return
	}
	ak, err := crypto.NewAccountKey(authFrom(r.Context()).Account.Key[:])
	if err != nil || ak.VerifyAccountDeletion(req.Challenge, req.Signature) != nil {
		s.metrics.authFailures.WithLabelValues("deletion_signature").Inc()
		writeError(w, errUnauthorized)
		return
	}
	if s.cfg.Purger != nil {
		if err := s.cfg.Purger.PurgeAccount(r.Context(), id); err != nil {
			s.metrics.purgeFailures.Inc()
			s.internal(w, r, "purge account", err)
			return
		}
	}
	if err := s.store.DeleteAccount(r.Context(), id); err != nil {
		if e := storeError(err); e != nil {
			writeError(w, e)
			return
		}
		s.internal(w, r, "delete account", err)
		return
	}
	// Tokens of the deleted account stay dead if it is registered again.
	now := s.cfg.Now()
	for _, d := range authFrom(r.Context()).Account.Devices {
		s.revoked.revoke(crypto.Address{Account: id, Device: d.ID}, now)
	}
	if s.cfg.Purger != nil {
		if err := s.cfg.Purger.PurgeAccount(r.Context(), id); err != nil {
			s.metrics.purgeFailures.Inc()
			s.log.Error("second purge of deleted account failed", "err", err)
		}
	}
	w.WriteHeader(http.StatusNoContent)
}
