package server

// Connection flow
//
// Accept registers the connection and starts run in a new goroutine; the
// HTTP handler that upgraded the WebSocket returns at once, so that an idle
// connection holds no HTTP server state (see relay/relayhttp).
//
// run is the reader: it subscribes the connection with the LiveNotifier
// (displacing an older connection of the same device), starts sendLoop in
// the connection's errgroup, and reads frames until the connection ends:
//
//   - Ack: deletes the message from the store (Queues.Ack), then hands the
//     cursor to sendLoop over acks, which frees a window slot. The delete
//     happens before the hand-off, so a later fetch cannot return the
//     acknowledged message again.
//   - Send: parsed and checked, and its Put submitted (startSend; with a
//     store.OrderedPutter the Put takes its place in the commit order
//     there), all in the reader, so that a connection's sends are stored
//     in the order of their frames; then a goroutine of the errgroup waits
//     for the Put to be durable and hands the SendResult to sendLoop over
//     out. At most wire.MaxSendsInFlight sends wait at once; the reader
//     stops reading beyond that (backpressure: a client that floods sends
//     costs the relay that many, not more).
//   - a frame type this protocol does not know: ignored; a relay-to-device
//     frame or a malformed frame: the connection is closed with 1008.
//
// sendLoop is the only writer of data frames. It owns all delivery state
// (the set of delivered-but-unacknowledged cursors, the fetch position,
// whether the Drained marker went out; kept in c.d) so that none of it
// needs a lock. It fetches from the store whenever the queue may hold more
// than it sent and the window has room; it is woken by live (a Put landed
// in the queue: the notifier calls Wake from the sender's goroutine, after
// the Put is durable, with the stored message; Wake never blocks: a small
// buffered channel, and beyond it wake, a buffered channel of one plus an
// atomic maximum priority), by acks and by out (send results and ephemeral
// frames).
//
// A message from live is written as it is, without a Fetch, when the
// connection is provably caught up: the last fetch reached the end of the
// queue, the Drained marker went out, the window has room, and its cursor's
// sequence number is one more than the highest the connection has seen
// (the store numbers a queue's entries consecutively, so no other message
// can be waiting before it). Otherwise it only means "fetch": a message
// whose number is at most the highest seen was already fetched and is
// dropped.
//
// At most one sendLoop runs per connection, and only while there is work:
// once everything delivered is acknowledged, the backlog drained and the
// channels empty, and that has lasted sendLoopLinger, it returns, and the
// next producer starts it again (kick). An idle connection therefore costs
// one goroutine, its reader, blocked in a read (relay/README.md has the
// figures). The hand-over is race-free
// because producers first put their item in the channel and then call
// kick, and sendLoop decides to stop under the same lock (c.st) after
// seeing every channel empty. Keepalive pings come from a timer whose
// callback runs each ping in a short-lived goroutine of the errgroup,
// because a ping waits for its pong, which the reader receives.
//
// A send-only connection (AcceptSendOnly: the anonymous socket for sealed
// sends) is the same machinery without a queue: it subscribes to nothing,
// its delivery state starts drained (so sendLoop only writes SendResults),
// a Send is checked as from no one (only sealed sends pass), an Ack closes
// it with 1008, and the keepalive timer also closes it (1000) once no frame
// has arrived for SendIdleTimeout and no send is waiting.
//
// The connection ends when any of them fails or when close is called
// (displacement, purge, shutdown, ping timeout, protocol violation, a
// failed write): close records the first close code and closes the
// WebSocket with it in a goroutine, which makes the reader's Read fail;
// run then marks the connection ended (no sendLoop or ping starts after
// that), cancels the context, waits for the errgroup, unsubscribes and
// deregisters. Nothing is lost when a connection dies:
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
	return s.accept(wc, q, false)
}

// AcceptSendOnly serves an anonymous send-only connection until it ends:
// the socket for sealed sends, tied to no account. It accepts only Send
// frames, answers a Send without the sealed flag with 401 unauthorized, and
// closes the connection with 1008 for an Ack (or any relay-to-device
// frame); nothing is ever delivered on it. It returns at once, like Accept.
func (s *Server) AcceptSendOnly(wc Conn) error {
	return s.accept(wc, store.QueueID{}, true)
}

