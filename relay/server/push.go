package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/sotto-im/sotto/relay/store"
)

// wakeupBody is what every wakeup carries: the same bytes for every device
// and every message, so that the push service learns nothing but timing.
const wakeupBody = `{"sotto":"wakeup"}`

// maxPushURLLen bounds a registered endpoint URL.
const maxPushURLLen = 2048

// ErrPushNotAllowed is returned by SetPushEndpoint for an endpoint that is
// not an absolute https (or, if allowed, http) URL on a configured host.
var ErrPushNotAllowed = errors.New("relay: push endpoint not allowed")

// pusher sends content-free wakeups to offline devices' push endpoints, at
// most one per device per coalescing window, from a fixed pool of workers
// fed by a bounded queue so that a send never waits for a push service.
type pusher struct {
	s      *Server
	client *http.Client
	jobs   chan store.QueueID
	mu     struct {
		sync.Mutex
		last map[store.QueueID]time.Time // last wakeup attempt per device
	}
}

func newPusher(s *Server) *pusher {
	p := &pusher{s: s, jobs: make(chan store.QueueID, pushQueueLen)}
	p.mu.last = make(map[store.QueueID]time.Time)
	client := s.cfg.PushClient
	if client == nil {
		client = &http.Client{Timeout: s.cfg.PushTimeout}
	}
	// Never follow a redirect: it could lead to a host off the allow-list.
	c := *client
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	p.client = &c
	if len(s.cfg.PushHosts) > 0 {
		for range pushWorkers {
			s.wg.Add(1)
			go p.runWorker()
		}
	}
	return p
}

// allowed reports whether raw is an endpoint wakeups may go to.
func (p *pusher) allowed(raw string) bool {
	if len(raw) > maxPushURLLen {
		return false
	}
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.User != nil || u.Host == "" {
		return false
	}
	if u.Scheme != "https" && !(u.Scheme == "http" && p.s.cfg.PushAllowHTTP) {
		return false
	}
	return slices.ContainsFunc(p.s.cfg.PushHosts, func(h string) bool {
		if _, _, err := net.SplitHostPort(h); err == nil {
			return h == u.Host
		}
		return h == u.Hostname()
	})
}

// wake queues a wakeup for an offline device unless one was attempted
// within the coalescing window; it never blocks.
func (p *pusher) wake(q store.QueueID) {
	if len(p.s.cfg.PushHosts) == 0 {
		return
	}
	now := p.s.cfg.Now()
	p.mu.Lock()
	if last, ok := p.mu.last[q]; ok && now.Sub(last) < p.s.cfg.PushCoalesce {
		p.mu.Unlock()
		p.s.m.push.WithLabelValues("coalesced").Inc()
		return
	}
	p.mu.last[q] = now
	p.mu.Unlock()
	select {
	case p.jobs <- q:
	default:
		p.s.m.dropped.WithLabelValues(dropPushBacklog).Inc()
	}
}

// prune forgets devices whose coalescing window has passed.
func (p *pusher) prune(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for q, t := range p.mu.last {
		if now.Sub(t) >= p.s.cfg.PushCoalesce {
			delete(p.mu.last, q)
		}
	}
}

// forget drops the coalescing state of the devices match selects (purged
// ones).
func (p *pusher) forget(match func(store.QueueID) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for q := range p.mu.last {
		if match(q) {
			delete(p.mu.last, q)
		}
	}
}

func (p *pusher) runWorker() {
	defer p.s.wg.Done()
	for {
		select {
		case <-p.s.ctx.Done():
			return
		case q := <-p.jobs:
			result := p.send(q)
			p.s.m.push.WithLabelValues(result).Inc()
		}
	}
}

// send POSTs one wakeup and returns the outcome for the metrics.
func (p *pusher) send(q store.QueueID) string {
	ctx, cancel := context.WithTimeout(p.s.ctx, p.s.cfg.PushTimeout)
	defer cancel()
	endpoint, err := p.s.devices.PushEndpoint(ctx, q)
	if err != nil {
		p.s.log.Error("relay: push endpoint lookup", "err", err)
		return "error"
	}
	if endpoint == "" {
		return "no_endpoint"
	}
	// The allow-list may have changed since the device registered.
	if !p.allowed(endpoint) {
		return "not_allowed"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader([]byte(wakeupBody)))
	if err != nil {
		return "error"
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("TTL", "86400")
	req.Header.Set("Urgency", "high")
	resp, err := p.client.Do(req)
	if err != nil {
		// The URL is the device's secret capability: log the queue only.
		p.s.log.Debug("relay: push failed", "queue", q.String())
		return "failed"
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return "rejected"
	}
	return "sent"
}

// SetPushEndpoint registers the device's wakeup URL; "" removes it. The URL
// must be https (or http if allowed) on one of the configured PushHosts.
func (s *Server) SetPushEndpoint(ctx context.Context, q store.QueueID, endpoint string) error {
	if endpoint != "" && !s.push.allowed(endpoint) {
		return ErrPushNotAllowed
	}
	if err := s.devices.SetPushEndpoint(ctx, q, endpoint); err != nil {
		return fmt.Errorf("relay: set push endpoint: %w", err)
	}
	return nil
}
