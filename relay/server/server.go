// Package server is the relay's delivery engine: it accepts sends, stores
// them through the relay/store interfaces, streams each device's queue over
// its connection with a bounded window of unacknowledged messages, forwards
// ephemeral messages to connected devices, wakes offline devices through
// their push endpoints, and sweeps expired messages and blobs.
//
// It is not responsible for HTTP or WebSocket details (relay/relayhttp
// adapts them to [Conn] and to the methods here), for the bytes of frames
// (relay/wire), or for durability (relay/store). It never looks inside a
// header or a body.
//
// # Close codes
//
// A connection the server ends is closed with one of the [CloseCode]s:
// 1000 normal, 1001 going away (the relay is shutting down), 1008 policy
// violation (a malformed or misdirected frame), 1011 internal error, 4001
// displaced (another connection of the same device took over), 4002 idle
// (the device did not answer a keepalive ping in time), 4003 removed (the
// device or its account was purged).
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/relay/store"
	"github.com/sotto-im/sotto/relay/wire"
)

// Implementation constants: the defaults of [Config].
const (
	// DefaultWindow bounds the messages delivered to a connection and not
	// yet acknowledged: enough to hide a round trip at full speed, small
	// enough that a slow device holds little of the relay's memory.
	DefaultWindow = 64
	// DefaultTTL is the retention of a message whose sender asked for none.
	DefaultTTL = 30 * 24 * time.Hour
	// MinTTL is the shortest retention: below a second the message would
	// expire before a connected device could acknowledge it.
	MinTTL = time.Second
	// DefaultPingInterval is how often an idle connection is pinged; well
	// under the idle timeouts of common NATs and proxies (60 s and more).
	DefaultPingInterval = 30 * time.Second
	// DefaultPongTimeout is how long a ping may wait for its pong before
	// the connection is considered dead and closed.
	DefaultPongTimeout = 15 * time.Second
	// DefaultSweepInterval is how often expired messages and blobs are
	// deleted; expiry is also enforced at read time, so this only bounds
	// how long expired bytes stay on disk.
	DefaultSweepInterval = time.Minute
	// DefaultPushCoalesce is the least time between two wakeups of the
	// same device: a burst of messages wakes it once.
	DefaultPushCoalesce = 30 * time.Second
	// DefaultPushTimeout bounds one wakeup POST.
	DefaultPushTimeout = 10 * time.Second
	// DefaultBlobTTL is how long an uploaded blob is kept.
	DefaultBlobTTL = 30 * 24 * time.Hour
	// DefaultIdentifiedRate and DefaultIdentifiedBurst rate-limit identified
	// sends per sender account: they are for first contact, not bulk.
	DefaultIdentifiedRate  = 20
	DefaultIdentifiedBurst = 100
	// DefaultSendIdleTimeout is how long an anonymous send-only connection
	// may stay open without a frame before the relay closes it (1000):
	// the HTTP server's idle timeout for keep-alive connections, which is
	// what a sealed sender over HTTP POST would hold.
	DefaultSendIdleTimeout = 2 * time.Minute

	// sendLoopLinger is how long a connection's send loop waits with
	// nothing to do before it stops (the connection then costs only its
	// reader); a device receiving steadily keeps its loop.
	sendLoopLinger = 2 * time.Second
	// outQueueLen bounds the frames (send results, ephemeral messages)
	// waiting for a connection's send loop; ephemeral frames beyond it are
	// dropped and counted.
	outQueueLen = 16
	// pushQueueLen and pushWorkers bound the wakeups waiting and running;
	// a wakeup beyond them is dropped (and counted), never blocking a send.
	pushQueueLen = 1024
	pushWorkers  = 4
)

