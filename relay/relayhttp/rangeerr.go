package relayhttp

import (
	"net/http"
	"time"
)

// noModTime makes http.ServeContent skip Last-Modified: blobs are
// immutable and their age is nobody's business.
var noModTime time.Time

// jsonRangeErrors turns the plain-text error that http.ServeContent writes
// for an unsatisfiable Range (416) into the relay's JSON error shape.
type jsonRangeErrors struct {
	http.ResponseWriter
	swallow bool
}

func (w *jsonRangeErrors) WriteHeader(status int) {
	if status == http.StatusRequestedRangeNotSatisfiable {
		w.swallow = true
		w.Header().Del("Content-Length")
		writeError(w.ResponseWriter, status, "bad_range", "the requested range is not satisfiable")
		return
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *jsonRangeErrors) Write(b []byte) (int, error) {
	if w.swallow {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}
