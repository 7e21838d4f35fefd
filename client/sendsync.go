package client

import (
	"context"
	"sync"
	"time"
)

// Sends share their syncs. Send writes its history record and outbox entry
// deferred and returns only once a store sync has made them durable. Each
// Send syncing on its own costs a disk flush per message: with Sends from
// many goroutines at once (an app importing a backlog, a bot, the
// benchmarks) the flushes come one after another, since each is short, and
// a flush holds a Go processor while the thread waits in the kernel
// (BENCHMARKS.md: GOMAXPROCS above the core count let the same work finish
// 15 % sooner, the processors no longer stuck in fdatasync). So while
// Sends come in a stream (another Send synced less than sendSyncStream
// ago, or is writing now), a Send whose writes are done waits up to
// sendSyncDelay for the others, and one sync makes the whole group
// durable: the commit delay databases apply to concurrent transactions. A
// Send on its own syncs at once, so an app sending now and then sees no
// delay.
type sendSyncs struct {
	mu        sync.Mutex
	writing   int          // Sends between beginSend and syncSend
	waiting   []chan error // Sends whose writes are done, waiting for the sync
	timer     *time.Timer  // flushes waiting after sendSyncDelay; nil if unarmed
	lastFlush time.Time
}

const (
	// sendSyncDelay bounds how long a Send waits for other Sends before
	// its sync.
	sendSyncDelay = 200 * time.Microsecond
	// sendSyncStream is how recent the last sync must be for a Send to
	// count as part of a stream.
	sendSyncStream = 500 * time.Microsecond
	// maxSendGroup flushes a group this large at once.
	maxSendGroup = 64
)

// beginSend registers a Send that is about to write; it must be followed
// by syncSend or abortSend.
func (c *Client) beginSend() {
	g := &c.sendSyncs
	g.mu.Lock()
	g.writing++
	g.mu.Unlock()
}

// abortSend ends a Send that wrote nothing to make durable.
func (c *Client) abortSend() {
	g := &c.sendSyncs
	g.mu.Lock()
	g.writing--
	flush := g.writing == 0 && len(g.waiting) > 0
	g.mu.Unlock()
	if flush {
		c.flushSendSyncs()
	}
}

// syncSend returns once the Send's writes are durable (or ctx ends).
func (c *Client) syncSend(ctx context.Context) error {
	g := &c.sendSyncs
	done := make(chan error, 1)
	g.mu.Lock()
	g.writing--
	g.waiting = append(g.waiting, done)
	flush := len(g.waiting) >= maxSendGroup || g.writing == 0 && time.Since(g.lastFlush) > sendSyncStream
	if !flush && g.timer == nil {
		g.timer = time.AfterFunc(sendSyncDelay, c.flushSendSyncs)
	}
	g.mu.Unlock()
	if flush {
		c.flushSendSyncs()
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// flushSendSyncs syncs the store once for every Send waiting.
func (c *Client) flushSendSyncs() {
	g := &c.sendSyncs
	g.mu.Lock()
	waiting := g.waiting
	g.waiting = nil
	if g.timer != nil {
		g.timer.Stop()
		g.timer = nil
	}
	g.lastFlush = time.Now()
	g.mu.Unlock()
	if len(waiting) == 0 {
		return
	}
	err := c.sync(c.ctx)
	for _, w := range waiting {
		w <- err
	}
}
