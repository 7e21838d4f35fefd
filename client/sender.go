package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/sotto-im/sotto/relay/wire"
)

// The send socket. The outbox pipelines sealed sends over the relay's
// anonymous send socket (GET /v1/relay/ws/send, no Authorization header):
// up to sendWindow Send frames may be unanswered at once, the relay stores
// the sends of one connection in the order of their frames (so the order
// per recipient holds), and the SendResults come back by request ID. The
// socket carries sealed sends only: an identified send over it would tell
// the relay who sends (and the relay refuses one with 401); identified
// sends (transcripts to this account's other devices, sends to a contact
// whose access key is unknown) go over HTTP POST /v1/messages, after every
// earlier frame on the socket has been answered, so that they too are
// stored in outbox order.
//
// A reader goroutine reads the socket for as long as it is open (which
// also answers the relay's keepalive pings between batches) and hands the
// results to the outbox goroutine, the only writer. A relay that has no
// send socket (404: an older relay) is sent to over HTTP POST, one send at
// a time, and asked again after sendSocketRetry.

const (
	// sendWindow is how many Send frames may be unanswered on the send
	// socket.
	sendWindow = wire.MaxSendsInFlight
	// sendSocketIdle is how long an unused send socket is kept: less than
	// the relay's idle timeout (2 minutes by default), so that the client
	// closes it first rather than race the relay's close with a new batch.
	sendSocketIdle = time.Minute
	// sendResultTimeout bounds the wait for the next SendResult (or for a
	// frame to be written) before the socket is given up as dead.
	sendResultTimeout = 30 * time.Second
	// sendSocketRetry is how long an older relay without a send socket is
	// sent to over HTTP before the client tries the socket again.
	sendSocketRetry = 10 * time.Minute
	// sendSocketPath is the relay's anonymous send socket.
	sendSocketPath = "/v1/relay/ws/send"
)

// sender is the outbox loop's connection state; only runOutbox's goroutine
// uses it.
type sender struct {
	sock      *sendSocket // nil: not connected
	used      time.Time   // when sock last sent
	httpUntil time.Time   // before this, the relay has no send socket: use HTTP
}

