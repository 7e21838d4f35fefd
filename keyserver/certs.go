package keyserver

import (
	"net/http"
	"time"

	"github.com/sotto-im/sotto/crypto"
)

// handleJWKS publishes the token verification keys: the current key and
// the previous ones still valid after a rotation.
func (s *Server) handleJWKS(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.jwks)
}

type trustRootResponse struct {
	TrustRoot   string `json:"trust_root"`
	PublicKey   []byte `json:"public_key"`
	Fingerprint string `json:"fingerprint"`
}

// handleTrustRoot publishes the sender-certificate trust root.
func (s *Server) handleTrustRoot(w http.ResponseWriter, r *http.Request) {
	root := s.TrustRoot()
	writeJSON(w, http.StatusOK, trustRootResponse{TrustRoot: root.String(), PublicKey: root.Bytes(), Fingerprint: root.Fingerprint()})
}

type certificateResponse struct {
	Certificate []byte    `json:"certificate"`
	ExpiresAt   time.Time `json:"expires_at"`
}

// handleCertificate issues a sender certificate for the authenticated
// device, naming the identity key of the stored device list.
func (s *Server) handleCertificate(w http.ResponseWriter, r *http.Request) {
	a := authFrom(r.Context())
	ik, err := crypto.NewIdentityKey(a.Device.Identity[:])
	if err != nil {
		s.internal(w, r, "certificate: stored identity", err)
		return
	}
	addr := crypto.Address{Account: a.Claims.Account, Device: a.Claims.Device}
	c, err := s.cfg.CertificateSigner.Issue(addr, ik, s.cfg.Now().Add(s.cfg.CertificateLifetime))
	if err != nil {
		s.internal(w, r, "certificate: issue", err)
		return
	}
	writeJSON(w, http.StatusOK, certificateResponse{Certificate: c.Bytes(), ExpiresAt: c.Expires})
}
