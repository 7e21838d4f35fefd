package keyserver

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// apiError is an error answered to the client: a status and a stable code
// with a fixed message. It never carries an internal error's text.
type apiError struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	// retryAfter sets Retry-After on 429 and 503 answers.
	retryAfter time.Duration
}

func (e *apiError) Error() string { return "keyserver: " + e.Code + ": " + e.Message }

func newError(status int, code, message string) *apiError {
	return &apiError{Status: status, Code: code, Message: message}
}

// Stable error codes, listed in API.md.
var (
	errMalformedJSON     = newError(http.StatusBadRequest, "malformed_json", "request body is not the expected JSON")
	errInvalidRequest    = newError(http.StatusBadRequest, "invalid_request", "request is missing a field or has an invalid value")
	errInvalidAccountID  = newError(http.StatusBadRequest, "invalid_account_id", "invalid account ID")
	errInvalidDeviceID   = newError(http.StatusBadRequest, "invalid_device_id", "invalid device ID")
	errInvalidKey        = newError(http.StatusBadRequest, "invalid_key", "invalid public key")
	errInvalidDeviceList = newError(http.StatusBadRequest, "invalid_device_list", "invalid device list")
	errInvalidPreKey     = newError(http.StatusBadRequest, "invalid_prekey", "invalid prekey")
	errBadSignature      = newError(http.StatusBadRequest, "bad_signature", "signature does not verify")
	errAccountMismatch   = newError(http.StatusBadRequest, "account_mismatch", "key or list belongs to another account")
	errTooManyPreKeys    = newError(http.StatusBadRequest, "too_many_prekeys", "too many prekeys in one upload")
	errInvalidHandle     = newError(http.StatusBadRequest, "invalid_handle", "handle does not follow the handle rules")
	errInvalidAddress    = newError(http.StatusBadRequest, "invalid_address", "invalid provisioning address")
	errUnauthorized      = newError(http.StatusUnauthorized, "unauthorized", "missing, invalid or expired credentials")
	errForbidden         = newError(http.StatusForbidden, "forbidden", "not allowed for this account")
	errNotFound          = newError(http.StatusNotFound, "not_found", "not found")
	errMethodNotAllowed  = newError(http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed")
	errAccountExists     = newError(http.StatusConflict, "account_exists", "account already registered")
	errStaleDeviceList   = newError(http.StatusConflict, "stale_device_list", "device list version does not grow")
	errDuplicatePreKey   = newError(http.StatusConflict, "duplicate_prekey", "a prekey ID is repeated or already held")
	errPreKeyLimit       = newError(http.StatusConflict, "prekey_limit", "device holds too many one-time prekeys")
	errHandleTaken       = newError(http.StatusConflict, "handle_taken", "handle, or one that looks like it, is taken")
	errAlreadyPosted     = newError(http.StatusConflict, "already_posted", "provisioning message already posted")
	errBodyTooLarge      = newError(http.StatusRequestEntityTooLarge, "body_too_large", "request body too large")
	errUnsupportedType   = newError(http.StatusUnsupportedMediaType, "unsupported_media_type", "request body must be application/json")
	errRateLimited       = newError(http.StatusTooManyRequests, "rate_limited", "too many requests")
	errInternal          = newError(http.StatusInternalServerError, "internal", "internal error")
	errBusy              = newError(http.StatusServiceUnavailable, "busy", "server busy, retry later")
	// errUnavailable answers a request the store cannot serve because of a
	// storage failure (a full disk); the store reopens itself once the
	// disk takes writes again, so clients retry.
	errUnavailable = &apiError{Status: http.StatusServiceUnavailable, Code: "unavailable",
		Message: "storage temporarily unavailable, retry later", retryAfter: unavailableRetryAfter}
)

// unavailableRetryAfter is the Retry-After of errUnavailable: about the
// store's first wait before it reopens.
const unavailableRetryAfter = 2 * time.Second

// writeJSON answers v with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers e as {"error":{"code","message"}}.
func writeError(w http.ResponseWriter, e *apiError) {
	if e.Status == http.StatusTooManyRequests || e.retryAfter > 0 {
		secs := int((e.retryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
	}
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="sotto"`)
	}
	writeJSON(w, e.Status, struct {
		Error *apiError `json:"error"`
	}{e})
}

// decodeJSON decodes exactly one JSON value of the expected shape from r:
// unknown fields, trailing data and oversized bodies are refused.
func decodeJSON(r io.Reader, v any) *apiError {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return errBodyTooLarge
		}
		return errMalformedJSON
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return errBodyTooLarge
		}
		return errMalformedJSON
	}
	return nil
}

// decodeBody checks the content type and decodes the request body.
func decodeBody(r *http.Request, v any) *apiError {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, _ := strings.Cut(ct, ";")
		if !strings.EqualFold(strings.TrimSpace(mt), "application/json") {
			return errUnsupportedType
		}
	}
	return decodeJSON(r.Body, v)
}
