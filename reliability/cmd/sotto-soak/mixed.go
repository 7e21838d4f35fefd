package main

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/sotto-im/sotto/relay/loadtest"
	"github.com/sotto-im/sotto/relay/wire"
)

// mixed is the part of the soak that loadtest.Run does not drive: devices
// that go offline and come back (their queues fill and drain), group
// messages (one multi-recipient send, the body stored once, to many of
// those devices) and attachment blobs (upload, download, compare). It
// keeps its own books: every message the relay accepted for a churning
// device must reach it exactly once, however often it was offline.
type mixed struct {
	base    string
	f       loadtest.Fixture
	first   int // fixture index of the first churning device
	devices int // churning devices
	// sender is the fixture index of the account that uploads blobs.
	sender int

	mu       sync.Mutex
	accepted map[delivery]bool // accepted by the relay (or being sent)
	received map[delivery]int  // deliveries seen
	// redelivered counts deliveries of a message a device had already
	// received: expected when a device goes away before its Ack reached the
	// relay (the client drops the copy), so reported, not judged.
	redelivered int

	sends, groupSends, refused atomic.Int64
	blobs, blobErrors          atomic.Int64
	reconnects                 atomic.Int64
	online                     atomic.Int64
	errs                       atomic.Int64
	lastErr                    atomic.Value
}

// delivery is one message for one device.
type delivery struct {
	id     [16]byte
	device int
}

func newMixed(base string, f loadtest.Fixture, first, devices, sender int) *mixed {
	return &mixed{base: base, f: f, first: first, devices: devices, sender: sender,
		accepted: map[delivery]bool{}, received: map[delivery]int{}}
}

func (m *mixed) fail(err error) {
	m.errs.Add(1)
	m.lastErr.Store(err.Error())
}

// depth is how many accepted deliveries to churning devices have not
// arrived yet: their queues' total depth, as this side sees it.
func (m *mixed) depth() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for d := range m.accepted {
		if m.received[d] == 0 {
			n++
		}
	}
	return n
}

// run drives the churning devices, the 1:1 and group sends to them, and
// the blobs until ctx ends.
func (m *mixed) run(ctx context.Context, rate float64, groupSize int, groupEvery, blobEvery time.Duration) {
	var wg sync.WaitGroup
	for i := range m.devices {
		wg.Add(1)
		go func() { defer wg.Done(); m.churn(ctx, m.first+i) }()
	}
	wg.Add(3)
	go func() { defer wg.Done(); m.sendLoop(ctx, rate) }()
	go func() { defer wg.Done(); m.groupLoop(ctx, groupSize, groupEvery) }()
	go func() { defer wg.Done(); m.blobLoop(ctx, blobEvery) }()
	wg.Wait()
}

// churn keeps device i online for 10–30 s, then offline for 10–30 s, over
// and over, acknowledging what it receives.
func (m *mixed) churn(ctx context.Context, i int) {
	for ctx.Err() == nil {
		on := time.Duration(10+rand.IntN(20)) * time.Second
		m.connectFor(ctx, i, on, false)
		if !sleepCtx(ctx, time.Duration(10+rand.IntN(20))*time.Second) {
			return
		}
	}
}

