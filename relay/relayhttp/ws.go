package relayhttp

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/coder/websocket"

	"github.com/sotto-im/sotto/relay/server"
	"github.com/sotto-im/sotto/relay/wire"
)

// Buffer sizes of an upgraded connection. The HTTP server's own buffers
// (4 KiB each way) are replaced at the upgrade: an idle connection spends
// its life blocked in a read, holding its buffers, and 8 KiB per idle
// device is most of what it would cost. Frames larger than a buffer are
// read and written straight through.
const (
	// wsReadBufSize holds a WebSocket frame header and a whole Ack frame.
	wsReadBufSize = 256
	// wsWriteBufSize holds a frame header and a typical 256-byte message,
	// so that one delivery is one write system call.
	wsWriteBufSize = 1024
)

// smallBuffers wraps a ResponseWriter so that Hijack, which the WebSocket
// library calls to take over the connection, returns small buffers.
type smallBuffers struct{ http.ResponseWriter }

func (w smallBuffers) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	size := wsReadBufSize
	var src io.Reader = nc
	if n := brw.Reader.Buffered(); n > 0 {
		// Bytes the client sent right after its request: keep them in
		// front, and in the new buffer, where the library looks for them.
		early, _ := brw.Reader.Peek(n)
		src = io.MultiReader(bytes.NewReader(bytes.Clone(early)), nc)
		size = max(size, n)
		br := bufio.NewReaderSize(src, size)
		if _, err := br.Peek(n); err != nil {
			nc.Close()
			return nil, nil, err
		}
		return nc, bufio.NewReadWriter(br, bufio.NewWriterSize(nc, wsWriteBufSize)), nil
	}
	return nc, bufio.NewReadWriter(bufio.NewReaderSize(src, size), bufio.NewWriterSize(nc, wsWriteBufSize)), nil
}

// wsConn adapts a WebSocket to server.Conn: one binary message per frame.
type wsConn struct{ c *websocket.Conn }

// ReadFrame returns the next message. A text message is returned as an
// empty frame, which the server refuses as malformed.
func (w *wsConn) ReadFrame(ctx context.Context) ([]byte, error) {
	typ, b, err := w.c.Read(ctx)
	if err != nil {
		return nil, err
	}
	if typ != websocket.MessageBinary {
		return []byte{}, nil
	}
	return b, nil
}

func (w *wsConn) WriteFrame(ctx context.Context, frame []byte) error {
	return w.c.Write(ctx, websocket.MessageBinary, frame)
}

func (w *wsConn) Ping(ctx context.Context) error { return w.c.Ping(ctx) }

func (w *wsConn) Close(code server.CloseCode, reason string) error {
	return w.c.Close(websocket.StatusCode(code), reason)
}

// isUpgrade reports whether r asks for a WebSocket upgrade.
func isUpgrade(r *http.Request) bool {
	if !strings.EqualFold(strings.TrimSpace(r.Header.Get("Upgrade")), "websocket") {
		return false
	}
	for _, h := range r.Header.Values("Connection") {
		for _, tok := range strings.Split(h, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "upgrade") {
				return true
			}
		}
	}
	return false
}

// offersSubprotocol reports whether the upgrade request offers sotto.v1.
func offersSubprotocol(r *http.Request) bool {
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range bytes.Split([]byte(h), []byte(",")) {
			if string(bytes.TrimSpace(p)) == wire.Subprotocol {
				return true
			}
		}
	}
	return false
}

// GET /v1/relay/ws
func (h *handler) serveWS(w http.ResponseWriter, r *http.Request) {
	q, ok := h.authenticate(w, r)
	if !ok {
		return
	}
	c, ok := upgrade(w, r)
	if !ok {
		return
	}
	// Accept runs the connection in its own goroutines; returning here
	// lets the HTTP server drop its per-connection state.
	if err := h.s.Accept(&wsConn{c}, q); err != nil {
		return
	}
}

// GET /v1/relay/ws/send: the anonymous send-only socket for sealed sends.
// It carries no token, so that nothing ties the sealed sends on it to an
// account; one that comes with an Authorization header is refused rather
// than silently linked to nothing, since it is a client bug that would
// defeat sealed sender on the other socket.
func (h *handler) serveSendWS(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "" {
		writeError(w, http.StatusBadRequest, server.CodeBadRequest, "the send socket is anonymous: send no Authorization header")
		return
	}
	c, ok := upgrade(w, r)
	if !ok {
		return
	}
	if err := h.s.AcceptSendOnly(&wsConn{c}); err != nil {
		return
	}
}

// upgrade accepts a WebSocket with the sotto.v1 subprotocol, compression
// off, small buffers and the frame size limit; when it returns false the
// request has been answered.
func upgrade(w http.ResponseWriter, r *http.Request) (*websocket.Conn, bool) {
	if !isUpgrade(r) {
		// The library would answer in plain text.
		w.Header().Set("Upgrade", "websocket")
		writeError(w, http.StatusUpgradeRequired, "upgrade_required", "this route is a WebSocket")
		return nil, false
	}
	if !offersSubprotocol(r) {
		writeError(w, http.StatusBadRequest, "bad_subprotocol", "the WebSocket subprotocol "+wire.Subprotocol+" is required")
		return nil, false
	}
	c, err := websocket.Accept(smallBuffers{w}, r, &websocket.AcceptOptions{
		Subprotocols: []string{wire.Subprotocol},
		// Ciphertext does not compress; compression would only cost CPU
		// and memory per connection.
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		return nil, false // the library has answered the request
	}
	if c.Subprotocol() != wire.Subprotocol {
		c.Close(websocket.StatusPolicyViolation, "subprotocol "+wire.Subprotocol+" required")
		return nil, false
	}
	c.SetReadLimit(wire.MaxFrameSize)
	return c, true
}
