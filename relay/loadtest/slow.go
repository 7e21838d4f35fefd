package loadtest

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/coder/websocket"

	"github.com/sotto-im/sotto/relay/wire"
)

// SlowResult is the outcome of a slow-consumer run; it marshals to one JSON
// line.
type SlowResult struct {
	Mode string `json:"mode"`
	// Devices connected and never read; each had Backlog messages queued.
	Devices int `json:"devices"`
	Backlog int `json:"backlog_per_device"`
	// RSSPerDevice and GoMemPerDevice are the relay's growth per device
	// over its memory before the devices connected.
	RSSPerDevice   float64 `json:"rss_bytes_per_device"`
	GoMemPerDevice float64 `json:"heap_plus_stack_bytes_per_device"`
	Before, After  MemStats
}

// Slow connects devices (accounts [0, devices)) that never read, queues
// backlog messages of payload bytes for each of them (multi-recipient
// sends from account devices, so the bodies are stored once per send),
// and reports the relay's memory per device: it must stay bounded by the
// delivery window whatever the backlog.
func Slow(ctx context.Context, baseURL string, f Fixture, devices, backlog, payload int) (SlowResult, error) {
	res := SlowResult{Mode: "slow", Devices: devices, Backlog: backlog}
	before, err := getMem(ctx, baseURL)
	if err != nil {
		return res, err
	}
	cs, err := dialAll(ctx, baseURL, f, 0, devices)
	if err != nil {
		return res, err
	}
	defer func() {
		for _, c := range cs {
			c.CloseNow()
		}
	}()
	sender, err := dial(ctx, baseURL, f, devices)
	if err != nil {
		return res, err
	}
	defer sender.CloseNow()
	results := make(chan error, 1)
	go func() { // read send results
		for n := 0; n < backlog; {
			_, fr, err := sender.Read(ctx)
			if err != nil {
				results <- err
				return
			}
			if wire.FrameType(fr[0]) != wire.FrameSendResult {
				continue
			}
			r, err := wire.ParseSendResult(fr)
			if err != nil || r.Status != 200 {
				results <- fmt.Errorf("loadtest: slow send refused: %+v %v", r, err)
				return
			}
			n++
		}
		results <- nil
	}()
	runID := rand.Uint64()
	m := wire.Send{Sealed: true, Body: make([]byte, payload)}
	for i := range devices {
		m.Accounts = append(m.Accounts, wire.SendAccount{Account: f.Account(i), AccessKey: f.AccessKey(i), Devices: []wire.SendDevice{{Device: 1}}})
	}
	for seq := range backlog {
		m.RequestID = uint32(seq)
		binary.BigEndian.PutUint64(m.ID[:], runID)
		binary.BigEndian.PutUint64(m.ID[8:], uint64(seq))
		if err := sender.Write(ctx, websocket.MessageBinary, m.Marshal()); err != nil {
			return res, err
		}
	}
	if err := <-results; err != nil {
		return res, err
	}
	time.Sleep(2 * time.Second) // let every connection fill its window
	after, err := getMem(ctx, baseURL)
	if err != nil {
		return res, err
	}
	res.Before, res.After = before, after
	n := float64(devices)
	res.RSSPerDevice = float64(after.RSS-before.RSS) / n
	res.GoMemPerDevice = float64(after.HeapInuse+after.StackInuse-before.HeapInuse-before.StackInuse) / n
	return res, nil
}
