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

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/relay/wire"
)

// The relay connection. One goroutine (runRelay) owns the WebSocket: it
// reads frames and handles each Deliver in order — open, decrypt, store,
// then Ack — so the relay deletes a message only after the client has
// persisted it. Sends go over HTTP POST /v1/messages, so a slow send never
// holds up receiving.

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
	for {
		typ, frame, err := ws.Read(ctx)
		if err != nil {
			return true, err
		}
		if typ != websocket.MessageBinary {
			continue
		}
		ft, err := wire.TypeOf(frame)
		if err != nil {
			return true, err
		}
		switch ft {
		case wire.FrameDeliver:
			d, err := wire.ParseDeliver(frame)
			if err != nil {
				return true, err
			}
			if err := c.handleDelivery(ctx, d.ID, d.Header, d.Body, false); err != nil {
				// A local failure (the store): do not acknowledge; the
				// relay delivers again on the next connection.
				return true, err
			}
			ack := (&wire.Ack{Cursor: d.Cursor}).Marshal()
			if err := ws.Write(ctx, websocket.MessageBinary, ack); err != nil {
				return true, err
			}
		case wire.FrameDrained:
			c.emit(ConnectionEvent{State: Drained})
		case wire.FrameEphemeral:
			e, err := wire.ParseEphemeral(frame)
			if err != nil {
				return true, err
			}
			c.handleDelivery(ctx, e.ID, e.Header, e.Body, true)
		default:
			// Unknown frame types are skipped (relay/wire: forward compatibility).
		}
	}
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