// Config configures a [Server]. Zero values select the defaults above.
type Config struct {
	Window        int
	DefaultTTL    time.Duration
	MaxTTL        time.Duration // at most wire.MaxTTL seconds
	PingInterval  time.Duration
	PongTimeout   time.Duration
	SweepInterval time.Duration
	// SendIdleTimeout closes an anonymous send-only connection that has
	// sent no frame for this long (checked at each keepalive, so it may
	// stay open up to PingInterval longer).
	SendIdleTimeout time.Duration

	// IdentifiedRate (sends per second) and IdentifiedBurst limit the
	// identified sends of one sender account.
	IdentifiedRate  float64
	IdentifiedBurst int

	// PushHosts lists the hosts wakeups may be sent to: an entry with a
	// port ("push.example.org:8443") matches that host and port, one
	// without matches the host on any port. Empty disables push.
	PushHosts []string
	// PushAllowHTTP allows http:// endpoints (tests, a distributor on the
	// same host); otherwise only https:// is accepted.
	PushAllowHTTP bool
	PushCoalesce  time.Duration
	PushTimeout   time.Duration
	// PushClient sends the wakeups; nil uses a client with PushTimeout.
	// Redirects are never followed.
	PushClient *http.Client

	// BlobTTL is the retention of uploaded blobs. (Their size limit and
	// quota are the blob store's.)
	BlobTTL time.Duration

	// Notifier routes wakeups and ephemeral messages to connections; nil
	// uses an in-process [LocalNotifier].
	Notifier LiveNotifier

	// Now is the clock; nil uses time.Now.
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if c.Window <= 0 {
		c.Window = DefaultWindow
	}
	def(&c.DefaultTTL, DefaultTTL)
	def(&c.MaxTTL, wire.MaxTTL*time.Second)
	if c.MaxTTL > wire.MaxTTL*time.Second {
		c.MaxTTL = wire.MaxTTL * time.Second
	}
	def(&c.PingInterval, DefaultPingInterval)
	def(&c.PongTimeout, DefaultPongTimeout)
	def(&c.SweepInterval, DefaultSweepInterval)
	def(&c.SendIdleTimeout, DefaultSendIdleTimeout)
	def(&c.PushCoalesce, DefaultPushCoalesce)
	def(&c.PushTimeout, DefaultPushTimeout)
	def(&c.BlobTTL, DefaultBlobTTL)
	if c.IdentifiedRate <= 0 {
		c.IdentifiedRate = DefaultIdentifiedRate
	}
	if c.IdentifiedBurst <= 0 {
		c.IdentifiedBurst = DefaultIdentifiedBurst
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Directory tells the relay which devices an account currently has. The
// key server implements it.
type Directory interface {
	// Devices returns the account's current devices, or an error matching
	// ErrUnknownAccount if the account does not exist (or was deleted).
	Devices(ctx context.Context, account crypto.AccountID) ([]crypto.DeviceID, error)
}

// ErrUnknownAccount is returned by a [Directory] for an account that does
// not exist; a send to it is refused with 410 Gone.
var ErrUnknownAccount = errors.New("relay: unknown account")

// Authenticator turns a bearer token into the device it authenticates.
type Authenticator interface {
	// Authenticate returns the queue of the device the token was issued
	// to, or an error if the token is not valid now.
	Authenticate(ctx context.Context, bearer string) (store.QueueID, error)
}

// ErrClosed is returned by [Server.Accept] once Close has begun.
var ErrClosed = errors.New("relay: server closed")

// Server is the relay. Create it with [New]; it is safe for concurrent use.
type Server struct {
	cfg     Config
	queues  store.Queues
	devices store.Devices
	blobs   store.Blobs
	dir     Directory
	auth    Authenticator
	log     *slog.Logger
	m       *metrics
	live    LiveNotifier
	push    *pusher

	ctx    context.Context // canceled by Close: ends every goroutine
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the server started

	mu struct {
		sync.Mutex
		closed bool
		conns  map[*conn]struct{}
	}
	akCache  accessKeyCache
	limiters struct {
		sync.Mutex
		m map[crypto.AccountID]*rate.Limiter
	}
}

// New returns a relay serving the given stores. The Server starts its
// sweeper and push workers at once; stop them with Close, then close the
// stores. logger and reg may be nil (discard logs; metrics on a private
// registry).
func New(cfg Config, queues store.Queues, devices store.Devices, blobs store.Blobs, dir Directory, auth Authenticator, logger *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	if queues == nil || devices == nil || blobs == nil || dir == nil || auth == nil {
		return nil, errors.New("relay: New: nil store, directory or authenticator")
	}
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("relay: metrics: %w", err)
	}
	s := &Server{cfg: cfg, queues: queues, devices: devices, blobs: blobs, dir: dir, auth: auth, log: logger, m: m}
	s.live = cfg.Notifier
	if s.live == nil {
		s.live = NewLocalNotifier()
	}
	s.mu.conns = make(map[*conn]struct{})
	s.limiters.m = make(map[crypto.AccountID]*rate.Limiter)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.push = newPusher(s)
	s.wg.Add(1)
	go s.runSweeper()
	return s, nil
}

// Authenticate checks a bearer token with the configured Authenticator.
func (s *Server) Authenticate(ctx context.Context, bearer string) (store.QueueID, error) {
	q, err := s.auth.Authenticate(ctx, bearer)
	if err != nil {
		return store.QueueID{}, err
	}
	// A token outlives the removal of its device or the deletion of its
	// account by up to its lifetime: refuse it as soon as the directory
	// no longer lists the device. If the directory cannot be reached, the
	// valid token is accepted, so that stored messages still flow while
	// the key server is down.
	devices, derr := s.dir.Devices(ctx, q.Account)
	switch {
	case errors.Is(derr, ErrUnknownAccount):
		return store.QueueID{}, errRevoked
	case derr != nil:
		s.log.Warn("relay: device directory unavailable; accepting a valid token", "err", derr)
	case !slices.Contains(devices, q.Device):
		return store.QueueID{}, errRevoked
	}
	return q, nil
}

// errRevoked reports a valid token whose device or account is gone.
var errRevoked = errors.New("relay: device no longer in its account's device list")

// Close stops accepting connections, closes every connection with "going
// away" (1001), stops the sweeper and the push workers, and waits for all
// of them, or until ctx is done. It does not close the stores.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	already := s.mu.closed
	s.mu.closed = true
	conns := make([]*conn, 0, len(s.mu.conns))
	for c := range s.mu.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	if !already {
		s.log.Info("relay: shutting down", "connections", len(conns))
	}
	for _, c := range conns {
		c.close(CloseGoingAway, "relay shutting down")
	}
	s.cancel()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("relay: close: %w", ctx.Err())
	}
}

