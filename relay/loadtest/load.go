package loadtest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/sync/errgroup"

	"github.com/sotto-im/sotto/relay/wire"
)

// Options configure a load run.
type Options struct {
	// URL is the relay's base URL (http://127.0.0.1:port).
	URL     string
	Fixture Fixture
	// Devices receive: accounts [0, Devices) connect and acknowledge every
	// message at once. Senders send: Senders anonymous send sockets
	// (/v1/relay/ws/send) each keep up to InFlight sends unanswered, every
	// send sealed (with the recipient's access key) to a random receiving
	// device.
	Devices, Senders, InFlight int
	// Rate is the total sends per second; 0 sends as fast as the window
	// allows.
	Rate float64
	// Payload is the body size in bytes (at least 8: it carries the send
	// time).
	Payload int
	// Warmup runs before, and Duration is, the measured interval.
	Warmup, Duration time.Duration
}

// Result is the outcome of a run; it marshals to one JSON line.
type Result struct {
	Mode       string  `json:"mode"`
	Devices    int     `json:"devices"`
	Senders    int     `json:"senders"`
	InFlight   int     `json:"inflight_per_sender"`
	Payload    int     `json:"payload_bytes"`
	TargetRate float64 `json:"target_rate,omitempty"`
	Durable    bool    `json:"durable"`
	Seconds    float64 `json:"seconds"`
	Received   int64   `json:"received"`
	Refused    int64   `json:"refused"`
	MsgsPerSec float64 `json:"msgs_per_sec"`
	P50us      float64 `json:"p50_us"`
	P90us      float64 `json:"p90_us"`
	P99us      float64 `json:"p99_us"`
	Maxus      float64 `json:"max_us"`
	// AcceptP50us and AcceptP99us are the send-to-SendResult latencies:
	// how long the relay took to store a message durably.
	AcceptP50us float64 `json:"accept_p50_us"`
	AcceptP99us float64 `json:"accept_p99_us"`
	// RelayCPUusPerMsg and ClientCPUusPerMsg are the CPU time the relay
	// process and this load generator spent per message received during
	// the measured interval: what the machine's cores bound, independent
	// of how busy the machine was with other work (0 when the relay does
	// not serve MemPath).
	RelayCPUusPerMsg  float64 `json:"relay_cpu_us_per_msg"`
	ClientCPUusPerMsg float64 `json:"client_cpu_us_per_msg"`
}

// dial opens a device connection for account i.
func dial(ctx context.Context, baseURL string, f Fixture, i int) (*websocket.Conn, error) {
	tok, err := f.Token(i, time.Now())
	if err != nil {
		return nil, err
	}
	h := http.Header{}
	h.Set("Authorization", "Bearer "+tok)
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(baseURL, "http")+"/v1/relay/ws",
		&websocket.DialOptions{HTTPHeader: h, Subprotocols: []string{wire.Subprotocol}, CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return nil, fmt.Errorf("loadtest: dial device %d: %w", i, err)
	}
	c.SetReadLimit(wire.MaxFrameSize)
	return c, nil
}

// dialSenders opens n anonymous send-only connections, as clients send
// sealed messages: no token, so nothing ties them to an account.
func dialSenders(ctx context.Context, baseURL string, n int) ([]*websocket.Conn, error) {
	conns := make([]*websocket.Conn, n)
	for i := range n {
		c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(baseURL, "http")+"/v1/relay/ws/send",
			&websocket.DialOptions{Subprotocols: []string{wire.Subprotocol}, CompressionMode: websocket.CompressionDisabled})
		if err != nil {
			for _, c := range conns[:i] {
				c.CloseNow()
			}
			return nil, fmt.Errorf("loadtest: dial send socket %d: %w", i, err)
		}
		c.SetReadLimit(wire.MaxFrameSize)
		conns[i] = c
	}
	return conns, nil
}

