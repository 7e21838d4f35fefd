// Package relayhttp is the relay's HTTP face: it routes the device
// WebSocket, sends, access-key and push registrations and blob transfers to
// a relay/server.Server. It owns request parsing, size limits and error
// responses; every decision about messages is the server's.
//
// Errors are JSON, {"error":{"code":"...","message":"..."}}, with the
// status that fits; internal errors are logged by the server and answered
// with a generic message, never echoed.
package relayhttp

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/relay/server"
	"github.com/sotto-im/sotto/relay/store"
	"github.com/sotto-im/sotto/relay/wire"
)

// Request body limits.
const (
	// maxSendBody is the largest Send frame.
	maxSendBody = wire.MaxFrameSize
	// maxSmallJSON bounds the JSON bodies of the registration routes.
	maxSmallJSON = 4096
)

type handler struct{ s *server.Server }

// Handler returns the relay's routes; mount it at the root of the server's
// mux (the paths include /v1).
func Handler(s *server.Server) http.Handler {
	h := &handler{s: s}
	r := chi.NewRouter()
	r.NotFound(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such route")
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed on this route")
	})
	r.Route("/v1/relay", func(r chi.Router) {
		r.Get("/ws", h.serveWS)              // GET /v1/relay/ws - a device's delivery connection (WebSocket, subprotocol sotto.v1, Bearer token)
		r.Get("/ws/send", h.serveSendWS)     // GET /v1/relay/ws/send - anonymous send-only connection for sealed sends (WebSocket, subprotocol sotto.v1, no token)
		r.Put("/access-key", h.putAccessKey) // PUT /v1/relay/access-key - register the account's delivery access key (Bearer token)
		r.Put("/push", h.putPush)            // PUT /v1/relay/push - register the device's push wakeup URL (Bearer token)
		r.Delete("/push", h.deletePush)      // DELETE /v1/relay/push - remove the device's push wakeup URL (Bearer token)
	})
	r.Post("/v1/messages", h.postMessage) // POST /v1/messages - send a message: body is a wire Send frame (Bearer token, or sealed with access keys)
	r.Post("/v1/blobs", h.postBlob)       // POST /v1/blobs - upload an attachment blob of a declared Content-Length (Bearer token)
	r.Get("/v1/blobs/{id}", h.getBlob)    // GET /v1/blobs/{id} - download a blob by its ID, with Range (no token: the ID is the capability)
	return r
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string      `json:"code"`
	Message string      `json:"message"`
	Missing []deviceRef `json:"missing,omitempty"`
	Extra   []deviceRef `json:"extra,omitempty"`
}

