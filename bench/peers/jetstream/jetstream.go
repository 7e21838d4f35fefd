// Package jetstream benchmarks NATS JetStream (nats-server embedded, file storage) on Sotto's
// relay workload: store-and-forward of per-device queues. Each of 1,000 device subjects has its
// own consumer that acknowledges every message; messages are 256 B, published asynchronously with
// acknowledgements. It is the reference the relay's durable throughput and latency are set
// against, in both the server's default sync mode (fsync every 2 minutes) and SyncAlways.
package jetstream

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config is one benchmark setup.
type Config struct {
	Dir        string // store directory (created by the caller)
	SyncAlways bool   // fsync before each publish acknowledgement
	Devices    int    // device subjects, one consumer each
	SubConns   int    // client connections the consumers are spread over
	// Shared replaces the per-device consumers with one consumer on all device subjects (what a
	// relay would do if devices did not each need their own queue position).
	Shared bool
	// Retention is the stream policy: LimitsPolicy keeps acknowledged messages (NATS default),
	// WorkQueuePolicy deletes each message once its consumer acknowledges it.
	Retention jetstream.RetentionPolicy
}

// Env is a running embedded server with a work-queue stream and one consumer per device.
type Env struct {
	srv      *server.Server
	pub      *nats.Conn
	js       jetstream.JetStream
	subs     []*nats.Conn
	consumes []jetstream.ConsumeContext
	devices  int
	subjects []string

	mu      sync.Mutex
	onMsg   func(data []byte)
	acked   atomic.Int64
	pubErrs atomic.Int64
}

// Start runs the server and creates the stream and consumers. Every delivered message is passed
// to the handler set with SetHandler and then acknowledged.
func Start(ctx context.Context, cfg Config) (*Env, error) {
	opts := &server.Options{
		Host:       "127.0.0.1",
		Port:       -1,
		JetStream:  true,
		StoreDir:   cfg.Dir,
		SyncAlways: cfg.SyncAlways,
		NoLog:      true,
		NoSigs:     true,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("jetstream: new server: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("jetstream: server not ready")
	}
	e := &Env{srv: srv, devices: cfg.Devices}
	fail := func(err error) (*Env, error) {
		e.Close()
		return nil, err
	}
	if e.pub, err = nats.Connect(srv.ClientURL()); err != nil {
		return fail(fmt.Errorf("jetstream: connect: %w", err))
	}
	e.js, err = jetstream.New(e.pub,
		jetstream.WithPublishAsyncMaxPending(1024),
		jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) { e.pubErrs.Add(1) }))
	if err != nil {
		return fail(fmt.Errorf("jetstream: client: %w", err))
	}
	if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{
		Name:      "DEV",
		Subjects:  []string{"dev.*"},
		Storage:   jetstream.FileStorage,
		Retention: cfg.Retention,
	}); err != nil {
		return fail(fmt.Errorf("jetstream: create stream: %w", err))
	}
	for range max(cfg.SubConns, 1) {
		nc, err := nats.Connect(srv.ClientURL())
		if err != nil {
			return fail(fmt.Errorf("jetstream: connect consumer: %w", err))
		}
		e.subs = append(e.subs, nc)
	}
	handler := func(m jetstream.Msg) {
		e.mu.Lock()
		f := e.onMsg
		e.mu.Unlock()
		if f != nil {
			f(m.Data())
		}
		if err := m.Ack(); err == nil {
			e.acked.Add(1)
		}
	}
	for d := range cfg.Devices {
		e.subjects = append(e.subjects, "dev."+strconv.Itoa(d))
	}
	nCons := cfg.Devices
	if cfg.Shared {
		nCons = 1
	}
	for d := range nCons {
		subj := e.subjects[d]
		if cfg.Shared {
			subj = "dev.*"
		}
		cjs, err := jetstream.New(e.subs[d%len(e.subs)])
		if err != nil {
			return fail(fmt.Errorf("jetstream: client: %w", err))
		}
		c, err := cjs.CreateOrUpdateConsumer(ctx, "DEV", jetstream.ConsumerConfig{
			Durable:       "d" + strconv.Itoa(d),
			FilterSubject: subj,
			AckPolicy:     jetstream.AckExplicitPolicy,
			MemoryStorage: true,
		})
		if err != nil {
			return fail(fmt.Errorf("jetstream: create consumer %d: %w", d, err))
		}
		cc, err := c.Consume(handler, jetstream.PullMaxMessages(64))
		if err != nil {
			return fail(fmt.Errorf("jetstream: consume %d: %w", d, err))
		}
		e.consumes = append(e.consumes, cc)
	}
	return e, nil
}

// SetHandler sets the function each delivered message's payload is passed to before its ack.
func (e *Env) SetHandler(f func(data []byte)) {
	e.mu.Lock()
	e.onMsg = f
	e.mu.Unlock()
}

// Acked is the number of messages the consumers have acknowledged so far.
func (e *Env) Acked() int64 { return e.acked.Load() }

// Publish publishes data asynchronously to device i's subject, waiting (not failing) while the
// client's window of unacknowledged publishes is full.
func (e *Env) Publish(i int, data []byte) error {
	for {
		_, err := e.js.PublishAsync(e.subjects[i%e.devices], data, jetstream.WithStallWait(time.Minute))
		if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			continue
		}
		if err != nil {
			return fmt.Errorf("jetstream: publish: %w", err)
		}
		return nil
	}
}

// WaitPublished waits until every publish has been acknowledged by the server.
func (e *Env) WaitPublished(ctx context.Context) error {
	select {
	case <-e.js.PublishAsyncComplete():
	case <-ctx.Done():
		return fmt.Errorf("jetstream: waiting for publish acks: %w", ctx.Err())
	}
	if n := e.pubErrs.Load(); n > 0 {
		return fmt.Errorf("jetstream: %d publishes failed", n)
	}
	return nil
}

// WaitAcked waits until the consumers have acknowledged n messages in total.
func (e *Env) WaitAcked(ctx context.Context, n int64) error {
	for e.acked.Load() < n {
		select {
		case <-ctx.Done():
			return fmt.Errorf("jetstream: %d of %d messages acked: %w", e.acked.Load(), n, ctx.Err())
		case <-time.After(200 * time.Microsecond):
		}
	}
	return nil
}

// Close stops the consumers, the connections and the server.
func (e *Env) Close() {
	for _, c := range e.consumes {
		c.Stop()
	}
	for _, nc := range e.subs {
		nc.Close()
	}
	if e.pub != nil {
		e.pub.Close()
	}
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

// Stamp writes the current time into the first 8 bytes of a payload.
func Stamp(p []byte, t time.Time) { binary.BigEndian.PutUint64(p, uint64(t.UnixNano())) }

// Since reads a Stamp and returns how long ago it was.
func Since(p []byte) time.Duration {
	return time.Duration(time.Now().UnixNano() - int64(binary.BigEndian.Uint64(p)))
}

// Percentile returns the q-quantile (0..1) of sorted durations.
func Percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted)-1) + 0.5)
	return sorted[i]
}

// SortDurations sorts in place.
func SortDurations(d []time.Duration) { sort.Slice(d, func(i, j int) bool { return d[i] < d[j] }) }