// socket returns an open send socket, dialling one if needed, or nil if
// the relay has none (then sends go over HTTP).
func (s *sender) socket(ctx context.Context, c *Client) (*sendSocket, error) {
	if s.sock != nil {
		select {
		case <-s.sock.done:
			s.sock = nil // ended while idle (a relay restart, its idle timeout)
		default:
			if time.Since(s.used) < sendSocketIdle {
				s.used = time.Now()
				return s.sock, nil
			}
			s.drop()
		}
	}
	if c.now().Before(s.httpUntil) {
		return nil, nil
	}
	sock, err := c.dialSendSocket(ctx)
	if errors.Is(err, errNoSendSocket) {
		c.log.Debug("client: relay has no send socket; sending over HTTP")
		s.httpUntil = c.now().Add(sendSocketRetry)
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	s.sock, s.used = sock, time.Now()
	return sock, nil
}

// drop closes the socket after a failure; the next batch dials afresh.
func (s *sender) drop() {
	if s.sock != nil {
		s.sock.ws.CloseNow()
		s.sock = nil
	}
}

// errNoSendSocket reports a relay that does not serve the send socket.
var errNoSendSocket = errors.New("client: relay has no send socket")

// sendSocket is one open send socket.
type sendSocket struct {
	ws      *websocket.Conn
	results chan *wire.SendResult // from the reader; never more than sendWindow pending
	done    chan struct{}         // closed when the reader ends
	err     error                 // why the reader ended; read after done
	next    uint32                // the last request ID used
}

// dialSendSocket opens the anonymous send socket. It sends no token: the
// relay must not learn which device the sealed sends come from.
func (c *Client) dialSendSocket(ctx context.Context) (*sendSocket, error) {
	u := strings.Replace(strings.TrimRight(c.opts.RelayURL, "/"), "http", "ws", 1) + sendSocketPath
	dctx, cancel := context.WithTimeout(ctx, sendResultTimeout)
	defer cancel()
	ws, resp, err := websocket.Dial(dctx, u, &websocket.DialOptions{HTTPClient: c.opts.HTTPClient,
		Subprotocols: []string{wire.Subprotocol}, CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		if resp != nil && resp.StatusCode == http.StatusNotFound {
			return nil, errNoSendSocket
		}
		return nil, fmt.Errorf("client: send socket dial: %w", err)
	}
	if ws.Subprotocol() != wire.Subprotocol {
		ws.CloseNow()
		return nil, errors.New("client: send socket: relay did not accept subprotocol " + wire.Subprotocol)
	}
	ws.SetReadLimit(wire.MaxFrameSize)
	s := &sendSocket{ws: ws, results: make(chan *wire.SendResult, sendWindow), done: make(chan struct{})}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		s.readLoop(c.ctx)
	}()
	return s, nil
}

// readLoop reads SendResults until the socket fails or ctx (the client's)
// ends, which closes the socket.
func (s *sendSocket) readLoop(ctx context.Context) {
	defer close(s.done)
	defer s.ws.CloseNow()
	for {
		typ, frame, err := s.ws.Read(ctx)
		if err != nil {
			s.err = fmt.Errorf("client: send socket: %w", err)
			return
		}
		if typ != websocket.MessageBinary {
			s.err = errors.New("client: send socket: text message from the relay")
			return
		}
		t, err := wire.TypeOf(frame)
		if err != nil {
			s.err = fmt.Errorf("client: send socket: %w", err)
			return
		}
		if t != wire.FrameSendResult {
			if t.Known() {
				s.err = fmt.Errorf("client: send socket: unexpected %s frame", t)
				return
			}
			continue // a frame type from a newer protocol version
		}
		r, err := wire.ParseSendResult(frame)
		if err != nil {
			s.err = fmt.Errorf("client: send socket: %w", err)
			return
		}
		select {
		case s.results <- r:
		case <-ctx.Done():
			s.err = ctx.Err()
			return
		}
	}
}

// pipeline sends sends in order and returns their results (nil where no
// answer came). Sealed sends go over the socket with up to sendWindow
// unanswered; an identified send goes through post once every earlier
// frame is answered. It stops sending at the first result other than 200
// (but still collects the answers to what it has sent, so that no stale
// result is left for the next batch). An error means the socket is no
// longer usable (or post failed): the caller drops it.
func (s *sendSocket) pipeline(ctx context.Context, sends []*wire.Send, post func(*wire.Send) (*wire.SendResult, error)) ([]*wire.SendResult, error) {
	results := make([]*wire.SendResult, len(sends))
	pending := make(map[uint32]int, sendWindow)
	stop := false
	timer := time.NewTimer(sendResultTimeout)
	defer timer.Stop()
	await := func() error {
		timer.Reset(sendResultTimeout)
		select {
		case r := <-s.results:
			i, ok := pending[r.RequestID]
			if !ok {
				return fmt.Errorf("client: send socket: result for unknown request %d", r.RequestID)
			}
			delete(pending, r.RequestID)
			results[i] = r
			if r.Status != http.StatusOK {
				stop = true
			}
			return nil
		case <-s.done:
			return s.err
		case <-timer.C:
			return errors.New("client: send socket: no answer from the relay")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	drain := func() error {
		for len(pending) > 0 {
			if err := await(); err != nil {
				return err
			}
		}
		return nil
	}
	for i, send := range sends {
		if !send.Sealed {
			if err := drain(); err != nil {
				return results, err
			}
			if stop {
				break
			}
			r, err := post(send)
			if err != nil {
				return results, err
			}
			results[i] = r
			if r.Status != http.StatusOK {
				break
			}
			continue
		}
		for len(pending) >= sendWindow && !stop {
			if err := await(); err != nil {
				return results, err
			}
		}
		if stop {
			break
		}
		s.next++
		send.RequestID = s.next
		pending[send.RequestID] = i
		wctx, cancel := context.WithTimeout(ctx, sendResultTimeout)
		err := s.ws.Write(wctx, websocket.MessageBinary, send.Marshal())
		cancel()
		if err != nil {
			return results, fmt.Errorf("client: send socket: %w", err)
		}
	}
	return results, drain()
}