// connectFor connects device i, receives and acknowledges for d (or, with
// untilDrained, until the relay says the queue is drained).
func (m *mixed) connectFor(ctx context.Context, i int, d time.Duration, untilDrained bool) {
	cctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	tok, err := m.f.Token(i, time.Now())
	if err != nil {
		m.fail(err)
		return
	}
	h := http.Header{}
	h.Set("Authorization", "Bearer "+tok)
	c, _, err := websocket.Dial(cctx, strings.Replace(m.base, "http", "ws", 1)+"/v1/relay/ws",
		&websocket.DialOptions{HTTPHeader: h, Subprotocols: []string{wire.Subprotocol}, CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		if cctx.Err() == nil {
			m.fail(fmt.Errorf("churn dial: %w", err))
		}
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(wire.MaxFrameSize)
	m.reconnects.Add(1)
	m.online.Add(1)
	defer m.online.Add(-1)
	for {
		_, frame, err := c.Read(cctx)
		if err != nil {
			return // the online period ended (or the relay closed: reconnect later)
		}
		t, err := wire.TypeOf(frame)
		if err != nil {
			m.fail(err)
			return
		}
		switch t {
		case wire.FrameDeliver:
			dv, err := wire.ParseDeliver(frame)
			if err != nil {
				m.fail(err)
				return
			}
			k := delivery{dv.ID, i}
			m.mu.Lock()
			if m.received[k]++; m.received[k] > 1 {
				m.redelivered++
			}
			m.mu.Unlock()
			if err := c.Write(cctx, websocket.MessageBinary, (&wire.Ack{Cursor: dv.Cursor}).Marshal()); err != nil {
				return
			}
		case wire.FrameDrained:
			if untilDrained {
				c.Close(websocket.StatusNormalClosure, "")
				return
			}
		}
	}
}

// post sends one sealed message to the churning devices tos and records
// it as accepted on 200.
func (m *mixed) post(ctx context.Context, tos []int, body []byte) {
	s := wire.Send{Sealed: true, Body: body}
	crand.Read(s.ID[:])
	for _, to := range tos {
		s.Accounts = append(s.Accounts, wire.SendAccount{Account: m.f.Account(to), AccessKey: m.f.AccessKey(to),
			Devices: []wire.SendDevice{{Device: 1, Header: []byte("soak")}}})
	}
	// Record before sending: a delivery can race the answer.
	m.mu.Lock()
	for _, to := range tos {
		m.accepted[delivery{s.ID, to}] = true
	}
	m.mu.Unlock()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.base+"/v1/messages", bytes.NewReader(s.Marshal()))
	if err != nil {
		m.fail(err)
		return
	}
	resp, err := http.DefaultClient.Do(req)
	ok := err == nil && resp.StatusCode == http.StatusOK
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if !ok {
		m.mu.Lock()
		for _, to := range tos {
			delete(m.accepted, delivery{s.ID, to})
		}
		m.mu.Unlock()
		if ctx.Err() == nil {
			m.refused.Add(1)
			if err != nil {
				m.fail(err)
			} else {
				m.fail(fmt.Errorf("send answered %d", resp.StatusCode))
			}
		}
	}
}

func (m *mixed) sendLoop(ctx context.Context, rate float64) {
	if rate <= 0 {
		return
	}
	every := time.Duration(float64(time.Second) / rate)
	body := make([]byte, 256)
	for next := time.Now(); ; next = next.Add(every) {
		if !sleepCtx(ctx, time.Until(next)) {
			return
		}
		m.post(ctx, []int{m.first + rand.IntN(m.devices)}, body)
		m.sends.Add(1)
	}
}

func (m *mixed) groupLoop(ctx context.Context, size int, every time.Duration) {
	if size <= 0 || every <= 0 {
		return
	}
	size = min(size, m.devices)
	body := make([]byte, 1024)
	for ctx.Err() == nil {
		if !sleepCtx(ctx, every) {
			return
		}
		tos := make([]int, 0, size)
		for _, j := range rand.Perm(m.devices)[:size] {
			tos = append(tos, m.first+j)
		}
		m.post(ctx, tos, body)
		m.groupSends.Add(1)
	}
}

// blobLoop uploads a random 64 KiB blob, downloads it and compares.
func (m *mixed) blobLoop(ctx context.Context, every time.Duration) {
	if every <= 0 {
		return
	}
	data := make([]byte, 64<<10)
	for ctx.Err() == nil {
		if !sleepCtx(ctx, every) {
			return
		}
		crand.Read(data)
		if err := m.blob(ctx, data); err != nil && ctx.Err() == nil {
			m.blobErrors.Add(1)
			m.fail(err)
			continue
		}
		m.blobs.Add(1)
	}
}

func (m *mixed) blob(ctx context.Context, data []byte) error {
	tok, err := m.f.Token(m.sender, time.Now())
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.base+"/v1/blobs", bytes.NewReader(data))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.ContentLength = int64(len(data))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	var created struct{ ID string }
	err = json.NewDecoder(resp.Body).Decode(&created)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || err != nil {
		return fmt.Errorf("blob upload answered %d (%v)", resp.StatusCode, err)
	}
	req, err = http.NewRequestWithContext(ctx, http.MethodGet, m.base+"/v1/blobs/"+created.ID, nil)
	if err != nil {
		return err
	}
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(got, data) {
		return fmt.Errorf("blob download answered %d with %d bytes (%v)", resp.StatusCode, len(got), err)
	}
	return nil
}

// finish connects every churning device until its queue is drained and
// reports what was accepted and never delivered.
func (m *mixed) finish(ctx context.Context) (lost int) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range m.devices {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			m.connectFor(ctx, m.first+i, 30*time.Second, true)
		}()
	}
	wg.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	for d := range m.accepted {
		if m.received[d] == 0 {
			lost++
		}
	}
	return lost
}

func (m *mixed) summary() string {
	last, _ := m.lastErr.Load().(string)
	m.mu.Lock()
	deliveries := 0
	for _, n := range m.received {
		deliveries += n
	}
	redelivered := m.redelivered
	m.mu.Unlock()
	s := "mixed: " + strconv.FormatInt(m.sends.Load(), 10) + " 1:1 sends and " +
		strconv.FormatInt(m.groupSends.Load(), 10) + " group sends to churning devices, " +
		strconv.Itoa(deliveries) + " deliveries (" + strconv.Itoa(redelivered) + " redelivered after a cut), " +
		strconv.FormatInt(m.reconnects.Load(), 10) + " connections, " +
		strconv.FormatInt(m.blobs.Load(), 10) + " blobs (" + strconv.FormatInt(m.blobErrors.Load(), 10) + " failed), " +
		strconv.FormatInt(m.refused.Load(), 10) + " refused, " + strconv.FormatInt(m.errs.Load(), 10) + " errors"
	if last != "" {
		s += " (last: " + last + ")"
	}
	return s
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
