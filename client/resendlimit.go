package client

import (
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/internal/boundedmap"
)

// resendLimits bounds how often each device may ask this one to send
// messages again (content.KindResendRequest). Answering costs a history
// lookup, for a batch envelope a scan of the conversation's latest
// messages (apply.go), and encryption afresh; without a bound a hostile
// contact could demand that work without end. A device that lost its
// session asks once per envelope that fails to decrypt, so the burst
// covers a backlog: since the outbox batches (PROTOCOL.md §13.4), a few
// hundred envelopes carry thousands of messages.
type resendLimits struct {
	once sync.Once
	m    *boundedmap.Map[crypto.Address, *rate.Limiter]
}

const (
	resendRate        = 10  // requests a second per requesting device, sustained
	resendBurst       = 256 // requests at once per requesting device
	maxResendLimiters = 1024
)

// allow reports whether a resend request from device from, received at
// now, is answered. Requests are handled one at a time (under cryptoMu),
// so a limiter is never created twice for one device; an evicted one
// starts again full.
func (r *resendLimits) allow(from crypto.Address, now time.Time) bool {
	r.once.Do(func() { r.m = boundedmap.New[crypto.Address, *rate.Limiter](maxResendLimiters) })
	l, ok := r.m.Get(from)
	if !ok {
		l = rate.NewLimiter(resendRate, resendBurst)
		r.m.Put(from, l)
	}
	return l.AllowN(now, 1)
}
