// Package wsfloor measures the transport floor under Sotto's relay: a WebSocket forwarder
// (github.com/coder/websocket, the relay's library) with no storage at all. Each sender
// connection is paired with a receiver connection; the server copies every frame from a sender to
// its receiver and every acknowledgement back. Load generator and server share the machine, as
// they do in the relay's own load test, so the figure is what the relay could reach if storing a
// message cost nothing.
package wsfloor

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// Forwarder is the server: pair i's sender frames go to pair i's receiver, and its receiver's
// frames (acknowledgements) go back to the sender.
type Forwarder struct {
	srv *httptest.Server

	mu    sync.Mutex
	pairs map[int]*pair
}

type pair struct {
	send, recv *websocket.Conn
	ready      chan struct{}
}

// NewForwarder starts the server on 127.0.0.1.
func NewForwarder() *Forwarder {
	f := &Forwarder{pairs: map[int]*pair{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	return f
}

// URL is the WebSocket base URL.
func (f *Forwarder) URL() string { return "ws" + f.srv.URL[len("http"):] }

// Close stops the server.
func (f *Forwarder) Close() { f.srv.CloseClientConnections(); f.srv.Close() }

func (f *Forwarder) pair(i int) *pair {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.pairs[i]
	if p == nil {
		p = &pair{ready: make(chan struct{})}
		f.pairs[i] = p
	}
	return p
}

// GET /?pair=N&role=send|recv - one side of a pair; the handler copies frames to the other side
// once both are connected.
func (f *Forwarder) serve(w http.ResponseWriter, r *http.Request) {
	i, err := strconv.Atoi(r.URL.Query().Get("pair"))
	role := r.URL.Query().Get("role")
	if err != nil || (role != "send" && role != "recv") {
		http.Error(w, "bad pair or role", http.StatusBadRequest)
		return
	}
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	p := f.pair(i)
	f.mu.Lock()
	if role == "send" {
		p.send = c
	} else {
		p.recv = c
	}
	both := p.send != nil && p.recv != nil
	f.mu.Unlock()
	if both {
		close(p.ready)
	}
	ctx := r.Context()
	select {
	case <-p.ready:
	case <-ctx.Done():
		return
	}
	dst := p.recv
	if role == "recv" {
		dst = p.send
	}
	for {
		typ, b, err := c.Read(ctx)
		if err != nil {
			return
		}
		if err := dst.Write(ctx, typ, b); err != nil {
			return
		}
	}
}

// Load drives the forwarder: Pairs sender/receiver connections; each sender keeps at most
// InFlight messages unacknowledged by its receiver.
type Load struct {
	Pairs, InFlight, Size int
	conns                 []*websocket.Conn // sender, receiver, sender, receiver, ...
	OnReceive             func(d time.Duration)
}

// Dial connects every pair.
func (l *Load) Dial(ctx context.Context, url string) error {
	for i := range l.Pairs {
		for _, role := range []string{"send", "recv"} {
			c, _, err := websocket.Dial(ctx, fmt.Sprintf("%s/?pair=%d&role=%s", url, i, role), nil)
			if err != nil {
				return fmt.Errorf("wsfloor: dial: %w", err)
			}
			l.conns = append(l.conns, c)
		}
	}
	return nil
}

// Close closes every connection.
func (l *Load) Close() {
	for _, c := range l.conns {
		c.CloseNow()
	}
}

// Run sends n messages in total, spread evenly over the pairs, at most rate per second overall
// (0: as fast as the windows allow), and returns when every message has been acknowledged.
func (l *Load) Run(ctx context.Context, n int, rate float64) error {
	var wg sync.WaitGroup
	errs := make(chan error, 2*l.Pairs)
	start := time.Now()
	for p := range l.Pairs {
		count := n / l.Pairs
		if p < n%l.Pairs {
			count++
		}
		send, recv := l.conns[2*p], l.conns[2*p+1]
		window := make(chan struct{}, l.InFlight)
		wg.Add(3)
		go func() { // receiver: timestamp check, ack
			defer wg.Done()
			ack := []byte{1}
			for range count {
				_, b, err := recv.Read(ctx)
				if err != nil {
					errs <- err
					return
				}
				if l.OnReceive != nil {
					l.OnReceive(time.Duration(time.Now().UnixNano() - int64(binary.BigEndian.Uint64(b))))
				}
				if err := recv.Write(ctx, websocket.MessageBinary, ack); err != nil {
					errs <- err
					return
				}
			}
		}()
		go func() { // sender's ack reader
			defer wg.Done()
			for range count {
				if _, _, err := send.Read(ctx); err != nil {
					errs <- err
					return
				}
				<-window
			}
		}()
		go func() { // sender
			defer wg.Done()
			msg := make([]byte, l.Size)
			for k := range count {
				if rate > 0 {
					// this pair's k-th message is the (k*Pairs+p)-th overall
					due := start.Add(time.Duration(float64(k*l.Pairs+p) / rate * float64(time.Second)))
					if d := time.Until(due); d > 0 {
						time.Sleep(d)
					}
				}
				select {
				case window <- struct{}{}:
				case <-ctx.Done():
					errs <- ctx.Err()
					return
				}
				binary.BigEndian.PutUint64(msg, uint64(time.Now().UnixNano()))
				if err := send.Write(ctx, websocket.MessageBinary, msg); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	if len(all) > 0 {
		return fmt.Errorf("wsfloor: %w", errors.Join(all...))
	}
	return nil
}
