package loadtest

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/sotto-im/sotto/relay/wire"
)

// GroupResult is the outcome of a group-send run; it marshals to one JSON
// line.
type GroupResult struct {
	Mode       string `json:"mode"`
	Recipients int    `json:"recipients"`
	Payload    int    `json:"payload_bytes"`
	Sends      int    `json:"sends"`
	// AcceptP50ms and AcceptP99ms: from writing the Send to reading its
	// SendResult (stored durably for every recipient).
	AcceptP50ms float64 `json:"accept_p50_ms"`
	AcceptMaxms float64 `json:"accept_max_ms"`
	// FanoutP50ms: from writing the Send until every recipient device
	// received it.
	FanoutP50ms float64 `json:"fanout_p50_ms"`
}

// Group connects devices receivers (accounts [0, devices)), then sends
// sends sealed messages of payload bytes, one at a time, each to all of
// them at once (one multi-recipient Send: the body stored once), and
// reports how long each took to be accepted and to reach every device.
func Group(ctx context.Context, baseURL string, f Fixture, devices, sends, payload int) (GroupResult, error) {
	res := GroupResult{Mode: "group", Recipients: devices, Payload: payload, Sends: sends}
	receivers, err := dialAll(ctx, baseURL, f, 0, devices)
	if err != nil {
		return res, err
	}
	sender, err := dial(ctx, baseURL, f, devices)
	if err != nil {
		return res, err
	}
	all := append(receivers, sender)
	defer func() {
		for _, c := range all {
			c.CloseNow()
		}
	}()
	var wg sync.WaitGroup
	var delivered atomic.Int64
	drained := make(chan struct{}, devices)
	for _, c := range receivers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				_, fr, err := c.Read(context.Background())
				if err != nil {
					return
				}
				switch wire.FrameType(fr[0]) {
				case wire.FrameDrained:
					drained <- struct{}{}
				case wire.FrameDeliver:
					d, err := wire.ParseDeliver(fr)
					if err != nil {
						continue
					}
					delivered.Add(1)
					c.Write(context.Background(), websocket.MessageBinary, (&wire.Ack{Cursor: d.Cursor}).Marshal())
				}
			}
		}()
	}
	for range devices {
		select {
		case <-drained:
		case <-time.After(30 * time.Second):
			return res, fmt.Errorf("loadtest: receivers did not drain")
		}
	}
	delivered.Store(0)
	m := wire.Send{Sealed: true, Body: make([]byte, payload)}
	for i := range devices {
		m.Accounts = append(m.Accounts, wire.SendAccount{Account: f.Account(i), AccessKey: f.AccessKey(i), Devices: []wire.SendDevice{{Device: 1}}})
	}
	runID := rand.Uint64()
	var accept, fanout []time.Duration
	for seq := range sends {
		m.RequestID = uint32(seq)
		binary.BigEndian.PutUint64(m.ID[:], runID)
		binary.BigEndian.PutUint64(m.ID[8:], uint64(seq))
		frame := m.Marshal()
		t0 := time.Now()
		if err := sender.Write(ctx, websocket.MessageBinary, frame); err != nil {
			return res, err
		}
		for {
			_, fr, err := sender.Read(ctx)
			if err != nil {
				return res, err
			}
			if wire.FrameType(fr[0]) != wire.FrameSendResult {
				continue
			}
			r, err := wire.ParseSendResult(fr)
			if err != nil || r.Status != 200 {
				return res, fmt.Errorf("loadtest: group send refused: %+v %v", r, err)
			}
			break
		}
		accept = append(accept, time.Since(t0))
		want := int64(devices * (seq + 1))
		for delivered.Load() < want {
			if time.Since(t0) > 30*time.Second {
				return res, fmt.Errorf("loadtest: group message %d reached %d of %d devices", seq, delivered.Load()-int64(devices*seq), devices)
			}
			time.Sleep(50 * time.Microsecond)
		}
		fanout = append(fanout, time.Since(t0))
	}
	for _, c := range all {
		c.CloseNow()
	}
	wg.Wait()
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }
	slices.Sort(accept)
	slices.Sort(fanout)
	res.AcceptP50ms, res.AcceptMaxms = ms(accept[len(accept)/2]), ms(accept[len(accept)-1])
	res.FanoutP50ms = ms(fanout[len(fanout)/2])
	return res, nil
}