// dialAll opens n connections for accounts [first, first+n), 64 at a time.
func dialAll(ctx context.Context, baseURL string, f Fixture, first, n int) ([]*websocket.Conn, error) {
	conns := make([]*websocket.Conn, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(64)
	for i := range n {
		g.Go(func() error {
			c, err := dial(gctx, baseURL, f, first+i)
			conns[i] = c
			return err
		})
	}
	if err := g.Wait(); err != nil {
		for _, c := range conns {
			if c != nil {
				c.CloseNow()
			}
		}
		return nil, err
	}
	return conns, nil
}

// Run performs one load run against the relay at o.URL.
func Run(ctx context.Context, o Options) (Result, error) {
	if o.Payload < 8 {
		o.Payload = 8
	}
	res := Result{Mode: "throughput", Devices: o.Devices, Senders: o.Senders, InFlight: o.InFlight, Payload: o.Payload, Durable: true}
	if o.Rate > 0 {
		res.Mode, res.TargetRate = "latency", o.Rate
	}
	start := time.Now()
	runID := rand.Uint32()
	var measuring atomic.Bool
	var received, refused atomic.Int64

	receivers, err := dialAll(ctx, o.URL, o.Fixture, 0, o.Devices)
	if err != nil {
		return res, err
	}
	senders, err := dialSenders(ctx, o.URL, o.Senders)
	if err != nil {
		for _, c := range receivers {
			c.CloseNow()
		}
		return res, err
	}
	// Reads and writes use a context that is never canceled (a cancelable
	// one costs an allocation per call); closing the connections at the
	// end unblocks them.
	bg := context.Background()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	lat := make([][]time.Duration, len(receivers))
	drained := make(chan struct{}, len(receivers))

	// Receivers: acknowledge every Deliver, record its latency.
	for i, c := range receivers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ack := make([]byte, 0, 16)
			for {
				_, f, err := c.Read(bg)
				if err != nil {
					return
				}
				switch wire.FrameType(f[0]) {
				case wire.FrameDrained:
					drained <- struct{}{}
				case wire.FrameDeliver:
					d, err := wire.ParseDeliver(f)
					if err != nil || len(d.Body) < 8 {
						continue
					}
					sent := time.Duration(binary.BigEndian.Uint64(d.Body))
					if measuring.Load() {
						lat[i] = append(lat[i], time.Since(start)-sent)
						received.Add(1)
					}
					ack = (&wire.Ack{Cursor: d.Cursor}).Append(ack[:0])
					if err := c.Write(bg, websocket.MessageBinary, ack); err != nil {
						return
					}
				}
			}
		}()
	}
	// Senders: keep up to InFlight sends unanswered, paced if Rate > 0.
	var perSender time.Duration
	if o.Rate > 0 {
		perSender = time.Duration(float64(time.Second) * float64(o.Senders) / o.Rate)
	}
	acceptLat := make([][]time.Duration, len(senders))
	for si, c := range senders {
		slots := make(chan struct{}, o.InFlight)
		var sentAt sync.Map // request ID → time.Duration since start
		wg.Add(2)
		go func() { // results
			defer wg.Done()
			for {
				_, f, err := c.Read(bg)
				if err != nil {
					return
				}
				switch wire.FrameType(f[0]) {
				case wire.FrameSendResult:
					r, err := wire.ParseSendResult(f)
					if err == nil && r.Status != 200 && measuring.Load() {
						refused.Add(1)
					}
					if err == nil {
						if t, ok := sentAt.LoadAndDelete(r.RequestID); ok && measuring.Load() {
							acceptLat[si] = append(acceptLat[si], time.Since(start)-t.(time.Duration))
						}
					}
					select {
					case <-slots:
					default:
					}
				}
			}
		}()
		go func() { // sends
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(si), 1))
			body := make([]byte, o.Payload)
			var buf []byte
			next := time.Now()
			for seq := uint64(0); ; seq++ {
				select {
				case slots <- struct{}{}:
				case <-runCtx.Done():
					return
				}
				if perSender > 0 {
					next = next.Add(perSender)
					if d := time.Until(next); d > 0 {
						t := time.NewTimer(d)
						select {
						case <-t.C:
						case <-runCtx.Done():
							t.Stop()
							return
						}
					}
				}
				to := rng.IntN(o.Devices)
				m := wire.Send{RequestID: uint32(seq), Sealed: true, Body: body,
					Accounts: []wire.SendAccount{{Account: o.Fixture.Account(to), AccessKey: o.Fixture.AccessKey(to), Devices: []wire.SendDevice{{Device: 1}}}}}
				// Unique across runs against the same relay: a repeated ID
				// would be taken for a retry and not delivered again.
				binary.BigEndian.PutUint32(m.ID[:], runID)
				binary.BigEndian.PutUint32(m.ID[4:], uint32(si))
				binary.BigEndian.PutUint64(m.ID[8:], seq)
				now := time.Since(start)
				binary.BigEndian.PutUint64(body, uint64(now))
				sentAt.Store(uint32(seq), now)
				buf = m.Append(buf[:0])
				if err := c.Write(bg, websocket.MessageBinary, buf); err != nil {
					return
				}
			}
		}()
	}
	// Wait for every connection's Drained marker before sending counts.
	for range len(receivers) {
		select {
		case <-drained:
		case <-time.After(30 * time.Second):
			stop()
			for _, c := range append(receivers, senders...) {
				c.CloseNow()
			}
			wg.Wait()
			return res, errors.New("loadtest: connections did not drain within 30s")
		}
	}
	sleep(runCtx, o.Warmup)
	relay0, relayErr := getStats(ctx, o.URL+MemPath+"?gc=0")
	client0 := cpuSeconds()
	measuring.Store(true)
	t0 := time.Now()
	sleep(runCtx, o.Duration)
	measuring.Store(false)
	elapsed := time.Since(t0)
	client1 := cpuSeconds()
	relay1, err1 := getStats(ctx, o.URL+MemPath+"?gc=0")
	stop()
	for _, c := range append(receivers, senders...) {
		c.CloseNow()
	}
	wg.Wait()

	var all, acc []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	for _, l := range acceptLat {
		acc = append(acc, l...)
	}
	slices.Sort(all)
	slices.Sort(acc)
	if len(acc) > 0 {
		res.AcceptP50us = float64(acc[len(acc)/2].Nanoseconds()) / 1e3
		res.AcceptP99us = float64(acc[min(len(acc)-1, len(acc)*99/100)].Nanoseconds()) / 1e3
	}
	res.Seconds = elapsed.Seconds()
	res.Received = received.Load()
	res.Refused = refused.Load()
	res.MsgsPerSec = float64(res.Received) / elapsed.Seconds()
	if res.Received > 0 {
		perMsg := func(s float64) float64 { return s * 1e6 / float64(res.Received) }
		res.ClientCPUusPerMsg = perMsg(client1 - client0)
		if relayErr == nil && err1 == nil {
			res.RelayCPUusPerMsg = perMsg(relay1.CPUSeconds - relay0.CPUSeconds)
		}
	}
	us := func(q float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[min(len(all)-1, int(q*float64(len(all))))].Nanoseconds()) / 1e3
	}
	res.P50us, res.P90us, res.P99us = us(0.50), us(0.90), us(0.99)
	if len(all) > 0 {
		res.Maxus = float64(all[len(all)-1].Nanoseconds()) / 1e3
	}
	return res, ctx.Err()
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
