package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"time"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/relay/store"
	"github.com/sotto-im/sotto/relay/wire"
)

// Error codes of refused sends (wire.SendResult.Code and the "code" of an
// HTTP error body).
const (
	CodeBadRequest        = "bad_request"        // 400: no recipients, a device twice, a bad TTL
	CodeUnauthorized      = "unauthorized"       // 401: no identity, or a wrong or missing access key
	CodeGone              = "gone"               // 410: a recipient account does not exist
	CodeMismatchedDevices = "mismatched_devices" // 409: see Missing and Extra
	CodeRateLimited       = "rate_limited"       // 429: too many identified sends
	CodeQueueFull         = "queue_full"         // 507: a recipient queue is at its quota
	CodeUnavailable       = "unavailable"        // 503: the store failed; retry later
)

// StatusQueueFull is the HTTP status of a send refused because a recipient
// queue is full: 507 Insufficient Storage says that the request was fine and
// that the server cannot store it now.
const StatusQueueFull = http.StatusInsufficientStorage

func result(m *wire.Send, status int, code string) *wire.SendResult {
	return &wire.SendResult{RequestID: m.RequestID, Status: uint16(status), Code: code}
}

func hashAccessKey(key [wire.AccessKeySize]byte) [32]byte { return sha256.Sum256(key[:]) }

// Send stores (or, if ephemeral, forwards) one message for its recipient
// devices and reports the outcome; it never returns a nil result.
//
// from is the authenticated sending device for an identified send, nil for
// a sealed send over HTTP. An identified send needs from and is
// rate-limited per sender account; a sealed send (m.Sealed) is authorised by
// each recipient account's delivery access key instead, whoever sends it.
// Every recipient account must exist (else 410) and the send must name
// exactly its current devices (else 409 with the difference), except that
// an identified sender need not include its own sending device. The body is
// stored once for all recipients, and the result is 200 only once it is
// durable; a retry with the same message ID is accepted again without
// storing anything twice.
func (s *Server) Send(ctx context.Context, from *store.QueueID, m *wire.Send) *wire.SendResult {
	return s.startSend(ctx, from, m)()
}

// startSend checks m and submits its Put, then returns a function that
// waits for the outcome. When the store implements store.OrderedPutter,
// the sends started one after another by one goroutine are stored in that
// order (a connection's reader starts its frames' sends in frame order);
// otherwise the Put runs only in the returned function. A send refused by
// the checks takes no place in the order.
func (s *Server) startSend(ctx context.Context, from *store.QueueID, m *wire.Send) func() *wire.SendResult {
	start := time.Now()
	done := func(res *wire.SendResult) *wire.SendResult {
		s.m.sends.WithLabelValues(codeLabel(res.Code)).Inc()
		if res.Status == http.StatusOK {
			s.m.sendSeconds.Observe(time.Since(start).Seconds())
		}
		return res
	}
	entries, res := s.check(ctx, from, m)
	if res != nil {
		return func() *wire.SendResult { return done(res) }
	}
	var wait func() ([]store.PutResult, error)
	if op, ok := s.queues.(store.OrderedPutter); ok {
		wait = op.StartPut(ctx, m.Body, entries)
	} else {
		wait = func() ([]store.PutResult, error) { return s.queues.Put(ctx, m.Body, entries) }
	}
	return func() *wire.SendResult {
		results, err := wait()
		return done(s.stored(ctx, m, entries, results, err))
	}
}

func codeLabel(code string) string {
	if code == "" {
		return "ok"
	}
	return code
}

