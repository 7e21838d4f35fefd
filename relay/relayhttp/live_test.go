package relayhttp_test

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/sotto-im/sotto/relay/server"
	"github.com/sotto-im/sotto/relay/store"
)

// TestLiveHandOverExactlyOnce sends from many goroutines at once to a
// connected device with a small window, so that stored messages reach its
// connection out of order, while it is not caught up and while its window
// is full: every message must arrive exactly once, nothing may stay queued,
// and a higher priority still comes first in a backlog.
func TestLiveHandOverExactlyOnce(t *testing.T) {
	e := newEnv(t, envOptions{cfg: server.Config{Window: 4, IdentifiedRate: 1e6, IdentifiedBurst: 1e6}})
	bob := store.QueueID{Account: e.account(1), Device: 1}
	from := e.token(store.QueueID{Account: e.account(1), Device: 1})
	d := e.dial(bob)
	d.drained()

	const senders, each = 8, 25
	var wg sync.WaitGroup
	for g := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if status, body := e.send(from, msg(bob, uint8(i%3), fmt.Sprint(g, "/", i))); status != http.StatusOK {
					t.Errorf("send: %d %s", status, body)
					return
				}
			}
		}()
	}
	seen := map[string]int{}
	for len(seen) < senders*each {
		m := d.deliver()
		seen[string(m.Body)]++
		if seen[string(m.Body)] > 1 {
			t.Fatalf("%q delivered twice", m.Body)
		}
		d.ack(m.Cursor)
	}
	wg.Wait()
	d.quiet(200 * time.Millisecond)
	waitFor(t, func() bool { return e.depth(bob) == 0 })

	// With the window full, a later high-priority message overtakes the
	// low-priority backlog.
	for i := range 6 {
		e.mustSend(from, msg(bob, 0, fmt.Sprint("low", i)))
	}
	var held [][9]byte
	for range 4 {
		held = append(held, d.deliver().Cursor)
	}
	e.mustSend(from, msg(bob, 7, "urgent"))
	d.quiet(100 * time.Millisecond)
	d.ack(held[0])
	if m := d.deliver(); string(m.Body) != "urgent" {
		t.Fatalf("after the window opened: %q, want the urgent message", m.Body)
	}
}
