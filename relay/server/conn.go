package server

// Connection flow
//
// Accept registers the connection and starts run in a new goroutine; the
// HTTP handler that upgraded the WebSocket returns at once, so that an idle
// connection holds no HTTP server state (see relay/relayhttp).
//
// run is the reader: it subscribes the connection with the LiveNotifier
// (displacing an older connection of the same device), starts sendLoop in
// an errgroup, and reads frames until the connection ends:
//
//   - Ack: deletes the message from the store (Queues.Ack), then hands the
//     cursor to sendLoop over acks, which frees a window slot. The delete
//     happens before the hand-off, so a later fetch cannot return the
//     acknowledged message again.
//   - Send: parsed, then stored in a goroutine of the errgroup (at most
//     maxSendsInFlight at once; the reader waits beyond that), whose
//     SendResult goes to sendLoop over out.
//   - a frame type this protocol does not know: ignored; a relay-to-device
//     frame or a malformed frame: the connection is closed with 1008.
//
// sendLoop is the only writer of frames. It owns all delivery state (the
// set of delivered-but-unacknowledged cursors, the fetch position, whether
// the Drained marker went out) so that none of it needs a lock. It fetches
// from the store whenever the queue may hold more than it sent and the
// window has room; it is woken by Wake (a Put landed in the queue: the
// notifier calls it from the sender's goroutine, which never blocks: a
// buffered channel of one plus an atomic maximum priority), by acks, by out
// (send results and ephemeral frames) and by the keepalive ticker. A ping
// runs in its own short-lived goroutine because it waits for the pong,
// which the reader receives.
//
// The connection ends when any of them fails or when close is called
// (displacement, purge, shutdown, ping timeout, protocol violation): close
// records the first close code and closes the WebSocket with it in a
// goroutine, which makes the reader's Read fail; run then cancels the
// errgroup's context, waits for sendLoop and any send or ping goroutines,
// unsubscribes and deregisters. Nothing is lost when a connection dies:
// unacknowledged messages stay in the store and are delivered again on
// the next connection.

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/sotto-im/sotto/relay/store"
	"github.com/sotto-im/sotto/relay/wire"
)

// Conn is what the server needs of a device's connection: whole frames in
// and out, pings and a close with a code. relay/relayhttp adapts a
// WebSocket to it. ReadFrame and WriteFrame are each called from one
// goroutine at a time; Ping and Close may be called concurrently with them.
type Conn interface {
	// ReadFrame returns the next frame. It must refuse frames larger than
	// wire.MaxFrameSize.
	ReadFrame(ctx context.Context) ([]byte, error)
	// WriteFrame writes one frame; the server may reuse frame's memory as
	// soon as it returns.
	WriteFrame(ctx context.Context, frame []byte) error
	// Ping sends a keepalive ping and waits for its pong.
	Ping(ctx context.Context) error
	// Close closes the connection with a close code and a short reason.
	Close(code CloseCode, reason string) error
}

// CloseCode is a WebSocket close status code.
type CloseCode uint16

// Close codes the server uses; see the package documentation.
const (
	CloseNormal    CloseCode = 1000
	CloseGoingAway CloseCode = 1001
	ClosePolicy    CloseCode = 1008
	CloseInternal  CloseCode = 1011
	CloseDisplaced CloseCode = 4001
	CloseIdle      CloseCode = 4002
	CloseRemoved   CloseCode = 4003
)

// Accept serves a device's authenticated connection until it ends. It
// returns at once; the connection runs in goroutines of its own. q is the
// queue the device's token names: a connection can only ever read that
// queue.
func (s *Server) Accept(wc Conn, q store.QueueID) error {
	c := &conn{
		s:      s,
		wc:     wc,
		q:      q,
		wake:   make(chan struct{}, 1),
		acks:   make(chan store.Cursor, 8),
		out:    make(chan []byte, outQueueLen),
		closed: make(chan struct{}),
	}
	c.wakePrio.Store(-1)
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		wc.Close(CloseGoingAway, "relay shutting down")
		return ErrClosed
	}
	s.mu.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go c.run()
	return nil
}

type conn struct {
	s  *Server
	wc Conn
	q  store.QueueID

	wake     chan struct{} // buffered(1): a Put landed since sendLoop last looked
	wakePrio atomic.Int32  // highest priority woken since then, -1 none
	acks     chan store.Cursor
	out      chan []byte // send results and ephemeral frames, in order
	pinging  atomic.Bool
	g        *errgroup.Group

	closeOnce sync.Once
	closed    chan struct{} // closed once the WebSocket close has finished
}