func (s *Server) accept(wc Conn, q store.QueueID, sendOnly bool) error {
	c := &conn{
		s:        s,
		wc:       wc,
		q:        q,
		sendOnly: sendOnly,
		wake:     make(chan struct{}, 1),
		live:     make(chan *store.Message, liveQueueLen),
		acks:     make(chan store.Cursor, 8),
		out:      make(chan []byte, outQueueLen),
		sends:    make(chan struct{}, wire.MaxSendsInFlight),
		closed:   make(chan struct{}),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.wakePrio.Store(-1)
	c.d.lastPrio = -1
	// A send-only connection has nothing to deliver, ever.
	c.d.more = !sendOnly
	c.d.drained = sendOnly
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		c.cancel()
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
	s        *Server
	wc       Conn
	q        store.QueueID // zero for a send-only connection
	sendOnly bool          // the anonymous socket for sealed sends

	sends    chan struct{} // one token per send being stored (wire.MaxSendsInFlight)
	lastRead atomic.Int64  // send-only: unix nanoseconds of the last frame read

	ctx      context.Context // canceled when the connection is closed or ends
	cancel   context.CancelFunc
	g        errgroup.Group      // sendLoop, sends being stored, pings
	wake     chan struct{}       // buffered(1): a Put landed since sendLoop last looked
	wakePrio atomic.Int32        // highest priority woken since then, -1 none
	live     chan *store.Message // stored messages handed over by Wake
	acks     chan store.Cursor
	out      chan []byte // send results and ephemeral frames, in order

	st struct {
		sync.Mutex
		running bool        // a sendLoop is running
		ended   bool        // the connection is ending: start nothing more
		ping    *time.Timer // the next keepalive ping
	}
	d delivery // owned by the running sendLoop

	closeOnce sync.Once
	closed    chan struct{} // closed once the WebSocket close has finished
}

// delivery is the state of delivering a queue to one connection.
type delivery struct {
	inflight map[store.Cursor]struct{} // delivered, not yet acknowledged
	after    store.Cursor              // fetch position: the last cursor looked at
	lastPrio int                       // priority of the message at after, -1 none
	more     bool                      // the queue may hold messages not yet delivered
	rescan   bool                      // a message may have landed before after
	drained  bool                      // the Drained marker went out
	maxSeq   uint64                    // highest sequence number fetched or delivered
	buf      []byte
}

// kick makes sure a sendLoop runs (producers call it after queueing work).
func (c *conn) kick() {
	c.st.Lock()
	defer c.st.Unlock()
	if c.st.running || c.st.ended {
		return
	}
	c.st.running = true
	c.g.Go(c.runSendLoop)
}

// runSendLoop runs sendLoop and ends the connection if it failed.
func (c *conn) runSendLoop() error {
	err := c.sendLoop(c.ctx)
	if err != nil && c.ctx.Err() == nil {
		// A write or the store failed: end the connection, which ends
		// the reader.
		c.close(CloseInternal, "internal error")
	}
	return err
}

// Wake implements Subscriber.
func (c *conn) Wake(m *store.Message) {
	select {
	case c.live <- m:
		c.kick()
		return
	default:
	}
	priority := m.Priority
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
	c.kick()
}

// Ephemeral implements Subscriber: the frame is queued if there is room
// and dropped (reported) otherwise.
func (c *conn) Ephemeral(frame []byte) bool {
	select {
	case c.out <- frame:
		c.kick()
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

// close closes the WebSocket with code, once; it does not block. It
// cancels the connection's context at once, so that a reader blocked
// submitting a send to a stalled store, and the sends waiting for one,
// give up: nothing will read their results.
func (c *conn) close(code CloseCode, reason string) {
	c.closeOnce.Do(func() {
		c.cancel()
		go func() {
			c.wc.Close(code, reason)
			close(c.closed)
		}()
	})
}

// schedulePing arms the keepalive timer, unless the connection is ending.
func (c *conn) schedulePing() {
	c.st.Lock()
	defer c.st.Unlock()
	if c.st.ended {
		return
	}
	if c.st.ping == nil {
		c.st.ping = time.AfterFunc(c.s.cfg.PingInterval, c.startPing)
	} else {
		c.st.ping.Reset(c.s.cfg.PingInterval)
	}
}

// startPing runs one keepalive ping in a goroutine of the errgroup.
func (c *conn) startPing() {
	c.st.Lock()
	defer c.st.Unlock()
	if c.st.ended {
		return
	}
	if c.sendOnly && len(c.sends) == 0 &&
		time.Since(time.Unix(0, c.lastRead.Load())) >= c.s.cfg.SendIdleTimeout {
		c.close(CloseNormal, "idle")
		return
	}
	c.g.Go(func() error {
		pctx, cancel := context.WithTimeout(c.ctx, c.s.cfg.PongTimeout)
		defer cancel()
		if err := c.wc.Ping(pctx); err != nil {
			if c.ctx.Err() == nil {
				c.s.m.dropped.WithLabelValues(dropIdle).Inc()
				c.close(CloseIdle, "keepalive timeout")
			}
			return nil
		}
		c.schedulePing()
		return nil
	})
}

// run is the connection's reader; see the comment at the top of the file.
func (c *conn) run() {
	s := c.s
	defer s.wg.Done()
	start := time.Now()
	// The context (made in accept) must exist before Subscribe: from
	// then on a Wake may start the send loop. (The reader is unblocked by
	// closing the WebSocket, so its reads need no context, which would
	// cost an allocation per read.)
	ctx := c.ctx
	kind := "delivery"
	unsubscribe := func() {}
	if c.sendOnly {
		kind = "send"
		c.lastRead.Store(time.Now().UnixNano())
	} else {
		unsubscribe = s.live.Subscribe(c.q, c)
		c.kick() // deliver the backlog, then the Drained marker
	}
	s.m.connections.WithLabelValues(kind).Inc()
	c.schedulePing()
	err := c.readLoop(ctx)

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
	c.st.Lock()
	c.st.ended = true
	if c.st.ping != nil {
		c.st.ping.Stop()
	}
	c.st.Unlock()
	c.cancel()
	if err := c.g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		s.log.Debug("relay: connection send loop ended", "err", err)
	}
	unsubscribe()
	s.mu.Lock()
	delete(s.mu.conns, c)
	s.mu.Unlock()
	s.m.connections.WithLabelValues(kind).Dec()
	if !c.sendOnly {
		s.m.connectionSeconds.Observe(time.Since(start).Seconds())
	}
}

// protocolError is a device's protocol violation; its reason goes into the
// close frame, so it must be short and must not quote input.
type protocolError struct{ reason string }

func (e *protocolError) Error() string { return "relay: protocol violation: " + e.reason }

var errInternal = errors.New("relay: internal error")

// errConnClosed ends the reader when the connection was closed while it
// waited for room (the read that would have failed never came).
var errConnClosed = errors.New("relay: connection closed")

// noCancel returns the context of frame reads and writes. A read, or a
// write blocked on a device that stopped reading, is ended by closing the
// WebSocket (the missed keepalive does that, as do displacement, purge and
// shutdown), so neither needs a cancelable context, which would cost an
// allocation and a registration per frame.
func noCancel() context.Context { return context.Background() }

func (c *conn) readLoop(ctx context.Context) error {
	s := c.s
	for {
		frame, err := c.wc.ReadFrame(noCancel())
		if err != nil {
			return err
		}
		if c.sendOnly {
			c.lastRead.Store(time.Now().UnixNano())
		}
		t, err := wire.TypeOf(frame)
		if err != nil {
			return &protocolError{"bad frame"}
		}
		switch t {
		case wire.FrameAck:
			if c.sendOnly {
				return &protocolError{"Ack frame on a send-only connection"}
			}
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
			case <-c.closed:
				return errConnClosed
			}
			c.kick()
		case wire.FrameSend:
			m, err := wire.ParseSend(frame)
			if err != nil {
				return &protocolError{"bad send frame"}
			}
			select {
			case c.sends <- struct{}{}:
			case <-c.closed:
				// Closed while the reader waited (sendLoop failed
				// to write, say): nothing drains the sends now.
				return errConnClosed
			}
			// Checked and submitted here, in frame order; only the
			// wait for durability runs beside the reader.
			var from *store.QueueID
			if !c.sendOnly {
				q := c.q
				from = &q
			}
			wait := s.startSend(ctx, from, m)
			c.g.Go(func() error {
				defer func() { <-c.sends }()
				res := wait()
				select {
				case c.out <- res.Marshal():
					c.kick()
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

// idle reports whether sendLoop has nothing to do; if so it marks the loop
// stopped, under the lock producers take in kick after queueing work.
func (c *conn) idle() bool {
	d := &c.d
	if d.more || len(d.inflight) > 0 || !d.drained {
		return false
	}
	c.st.Lock()
	defer c.st.Unlock()
	if len(c.wake) > 0 || len(c.live) > 0 || len(c.acks) > 0 || len(c.out) > 0 {
		return false
	}
	c.st.running = false
	return true
}

// sendLoop is the connection's only writer of data frames; see the top of
// the file. It returns when the connection has nothing to deliver.
func (c *conn) sendLoop(ctx context.Context) error {
	s := c.s
	d := &c.d
	window := s.cfg.Window
	if d.inflight == nil {
		d.inflight = make(map[store.Cursor]struct{})
	}
	var linger *time.Timer
	defer func() {
		if linger != nil {
			linger.Stop()
		}
	}()
	for {
		if d.more && len(d.inflight) < window {
			if err := c.fill(ctx, window); err != nil {
				return err
			}
			continue
		}
		var lingerC <-chan time.Time
		if !d.more && len(d.inflight) == 0 && d.drained {
			// Nothing to do: stop if it stays so for sendLoopLinger. (A
			// busy device would otherwise start a goroutine, and grow its
			// stack, for every message.)
			if linger == nil {
				linger = time.NewTimer(sendLoopLinger)
			} else {
				linger.Reset(sendLoopLinger)
			}
			lingerC = linger.C
		}
		select {
		case <-lingerC:
			if c.idle() {
				return nil
			}
		case <-ctx.Done():
			return ctx.Err()
		case <-c.wake:
			d.more = true
			if p := c.wakePrio.Swap(-1); int(p) > d.lastPrio {
				d.rescan = true
			}
		case m := <-c.live:
			if err := c.deliverLive(m, window); err != nil {
				return err
			}
		case k := <-c.acks:
			delete(d.inflight, k)
		case f := <-c.out:
			if err := c.wc.WriteFrame(noCancel(), f); err != nil {
				return err
			}
		}
	}
}

// fill fetches and delivers messages until the window is full or the
// queue has no more, then sends the Drained marker if it is due.
func (c *conn) fill(ctx context.Context, window int) error {
	s := c.s
	d := &c.d
	// Continue after the last cursor looked at: a queue's messages become
	// visible in cursor order within a priority (the store assigns
	// sequence numbers in commit order), and a scan from the start would
	// step over the tombstones of every message acknowledged so far. A
	// message of a higher priority than the last one lands before it,
	// though: Wake reports the priority, and then the scan starts over.
	from := d.after
	if d.rescan {
		from = store.Cursor{}
		d.lastPrio = -1
	}
	d.rescan = false
	free := window - len(d.inflight)
	limit := free
	for k := range d.inflight {
		if bytes.Compare(k[:], from[:]) > 0 {
			limit++ // it will come back and be skipped
		}
	}
	msgs, err := s.queues.Fetch(ctx, c.q, from, limit)
	for i := range msgs {
		d.maxSeq = max(d.maxSeq, msgs[i].Key.Seq())
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.log.Error("relay: fetch", "err", err)
		return errInternal
	}
	d.more = len(msgs) == limit
	now := time.Now()
	for i := range msgs {
		m := &msgs[i]
		if _, ok := d.inflight[m.Key]; ok {
			d.after, d.lastPrio = m.Key, int(m.Priority)
			continue
		}
		if free == 0 {
			d.more = true
			break
		}
		if err := c.write(m, now); err != nil {
			return err
		}
		d.after, d.lastPrio = m.Key, int(m.Priority)
		free--
	}
	if !d.more && !d.drained {
		d.drained = true
		if err := c.wc.WriteFrame(noCancel(), wire.DrainedFrame()); err != nil {
			return err
		}
	}
	return nil
}

// liveQueueLen bounds the stored messages handed to a connection and not yet
// taken by its sendLoop; beyond it Wake falls back to a plain wakeup.
const liveQueueLen = 8

// write delivers m and records it as in flight.
func (c *conn) write(m *store.Message, now time.Time) error {
	d := &c.d
	dm := wire.Deliver{Cursor: m.Key, ID: m.ID, Priority: m.Priority,
		StoredMillis: uint64(m.Stored.UnixMilli()), Header: m.Header, Body: m.Body}
	d.buf = dm.Append(d.buf[:0])
	err := c.wc.WriteFrame(noCancel(), d.buf)
	if len(d.buf) > 4<<10 {
		d.buf = nil // do not keep a large message's buffer
	}
	if err != nil {
		return err
	}
	d.inflight[m.Key] = struct{}{}
	d.maxSeq = max(d.maxSeq, m.Key.Seq())
	c.s.m.delivered.Inc()
	c.s.m.deliveryLag.Observe(now.Sub(m.Stored).Seconds())
	return nil
}

// deliverLive writes m, a message the notifier handed over, if the
// connection is caught up and m is next in its queue (see the top of the
// file); otherwise it schedules a fetch, or drops m if it was fetched
// already.
func (c *conn) deliverLive(m *store.Message, window int) error {
	d := &c.d
	seq := m.Key.Seq()
	if seq != 0 && seq <= d.maxSeq {
		return nil // fetched (delivered, or acknowledged) already
	}
	now := time.Now()
	if seq == d.maxSeq+1 && !d.more && !d.rescan && d.drained && len(d.inflight) < window &&
		c.s.cfg.Now().Before(m.Expires) {
		if err := c.write(m, now); err != nil {
			return err
		}
		if bytes.Compare(m.Key[:], d.after[:]) > 0 {
			d.after, d.lastPrio = m.Key, int(m.Priority)
		}
		return nil
	}
	d.more = true
	if int(m.Priority) > d.lastPrio {
		d.rescan = true
	}
	return nil
}