// check runs every check of a send before anything is stored and returns
// the entries to store, or the result that refuses the send (or answers an
// ephemeral one, which it has forwarded).
func (s *Server) check(ctx context.Context, from *store.QueueID, m *wire.Send) ([]store.Entry, *wire.SendResult) {
	n := m.Recipients()
	if n == 0 || n > wire.MaxRecipients {
		return nil, result(m, http.StatusBadRequest, CodeBadRequest)
	}
	ttl := time.Duration(m.TTL) * time.Second
	if m.TTL == 0 {
		ttl = s.cfg.DefaultTTL
	}
	if ttl < MinTTL || ttl > s.cfg.MaxTTL {
		return nil, result(m, http.StatusBadRequest, CodeBadRequest)
	}
	if !m.Sealed {
		if from == nil {
			return nil, result(m, http.StatusUnauthorized, CodeUnauthorized)
		}
		if !s.allow(from.Account) {
			return nil, result(m, http.StatusTooManyRequests, CodeRateLimited)
		}
	}

	// Check every account before storing anything: existence, then
	// authorisation (so that an unauthorised sealed sender learns nothing
	// about device lists), then the device lists.
	seen := make(map[crypto.AccountID]struct{}, len(m.Accounts))
	var missing, extra []wire.DeviceRef
	for i := range m.Accounts {
		a := &m.Accounts[i]
		account := crypto.AccountID(a.Account)
		if _, dup := seen[account]; dup {
			return nil, result(m, http.StatusBadRequest, CodeBadRequest)
		}
		seen[account] = struct{}{}
		current, err := s.dir.Devices(ctx, account)
		if errors.Is(err, ErrUnknownAccount) {
			return nil, result(m, http.StatusGone, CodeGone)
		}
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("relay: directory lookup", "err", err)
			}
			return nil, result(m, http.StatusServiceUnavailable, CodeUnavailable)
		}
		if m.Sealed {
			want, ok, err := s.accessKeyHash(ctx, account)
			if err != nil {
				if ctx.Err() == nil {
					s.log.Error("relay: access key lookup", "err", err)
				}
				return nil, result(m, http.StatusServiceUnavailable, CodeUnavailable)
			}
			got := hashAccessKey(a.AccessKey)
			if subtle.ConstantTimeCompare(got[:], want[:]) != 1 || !ok {
				return nil, result(m, http.StatusUnauthorized, CodeUnauthorized)
			}
		}
		named := make(map[crypto.DeviceID]struct{}, len(a.Devices))
		for _, d := range a.Devices {
			id := crypto.DeviceID(d.Device)
			if _, dup := named[id]; dup {
				return nil, result(m, http.StatusBadRequest, CodeBadRequest)
			}
			named[id] = struct{}{}
		}
		known := make(map[crypto.DeviceID]struct{}, len(current))
		for _, id := range current {
			known[id] = struct{}{}
			if _, ok := named[id]; ok {
				continue
			}
			if !m.Sealed && from.Account == account && from.Device == id {
				continue // the sender's own device
			}
			missing = append(missing, wire.DeviceRef{Account: a.Account, Device: uint32(id)})
		}
		for _, d := range a.Devices {
			if _, ok := known[crypto.DeviceID(d.Device)]; !ok {
				extra = append(extra, wire.DeviceRef{Account: a.Account, Device: d.Device})
			}
		}
	}
	if len(missing) > 0 || len(extra) > 0 {
		r := result(m, http.StatusConflict, CodeMismatchedDevices)
		r.Missing, r.Extra = missing, extra
		return nil, r
	}

	if m.Ephemeral {
		s.forwardEphemeral(m)
		return nil, result(m, http.StatusOK, "")
	}

	expires := s.cfg.Now().Add(ttl)
	entries := make([]store.Entry, 0, n)
	for i := range m.Accounts {
		a := &m.Accounts[i]
		for _, d := range a.Devices {
			entries = append(entries, store.Entry{
				Queue:    store.QueueID{Account: crypto.AccountID(a.Account), Device: crypto.DeviceID(d.Device)},
				ID:       m.ID,
				Priority: m.Priority,
				Expires:  expires,
				Header:   d.Header,
			})
		}
	}
	return entries, nil
}

// stored turns the outcome of a send's Put into its result and, once the
// Put is durable, hands the new entries to their devices' connections (or
// push wakeups).
func (s *Server) stored(ctx context.Context, m *wire.Send, entries []store.Entry, results []store.PutResult, err error) *wire.SendResult {
	if errors.Is(err, store.ErrQueueFull) {
		s.m.dropped.WithLabelValues(dropQueueFull).Inc()
		return result(m, StatusQueueFull, CodeQueueFull)
	}
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("relay: put", "err", err)
		}
		return result(m, http.StatusServiceUnavailable, CodeUnavailable)
	}
	for i := range entries {
		if i < len(results) && results[i].Duplicate {
			s.m.duplicates.Inc()
			continue
		}
		s.m.accepted.Inc()
		e := &entries[i]
		sm := &store.Message{Queue: e.Queue, ID: m.ID, Priority: m.Priority, Expires: e.Expires,
			Header: e.Header, Body: m.Body}
		if i < len(results) {
			sm.Key, sm.Stored = results[i].Cursor, results[i].Stored
		}
		if !s.live.Wake(e.Queue, sm) {
			s.push.wake(entries[i].Queue)
		}
	}
	return result(m, http.StatusOK, "")
}

// forwardEphemeral hands an ephemeral message to each recipient that is
// connected now; the others never see it.
func (s *Server) forwardEphemeral(m *wire.Send) {
	for i := range m.Accounts {
		a := &m.Accounts[i]
		for _, d := range a.Devices {
			frame := (&wire.Ephemeral{ID: m.ID, Priority: m.Priority, Header: d.Header, Body: m.Body}).Marshal()
			q := store.QueueID{Account: crypto.AccountID(a.Account), Device: crypto.DeviceID(d.Device)}
			if s.live.Ephemeral(q, frame) {
				s.m.ephemeral.Inc()
			} else {
				s.m.dropped.WithLabelValues(dropEphemeralUndeliv).Inc()
			}
		}
	}
}