// Wake implements Subscriber.
func (c *conn) Wake(priority uint8) {
	for {
		old := c.wakePrio.Load()
		if int32(priority) <= old || c.wakePrio.CompareAndSwap(old, int32(priority)) {
			break
		}
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Ephemeral implements Subscriber: the frame is queued if there is room
// and dropped (reported) otherwise.
func (c *conn) Ephemeral(frame []byte) bool {
	select {
	case c.out <- frame:
		return true
	default:
		return false
	}
}

// Displace implements Subscriber.
func (c *conn) Displace() {
	c.s.m.displaced.Inc()
	c.close(CloseDisplaced, "displaced by a newer connection")
}

// close closes the WebSocket with code, once; it does not block.
func (c *conn) close(code CloseCode, reason string) {
	c.closeOnce.Do(func() {
		go func() {
			c.wc.Close(code, reason)
			close(c.closed)
		}()
	})
}

// run is the connection's reader; see the comment at the top of the file.
func (c *conn) run() {
	s := c.s
	defer s.wg.Done()
	start := time.Now()
	s.m.connections.Inc()
	unsubscribe := s.live.Subscribe(c.q, c)

	ctx, cancel := context.WithCancel(context.Background())
	g, gctx := errgroup.WithContext(ctx)
	c.g = g
	g.Go(func() error { return c.sendLoop(gctx) })
	err := c.readLoop(gctx)

	code, reason := CloseNormal, ""
	var pe *protocolError
	switch {
	case errors.As(err, &pe):
		code, reason = ClosePolicy, pe.reason
		s.m.dropped.WithLabelValues(dropProtocol).Inc()
	case errors.Is(err, errInternal):
		code, reason = CloseInternal, "internal error"
	}
	c.close(code, reason)
	<-c.closed
	cancel()
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		s.log.Debug("relay: connection send loop ended", "err", err)
	}
	unsubscribe()
	s.mu.Lock()
	delete(s.mu.conns, c)
	s.mu.Unlock()
	s.m.connections.Dec()
	s.m.connectionSeconds.Observe(time.Since(start).Seconds())
}

// protocolError is a device's protocol violation; its reason goes into the
// close frame, so it must be short and must not quote input.
type protocolError struct{ reason string }

func (e *protocolError) Error() string { return "relay: protocol violation: " + e.reason }

var errInternal = errors.New("relay: internal error")

func (c *conn) readLoop(ctx context.Context) error {
	s := c.s
	var sem chan struct{}
	for {
		frame, err := c.wc.ReadFrame(ctx)
		if err != nil {
			return err
		}
		t, err := wire.TypeOf(frame)
		if err != nil {
			return &protocolError{"bad frame"}
		}
		switch t {
		case wire.FrameAck:
			a, err := wire.ParseAck(frame)
			if err != nil {
				return &protocolError{"bad ack frame"}
			}
			if err := s.queues.Ack(ctx, c.q, a.Cursor); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				s.log.Error("relay: ack", "err", err)
				return errInternal
			}
			s.m.acked.Inc()
			select {
			case c.acks <- a.Cursor:
			case <-ctx.Done():
				return ctx.Err()
			}
		case wire.FrameSend:
			m, err := wire.ParseSend(frame)
			if err != nil {
				return &protocolError{"bad send frame"}
			}
			if sem == nil {
				sem = make(chan struct{}, maxSendsInFlight)
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return ctx.Err()
			}
			from := c.q
			c.g.Go(func() error {
				defer func() { <-sem }()
				res := s.Send(ctx, &from, m)
				select {
				case c.out <- res.Marshal():
				case <-ctx.Done():
				}
				return nil
			})
		default:
			if t.Known() {
				return &protocolError{"unexpected " + t.String() + " frame"}
			}
			// A frame type from a newer protocol version: skip it.
			s.m.ignoredFrames.Inc()
		}
	}
}

// sendLoop is the connection's only writer; see the top of the file.
func (c *conn) sendLoop(ctx context.Context) error {
	s := c.s
	window := s.cfg.Window
	inflight := make(map[store.Cursor]struct{})
	var after store.Cursor // fetch position: the last cursor looked at
	lastPrio := -1         // priority of the message at after
	more := true           // the queue may hold messages not yet delivered
	rescan := false        // a message may have landed before after
	drained := false
	ticker := time.NewTicker(s.cfg.PingInterval)
	defer ticker.Stop()
	var buf []byte

	for {
		if more && len(inflight) < window {
			from := after
			if rescan || len(inflight) == 0 {
				// With nothing in flight a scan from the start costs the
				// same, and it also finds a message whose Put committed
				// after a later one's.
				from = store.Cursor{}
				lastPrio = -1
			}
			rescan = false
			free := window - len(inflight)
			limit := free
			for k := range inflight {
				if bytes.Compare(k[:], from[:]) > 0 {
					limit++ // it will come back and be skipped
				}
			}
			msgs, err := s.queues.Fetch(ctx, c.q, from, limit)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				s.log.Error("relay: fetch", "err", err)
				c.close(CloseInternal, "internal error")
				return errInternal
			}
			more = len(msgs) == limit
			now := time.Now()
			for i := range msgs {
				m := &msgs[i]
				if _, ok := inflight[m.Key]; ok {
					after, lastPrio = m.Key, int(m.Priority)
					continue
				}
				if free == 0 {
					more = true
					break
				}
				d := wire.Deliver{Cursor: m.Key, ID: m.ID, Priority: m.Priority,
					StoredMillis: uint64(m.Stored.UnixMilli()), Header: m.Header, Body: m.Body}
				buf = d.Append(buf[:0])
				if err := c.wc.WriteFrame(ctx, buf); err != nil {
					return err
				}
				inflight[m.Key] = struct{}{}
				after, lastPrio = m.Key, int(m.Priority)
				free--
				s.m.delivered.Inc()
				s.m.deliveryLag.Observe(now.Sub(m.Stored).Seconds())
			}
			if !more && !drained {
				drained = true
				if err := c.wc.WriteFrame(ctx, wire.DrainedFrame()); err != nil {
					return err
				}
			}
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.wake:
			more = true
			if p := c.wakePrio.Swap(-1); int(p) > lastPrio {
				rescan = true
			}
		case k := <-c.acks:
			delete(inflight, k)
		case f := <-c.out:
			if err := c.wc.WriteFrame(ctx, f); err != nil {
				return err
			}
		case <-ticker.C:
			if c.pinging.CompareAndSwap(false, true) {
				c.g.Go(func() error {
					defer c.pinging.Store(false)
					pctx, cancel := context.WithTimeout(ctx, s.cfg.PongTimeout)
					defer cancel()
					if err := c.wc.Ping(pctx); err != nil && ctx.Err() == nil {
						s.m.dropped.WithLabelValues(dropIdle).Inc()
						c.close(CloseIdle, "keepalive timeout")
					}
					return nil
				})
			}
		}
	}
}
