package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/relay/wire"
)

// The relay connection. One goroutine (runRelay) owns the WebSocket. A
// reader goroutine reads frames into a buffer while runRelay's goroutine
// handles the Delivers in batches: every Deliver already read (up to the
// relay's window) is opened, decrypted and stored in order under a
// store.Deferred context, then one Sync makes the batch durable, then the
// Acks go out back to back and the events are emitted. The relay deletes a
// message only after the client has persisted it, and a device pays one
// disk flush per batch instead of several per message. Sends never use this
// connection (see sender.go and postSend), so a slow send never holds up
// receiving.

// runRelay keeps a connection to the relay, reconnecting with exponential
// backoff and jitter.
func (c *Client) runRelay() {
	defer c.wg.Done()
	backoff := time.Duration(0)
	for {
		if backoff > 0 {
			wait := backoff/2 + rand.N(backoff/2+1)
			select {
			case <-c.ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		c.emit(ConnectionEvent{State: Connecting})
		connected, err := c.connectOnce(c.ctx)
		if c.ctx.Err() != nil {
			c.emit(ConnectionEvent{State: Disconnected})
			return
		}
		c.log.Debug("client: relay connection ended", "err", err)
		c.emit(ConnectionEvent{State: Disconnected, Err: err})
		if connected {
			backoff = 0
		}
		backoff = min(max(2*backoff, 100*time.Millisecond), reconnectMaxBackoff)
	}
}

// connectOnce runs one WebSocket connection until it fails. It reports
// whether the connection was established.
func (c *Client) connectOnce(ctx context.Context) (bool, error) {
	tok, err := c.ks.token(ctx, c.Address(), c.id.ik, c.now)
	if err != nil {
		return false, err
	}
	u := strings.Replace(strings.TrimRight(c.opts.RelayURL, "/"), "http", "ws", 1) + "/v1/relay/ws"
	h := http.Header{}
	h.Set("Authorization", "Bearer "+tok)
	ws, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: c.opts.HTTPClient, HTTPHeader: h,
		Subprotocols: []string{wire.Subprotocol}, CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return false, fmt.Errorf("client: relay dial: %w", err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(wire.MaxFrameSize)
	c.emit(ConnectionEvent{State: Connected})
	// Wake the outbox: it may have been waiting for the network.
	select {
	case c.kick <- struct{}{}:
	default:
	}
	frames := make(chan inFrame, frameBuffer)
	rctx, stop := context.WithCancel(ctx)
	readerDone := make(chan struct{})
	go readFrames(rctx, ws, frames, readerDone)
	defer func() {
		stop() // fails the reader's Read, which closes the connection
		<-readerDone
	}()
	var next *inFrame // a frame read while gathering a batch, handled next
	for {
		var f inFrame
		if next != nil {
			f, next = *next, nil
		} else {
			select {
			case f = <-frames:
			case <-ctx.Done():
				return true, ctx.Err()
			}
		}
		if f.err != nil {
			return true, f.err
		}
		ft, err := wire.TypeOf(f.data)
		if err != nil {
			return true, err
		}
		switch ft {
		case wire.FrameDeliver:
			d, err := wire.ParseDeliver(f.data)
			if err != nil {
				return true, err
			}
			// Take every Deliver already read, so that one Sync covers
			// them all. Another frame ends the batch and is handled after
			// it, so frames keep their order.
			batch := []*wire.Deliver{d}
		gather:
			for len(batch) < maxReceiveBatch {
				select {
				case g := <-frames:
					if g.err == nil {
						if t, _ := wire.TypeOf(g.data); t == wire.FrameDeliver {
							if d, err := wire.ParseDeliver(g.data); err == nil {
								batch = append(batch, d)
								continue
							}
						}
					}
					next = &g
					break gather
				default:
					break gather
				}
			}
			if err := c.receiveBatch(ctx, ws, batch); err != nil {
				// A local failure (the store): what is not acknowledged
				// is delivered again on the next connection.
				return true, err
			}
		case wire.FrameDrained:
			c.emit(ConnectionEvent{State: Drained})
		case wire.FrameEphemeral:
			e, err := wire.ParseEphemeral(f.data)
			if err != nil {
				return true, err
			}
			c.handleDelivery(ctx, e.ID, e.Header, e.Body, true)
		default:
			// Unknown frame types are skipped (relay/wire: forward compatibility).
		}
	}
}

const (
	// maxReceiveBatch bounds the Delivers handled under one Sync: the
	// relay's window (relay/server Config.Window, 64 by default), so a
	// batch can hold everything the relay has in flight.
	maxReceiveBatch = 64
	// frameBuffer is how many frames the reader may read ahead of the
	// batches: a full window of Delivers plus ephemeral frames and the
	// Drained marker. Beyond it the reader waits (and TCP pushes back).
	frameBuffer = 2 * maxReceiveBatch
)

// inFrame is what the reader passes on: a binary frame, or the error that
// ended the reading.
type inFrame struct {
	data []byte
	err  error
}

// readFrames reads binary frames into out until Read fails (which it does
// once ctx ends: the library then closes the connection), passes the error
// on unless ctx ended, and closes done.
func readFrames(ctx context.Context, ws *websocket.Conn, out chan<- inFrame, done chan<- struct{}) {
	defer close(done)
	for {
		typ, data, err := ws.Read(ctx)
		if err != nil {
			select {
			case out <- inFrame{err: err}:
			case <-ctx.Done():
			}
			return
		}
		if typ != websocket.MessageBinary {
			continue
		}
		select {
		case out <- inFrame{data: data}:
		case <-ctx.Done():
			return
		}
	}
}

// receiveBatch handles Delivers in order under a store.Deferred context,
// syncs the store once, acknowledges them, then emits their events. It
// acknowledges nothing before the Sync. On a local failure it stops at the
// failing message: the ones before it are acknowledged if the Sync
// succeeds (their writes are then durable), the rest are delivered again on
// the next connection, where MarkSeen (or the ratchet, which has consumed
// their keys) keeps them from being stored twice. The events of the
// messages handled are emitted even then: those messages are in the
// history the app reads.
func (c *Client) receiveBatch(ctx context.Context, ws *websocket.Conn, batch []*wire.Deliver) error {
	dctx := store.Deferred(ctx)
	var (
		evs    []Event
		done   int
		failed error
	)
	for _, d := range batch {
		e, err := c.receive(dctx, d.ID, d.Header, d.Body, false)
		evs = append(evs, e...)
		if err != nil {
			failed = err
			break
		}
		done++
	}
	defer func() {
		for _, ev := range evs {
			c.emit(ev)
		}
	}()
	if done == 0 {
		return failed
	}
	if err := c.sync(ctx); err != nil {
		return err
	}
	for _, d := range batch[:done] {
		// Back to back: the relay frees a window slot per Ack as it
		// arrives.
		if err := ws.Write(ctx, websocket.MessageBinary, (&wire.Ack{Cursor: d.Cursor}).Marshal()); err != nil {
			return err
		}
	}
	return failed
}

// postSend sends a Send frame over HTTP. Sealed sends carry no token.
func (c *Client) postSend(ctx context.Context, s *wire.Send) (*wire.SendResult, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(c.opts.RelayURL, "/")+"/v1/messages", bytes.NewReader(s.Marshal()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	if !s.Sealed {
		tok, err := c.ks.token(ctx, c.Address(), c.id.ik, c.now)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.opts.HTTPClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: relay send: %w", err)
	}
	defer resp.Body.Close()
	res := &wire.SendResult{Status: uint16(resp.StatusCode)}
	if resp.StatusCode == http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return res, nil
	}
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Missing []struct {
				Account crypto.AccountID `json:"account"`
				Device  uint32           `json:"device"`
			} `json:"missing"`
			Extra []struct {
				Account crypto.AccountID `json:"account"`
				Device  uint32           `json:"device"`
			} `json:"extra"`
		} `json:"error"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body); err != nil && resp.StatusCode < 500 {
		return nil, fmt.Errorf("client: relay send: status %d with unreadable body", resp.StatusCode)
	}
	res.Code = body.Error.Code
	for _, d := range body.Error.Missing {
		res.Missing = append(res.Missing, wire.DeviceRef{Account: d.Account, Device: d.Device})
	}
	for _, d := range body.Error.Extra {
		res.Extra = append(res.Extra, wire.DeviceRef{Account: d.Account, Device: d.Device})
	}
	return res, nil
}