// runSweeper deletes expired messages and blobs and prunes the in-memory
// rate-limit and push-coalescing tables.
func (s *Server) runSweeper() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			s.Sweep(s.ctx)
		}
	}
}

// Sweep deletes expired messages and blobs now. The sweeper calls it every
// SweepInterval; it is exported for operators' tools and tests.
func (s *Server) Sweep(ctx context.Context) {
	now := s.cfg.Now()
	n, err := s.queues.Sweep(ctx, now)
	if err != nil {
		s.log.Error("relay: sweep queues", "err", err)
	}
	s.m.expired.Add(float64(n))
	nb, err := s.blobs.Sweep(ctx, now)
	if err != nil {
		s.log.Error("relay: sweep blobs", "err", err)
	}
	s.m.blobsExpired.Add(float64(nb))
	s.limiters.Lock()
	for a, l := range s.limiters.m {
		if l.TokensAt(now) >= float64(s.cfg.IdentifiedBurst) {
			delete(s.limiters.m, a)
		}
	}
	s.limiters.Unlock()
	s.push.prune(now)
}

// allow reports whether an identified send from account may go now.
func (s *Server) allow(account crypto.AccountID) bool {
	s.limiters.Lock()
	l, ok := s.limiters.m[account]
	if !ok {
		l = rate.NewLimiter(rate.Limit(s.cfg.IdentifiedRate), s.cfg.IdentifiedBurst)
		s.limiters.m[account] = l
	}
	s.limiters.Unlock()
	return l.AllowN(s.cfg.Now(), 1)
}

// SetAccessKey registers the account's delivery access key, which
// authorises sealed sends to it; only its SHA-256 is stored.
func (s *Server) SetAccessKey(ctx context.Context, account crypto.AccountID, key [wire.AccessKeySize]byte) error {
	defer s.forgetAccessKey(account)
	if err := s.devices.SetAccessKeyHash(ctx, account, hashAccessKey(key)); err != nil {
		return fmt.Errorf("relay: set access key: %w", err)
	}
	return nil
}

// PurgeDevice closes the device's connection (4003) and deletes everything
// the relay holds for it: its queue, idempotency records, counters and push
// endpoint (and its in-memory wakeup state). The key server calls it when a
// device is removed.
func (s *Server) PurgeDevice(ctx context.Context, q store.QueueID) error {
	s.closeWhere(func(c *conn) bool { return c.q == q })
	if err := s.queues.PurgeDevice(ctx, q); err != nil {
		return fmt.Errorf("relay: purge device: %w", err)
	}
	// Queues and Devices are usually one store, in which case this finds
	// nothing left; it is what erases the records of a separate one.
	if err := s.devices.PurgeDevice(ctx, q); err != nil {
		return fmt.Errorf("relay: purge device: %w", err)
	}
	s.push.forget(func(p store.QueueID) bool { return p == q })
	s.log.Info("relay: purged device", "queue", q.String())
	return nil
}

// PurgeAccount closes the account's connections (4003) and deletes
// everything the relay holds for it: queues, bodies, idempotency records,
// counters, the access key hash, every device's push endpoint, blobs, and
// its in-memory rate and wakeup state. The key server calls it when an
// account is deleted; sends to the account are refused from then on because
// the Directory no longer knows it, and sealed sends also because no access
// key hash is registered any more.
func (s *Server) PurgeAccount(ctx context.Context, account crypto.AccountID) error {
	s.closeWhere(func(c *conn) bool { return c.q.Account == account })
	defer s.forgetAccessKey(account)
	if err := s.queues.PurgeAccount(ctx, account); err != nil {
		return fmt.Errorf("relay: purge account: %w", err)
	}
	if err := s.devices.PurgeAccount(ctx, account); err != nil {
		return fmt.Errorf("relay: purge account: %w", err)
	}
	if err := s.blobs.PurgeAccount(ctx, account); err != nil {
		return fmt.Errorf("relay: purge account: %w", err)
	}
	s.limiters.Lock()
	delete(s.limiters.m, account)
	s.limiters.Unlock()
	s.push.forget(func(p store.QueueID) bool { return p.Account == account })
	s.log.Info("relay: purged account")
	return nil
}

func (s *Server) closeWhere(match func(*conn) bool) {
	s.mu.Lock()
	var victims []*conn
	for c := range s.mu.conns {
		if !c.sendOnly && match(c) {
			victims = append(victims, c)
		}
	}
	s.mu.Unlock()
	for _, c := range victims {
		c.close(CloseRemoved, "device removed")
	}
}
