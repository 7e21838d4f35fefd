package keyserver

import (
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
)

// Device linking (DESIGN.md "Identities"):
//
//	new device                      key server                       primary
//	POST /v1/provisioning      →    random address, 10 minutes
//	shows link code: address, its public key, a one-time secret
//	                                                           ←    scans the code
//	                                PUT /v1/provisioning/{a}   ←    encrypted message (authenticated)
//	GET /v1/provisioning/{a}   →    message, once; address gone
//	                                                                publishes the device list with the new device
//	logs in with its own identity key, uploads its prekeys (POST /v1/prekeys)
//
// The message is ciphertext to the key server. Addresses live in memory:
// a restart costs the person a new link code.

// provisioningAddrSize is the entropy of a provisioning address: it is the
// capability to fetch the message, so it must not be guessable.
const provisioningAddrSize = 16

type provisioningSlot struct {
	expires time.Time
	message []byte // nil until posted
}

type provisioning struct {
	mu sync.Mutex
	m  map[string]*provisioningSlot
}

func (p *provisioning) sweepLocked(now time.Time) {
	for k, v := range p.m {
		if !now.Before(v.expires) {
			delete(p.m, k)
		}
	}
}

type provisioningAddressResponse struct {
	Address   string    `json:"address"`
	ExpiresAt time.Time `json:"expires_at"`
}

// handleNewProvisioning creates a provisioning address.
func (s *Server) handleNewProvisioning(w http.ResponseWriter, r *http.Request) {
	now := s.cfg.Now()
	var b [provisioningAddrSize]byte
	rand.Read(b[:])
	addr := base64.RawURLEncoding.EncodeToString(b[:])
	p := &s.provisioning
	p.mu.Lock()
	if len(p.m) >= MaxProvisioning {
		p.sweepLocked(now)
	}
	full := len(p.m) >= MaxProvisioning
	if !full {
		p.m[addr] = &provisioningSlot{expires: now.Add(ProvisioningLifetime)}
	}
	p.mu.Unlock()
	if full {
		writeError(w, errBusy)
		return
	}
	writeJSON(w, http.StatusCreated, provisioningAddressResponse{Address: addr, ExpiresAt: now.Add(ProvisioningLifetime)})
}

// addressParam parses {address}: exactly the form handleNewProvisioning
// produces.
func addressParam(r *http.Request) (string, *apiError) {
	a := chi.URLParam(r, "address")
	b, err := base64.RawURLEncoding.DecodeString(a)
	if err != nil || len(b) != provisioningAddrSize || base64.RawURLEncoding.EncodeToString(b) != a {
		return "", errInvalidAddress
	}
	return a, nil
}

type provisioningMessage struct {
	Message []byte `json:"message"`
}

// handlePutProvisioning stores the primary's encrypted message for the
// address, once.
func (s *Server) handlePutProvisioning(w http.ResponseWriter, r *http.Request) {
	addr, e := addressParam(r)
	if e != nil {
		writeError(w, e)
		return
	}
	var req provisioningMessage
	if e := decodeBody(r, &req); e != nil {
		writeError(w, e)
		return
	}
	if len(req.Message) == 0 || len(req.Message) > MaxProvisioningMessage {
		writeError(w, errInvalidRequest)
		return
	}
	now := s.cfg.Now()
	p := &s.provisioning
	p.mu.Lock()
	slot, ok := p.m[addr]
	switch {
	case !ok || !now.Before(slot.expires):
		e = errNotFound
	case slot.message != nil:
		e = errAlreadyPosted
	default:
		slot.message = req.Message
	}
	p.mu.Unlock()
	if e != nil {
		writeError(w, e)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleGetProvisioning hands the message to the new device once; 204
// means not posted yet (poll again).
func (s *Server) handleGetProvisioning(w http.ResponseWriter, r *http.Request) {
	addr, e := addressParam(r)
	if e != nil {
		writeError(w, e)
		return
	}
	now := s.cfg.Now()
	p := &s.provisioning
	p.mu.Lock()
	slot, ok := p.m[addr]
	var msg []byte
	if ok && !now.Before(slot.expires) {
		delete(p.m, addr)
		ok = false
	}
	if ok && slot.message != nil {
		msg = slot.message
		delete(p.m, addr)
	}
	p.mu.Unlock()
	switch {
	case !ok:
		writeError(w, errNotFound)
	case msg == nil:
		w.WriteHeader(http.StatusNoContent)
	default:
		writeJSON(w, http.StatusOK, provisioningMessage{Message: msg})
	}
}