type deviceRef struct {
	Account string `json:"account"`
	Device  uint32 `json:"device"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, errorBody{Error: errorDetail{Code: code, Message: message}})
}

// bearer returns the token of an "Authorization: Bearer" header, or "".
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	const prefix = "bearer "
	if len(h) > len(prefix) && strings.EqualFold(h[:len(prefix)], prefix) {
		return strings.TrimSpace(h[len(prefix):])
	}
	return ""
}

// authenticate answers 401 unless the request carries a valid token.
func (h *handler) authenticate(w http.ResponseWriter, r *http.Request) (store.QueueID, bool) {
	tok := bearer(r)
	if tok == "" {
		writeError(w, http.StatusUnauthorized, server.CodeUnauthorized, "a Bearer token is required")
		return store.QueueID{}, false
	}
	q, err := h.s.Authenticate(r.Context(), tok)
	if err != nil {
		writeError(w, http.StatusUnauthorized, server.CodeUnauthorized, "the token is not valid")
		return store.QueueID{}, false
	}
	return q, true
}

// readBody reads a body of at most limit bytes, answering 413 beyond.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, bool) {
	if r.ContentLength > limit {
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", "the request body is too large")
		return nil, false
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", "the request body is too large")
		return nil, false
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, server.CodeBadRequest, "the request body could not be read")
		return nil, false
	}
	return b, true
}

var sendMessages = map[string]string{
	server.CodeBadRequest:        "the send is not valid",
	server.CodeUnauthorized:      "not authorised to send to a recipient",
	server.CodeGone:              "a recipient account does not exist",
	server.CodeMismatchedDevices: "the recipient devices differ from the accounts' current devices",
	server.CodeRateLimited:       "too many identified sends; slow down",
	server.CodeQueueFull:         "a recipient's queue is full",
	server.CodeUnavailable:       "the relay could not store the message; retry later",
}

// POST /v1/messages
func (h *handler) postMessage(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r, maxSendBody)
	if !ok {
		return
	}
	m, err := wire.ParseSend(body)
	if err != nil {
		code, msg := "bad_frame", "the body is not a valid Send frame"
		if errors.Is(err, wire.ErrTooLarge) {
			code, msg = "too_large", "the Send frame exceeds a protocol bound"
		}
		writeError(w, http.StatusBadRequest, code, msg)
		return
	}
	var from *store.QueueID
	if tok := bearer(r); tok != "" {
		q, err := h.s.Authenticate(r.Context(), tok)
		if err != nil {
			writeError(w, http.StatusUnauthorized, server.CodeUnauthorized, "the token is not valid")
			return
		}
		from = &q
	}
	res := h.s.Send(r.Context(), from, m)
	if res.Status == http.StatusOK {
		writeJSON(w, http.StatusOK, map[string]bool{"accepted": true})
		return
	}
	d := errorDetail{Code: res.Code, Message: sendMessages[res.Code]}
	for _, x := range res.Missing {
		d.Missing = append(d.Missing, deviceRef{Account: accountText(x.Account), Device: x.Device})
	}
	for _, x := range res.Extra {
		d.Extra = append(d.Extra, deviceRef{Account: accountText(x.Account), Device: x.Device})
	}
	writeJSON(w, int(res.Status), errorBody{Error: d})
}

// PUT /v1/relay/access-key with {"access_key": base64url of 32 bytes}
func (h *handler) putAccessKey(w http.ResponseWriter, r *http.Request) {
	q, ok := h.authenticate(w, r)
	if !ok {
		return
	}
	var req struct {
		AccessKey string `json:"access_key"`
	}
	if !decodeJSON(w, r, &req) {
		return
	}
	raw, err := base64.RawURLEncoding.DecodeString(req.AccessKey)
	if err != nil || len(raw) != wire.AccessKeySize {
		writeError(w, http.StatusBadRequest, server.CodeBadRequest, "access_key must be 32 bytes in unpadded base64url")
		return
	}
	if err := h.s.SetAccessKey(r.Context(), q.Account, [wire.AccessKeySize]byte(raw)); err != nil {
		writeInternal(w)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// PUT /v1/relay/push with {"url": "https://..."}
func (h *handler) putPush(w http.ResponseWriter, r *http.Request) {
	q, ok := h.authenticate(w, r)
	if !ok {
		return
	}
	var req struct {
		URL string `json:"url"`
	}
	if !decodeJSON(w, r, &req) {
		return
	}
	if req.URL == "" {
		writeError(w, http.StatusBadRequest, server.CodeBadRequest, "url is required (DELETE removes the endpoint)")
		return
	}
	h.setPush(w, r, q, req.URL)
}

// DELETE /v1/relay/push
func (h *handler) deletePush(w http.ResponseWriter, r *http.Request) {
	q, ok := h.authenticate(w, r)
	if !ok {
		return
	}
	h.setPush(w, r, q, "")
}

func (h *handler) setPush(w http.ResponseWriter, r *http.Request, q store.QueueID, url string) {
	err := h.s.SetPushEndpoint(r.Context(), q, url)
	if errors.Is(err, server.ErrPushNotAllowed) {
		writeError(w, http.StatusBadRequest, "push_not_allowed", "the push endpoint is not on an allowed host")
		return
	}
	if err != nil {
		writeInternal(w)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// POST /v1/blobs
func (h *handler) postBlob(w http.ResponseWriter, r *http.Request) {
	q, ok := h.authenticate(w, r)
	if !ok {
		return
	}
	if r.ContentLength < 0 {
		writeError(w, http.StatusLengthRequired, "length_required", "a Content-Length is required")
		return
	}
	id, err := h.s.CreateBlob(r.Context(), q.Account, r.ContentLength, r.Body)
	switch {
	case errors.Is(err, store.ErrTooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", "the blob exceeds the size limit")
	case errors.Is(err, store.ErrQuotaExceeded):
		writeError(w, server.StatusQueueFull, "quota_exceeded", "the account's blob quota is used up")
	case err != nil && r.Context().Err() != nil:
		// The client went away.
	case err != nil:
		writeError(w, http.StatusBadRequest, "bad_upload", "the upload did not match its Content-Length")
	default:
		writeJSON(w, http.StatusCreated, map[string]string{"id": BlobIDText(id)})
	}
}

// GET /v1/blobs/{id}
func (h *handler) getBlob(w http.ResponseWriter, r *http.Request) {
	id, err := ParseBlobID(chi.URLParam(r, "id"))
	if err != nil {
		writeError(w, http.StatusNotFound, "not_found", "no such blob")
		return
	}
	rc, _, err := h.s.OpenBlob(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, "not_found", "no such blob")
		return
	}
	if err != nil {
		writeInternal(w)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Cache-Control", "private, no-store")
	http.ServeContent(&jsonRangeErrors{ResponseWriter: w}, r, "", noModTime, rc)
}

// BlobIDText returns the text form of a blob ID used in URLs: unpadded
// base64url (22 characters).
func BlobIDText(id store.BlobID) string { return base64.RawURLEncoding.EncodeToString(id[:]) }

// ParseBlobID parses the text form of a blob ID.
func ParseBlobID(s string) (store.BlobID, error) {
	var id store.BlobID
	if len(s) != 22 {
		return id, errors.New("relayhttp: bad blob ID")
	}
	n, err := base64.RawURLEncoding.Decode(id[:], []byte(s))
	if err != nil || n != len(id) || BlobIDText(id) != s {
		return store.BlobID{}, errors.New("relayhttp: bad blob ID")
	}
	return id, nil
}

func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	body, ok := readBody(w, r, maxSmallJSON)
	if !ok {
		return false
	}
	if err := json.Unmarshal(body, v); err != nil {
		writeError(w, http.StatusBadRequest, server.CodeBadRequest, "the body is not the expected JSON")
		return false
	}
	return true
}

// writeInternal answers a failure of the relay's own (the server has
// logged it): 503, so that clients retry, and nothing of the cause.
func writeInternal(w http.ResponseWriter) {
	writeError(w, http.StatusServiceUnavailable, server.CodeUnavailable, "the relay could not complete the request; retry later")
}

func accountText(a [wire.AccountSize]byte) string {
	return crypto.AccountID(a).String()
}
