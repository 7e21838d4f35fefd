package keyserver

import (
	"container/list"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limiter is a set of token buckets keyed by client (IP or account), with
// a bounded table: past max keys, the least recently seen client's bucket
// is dropped. A dropped client restarts with a full bucket, which is the
// price of a bounded table; max is sized so that this needs more distinct
// clients than an attacker can cheaply present within one refill period.
type limiter struct {
	name  string
	rate  Rate
	max   int
	onHit func(name string)

	mu    sync.Mutex
	byKey map[string]*list.Element // of *bucket
	lru   list.List                // front = most recently seen
}

type bucket struct {
	key string
	lim *rate.Limiter
}

func newLimiter(name string, r Rate, max int, onHit func(string)) *limiter {
	return &limiter{name: name, rate: r, max: max, onHit: onHit, byKey: make(map[string]*list.Element)}
}

// allow takes one token for key at now. When none is left it returns
// false and how long until one will be.
func (l *limiter) allow(key string, now time.Time) (bool, time.Duration) {
	if l.rate.Limit == rate.Inf {
		return true, 0
	}
	l.mu.Lock()
	var b *bucket
	if e, ok := l.byKey[key]; ok {
		l.lru.MoveToFront(e)
		b = e.Value.(*bucket)
	} else {
		if len(l.byKey) >= l.max {
			old := l.lru.Back()
			l.lru.Remove(old)
			delete(l.byKey, old.Value.(*bucket).key)
		}
		b = &bucket{key: key, lim: rate.NewLimiter(l.rate.Limit, l.rate.Burst)}
		l.byKey[key] = l.lru.PushFront(b)
	}
	res := b.lim.ReserveN(now, 1)
	l.mu.Unlock()
	if !res.OK() {
		l.onHit(l.name)
		return false, time.Minute
	}
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		l.onHit(l.name)
		return false, d
	}
	return true, 0
}

// check is allow returning the 429 error to answer.
func (l *limiter) check(key string, now time.Time) *apiError {
	ok, wait := l.allow(key, now)
	if ok {
		return nil
	}
	e := *errRateLimited
	e.retryAfter = wait
	return &e
}

// size returns the number of tracked clients.
func (l *limiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.byKey)
}
