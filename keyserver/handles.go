package keyserver

import (
	"errors"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/sotto-im/sotto/keyserver/store"
)

// Handle rules (API.md "Handles"). A handle is ASCII only, so that no
// letter of another script can pass for a Latin one:
//
//   - an optional leading "@" is dropped; A-Z are folded to a-z;
//   - the result is 3 to 32 characters of a-z, 0-9, "_" and ".";
//   - it starts with a letter, does not end with "." or "_", and has no
//     two separators ("." or "_") in a row;
//   - anything else, including every non-ASCII character (Cyrillic "а",
//     full-width letters, invisible characters), is refused, not mapped.
//
// Within ASCII some handles still look alike ("alice", "a1ice", "al.ice").
// Uniqueness is enforced on a skeleton that maps them together ("0"→"o",
// "1"→"l", "rn"→"m", "vv"→"w", separators dropped): a handle whose skeleton
// another account holds is taken. Lookup is exact: it finds the handle only
// as it was claimed (after case folding).
const (
	MinHandleLen = 3
	MaxHandleLen = 32
)

// NormalizeHandle applies the handle rules, returning the normalized handle
// or false if s is not a valid handle.
func NormalizeHandle(s string) (string, bool) {
	s = strings.TrimPrefix(s, "@")
	if len(s) < MinHandleLen || len(s) > MaxHandleLen {
		return "", false
	}
	b := []byte(s)
	for i, c := range b {
		switch {
		case 'A' <= c && c <= 'Z':
			b[i] = c + ('a' - 'A')
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case c == '.' || c == '_':
			if i == 0 || i == len(b)-1 || b[i-1] == '.' || b[i-1] == '_' {
				return "", false
			}
		default:
			return "", false
		}
	}
	if b[0] < 'a' || b[0] > 'z' {
		return "", false
	}
	return string(b), true
}

// handleSkeleton maps a normalized handle to the form under which
// look-alikes collide.
func handleSkeleton(h string) string {
	var b strings.Builder
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c == '.' || c == '_':
			continue
		case c == '0':
			c = 'o'
		case c == '1':
			c = 'l'
		case c == 'r' && i+1 < len(h) && h[i+1] == 'n':
			c = 'm'
			i++
		case c == 'v' && i+1 < len(h) && h[i+1] == 'v':
			c = 'w'
			i++
		}
		b.WriteByte(c)
	}
	return b.String()
}

type handleRequest struct {
	Handle string `json:"handle"`
}

type handleResponse struct {
	Handle  string `json:"handle"`
	Account string `json:"account,omitempty"`
}

// parseHandleClaim decodes a claim and applies the handle rules.
func parseHandleClaim(r *http.Request) (string, *apiError) {
	var req handleRequest
	if e := decodeBody(r, &req); e != nil {
		return "", e
	}
	h, ok := NormalizeHandle(req.Handle)
	if !ok {
		return "", errInvalidHandle
	}
	return h, nil
}

// handleClaimHandle gives the caller's account a handle, replacing its
// previous one.
func (s *Server) handleClaimHandle(w http.ResponseWriter, r *http.Request) {
	h, e := parseHandleClaim(r)
	if e != nil {
		writeError(w, e)
		return
	}
	id := authFrom(r.Context()).Claims.Account
	if err := s.store.ClaimHandle(r.Context(), id, h, handleSkeleton(h)); err != nil {
		if e := storeError(err); e != nil {
			writeError(w, e)
			return
		}
		s.internal(w, r, "claim handle", err)
		return
	}
	writeJSON(w, http.StatusOK, handleResponse{Handle: h, Account: id.String()})
}

// handleReleaseHandle removes the caller's handle.
func (s *Server) handleReleaseHandle(w http.ResponseWriter, r *http.Request) {
	err := s.store.ReleaseHandle(r.Context(), authFrom(r.Context()).Claims.Account)
	if err != nil {
		if e := storeError(err); e != nil {
			writeError(w, e)
			return
		}
		s.internal(w, r, "release handle", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleLookupHandle finds the account holding exactly the handle.
func (s *Server) handleLookupHandle(w http.ResponseWriter, r *http.Request) {
	h, ok := NormalizeHandle(chi.URLParam(r, "handle"))
	if !ok {
		writeError(w, errInvalidHandle)
		return
	}
	id, err := s.store.LookupHandle(r.Context(), h, handleSkeleton(h))
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, errNotFound)
		return
	} else if err != nil {
		s.internal(w, r, "lookup handle", err)
		return
	}
	writeJSON(w, http.StatusOK, handleResponse{Handle: h, Account: id.String()})
}
