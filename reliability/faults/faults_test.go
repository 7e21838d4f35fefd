package faults

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/coder/websocket"

	"github.com/sotto-im/sotto/relay/server"
	"github.com/sotto-im/sotto/relay/store"
	"github.com/sotto-im/sotto/relay/store/pebblestore"
	"github.com/sotto-im/sotto/relay/wire"
)

// TestRelayStorageFaults turns a storage fault on under a relay that four
// senders keep busy, and checks, for each kind of fault:
//
//   - every refused send is a 503 with the JSON error code "unavailable";
//   - a device still receives what is stored while the fault lasts;
//   - after the fault clears, the relay store reopens itself
//     (relay/store/recovering) and sends are accepted again within seconds,
//     without a restart, and every message answered 200 is delivered
//     exactly once;
//   - after a restart on what reached the disk (unsynced data dropped, as a
//     power cut would), every message answered 200 is still delivered
//     exactly once, and new sends succeed.
func TestRelayStorageFaults(t *testing.T) {
	eio := errorfs.ErrInjected
	for _, tc := range []struct {
		name  string
		match func(errorfs.Op) bool
		err   error
	}{
		{"wal write error", walWrite, eio},
		{"wal sync error", walSync, eio},
		{"full disk", anyWrite, errNoSpace},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := vfs.NewCrashableMem()
			f := &fault{match: tc.match, err: tc.err}
			e := newRelayEnv(t, errorfs.Wrap(mem, f), "relay")
			bob := store.QueueID{Account: e.account(1), Device: 1}
			alice := e.token(store.QueueID{Account: e.account(1), Device: 1})

			var mu sync.Mutex
			var accepted [][16]byte
			refused := 0
			for range 10 {
				id := newID()
				if status, code, err := e.send(alice, bob, id, []byte("before")); err != nil || status != http.StatusOK {
					t.Fatalf("healthy send: %d %s %v", status, code, err)
				}
				accepted = append(accepted, id)
			}

			// Senders race the fault.
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for range 4 {
				wg.Go(func() {
					for {
						select {
						case <-stop:
							return
						default:
						}
						id := newID()
						status, code, err := e.send(alice, bob, id, []byte("during"))
						mu.Lock()
						switch {
						case err != nil:
							t.Errorf("send: %v", err)
						case status == http.StatusOK:
							accepted = append(accepted, id)
						case status == http.StatusServiceUnavailable && code == server.CodeUnavailable:
							refused++
						default:
							t.Errorf("send during a fault: %d %q, want 200 or 503 unavailable", status, code)
						}
						mu.Unlock()
					}
				})
			}
			time.Sleep(100 * time.Millisecond)
			f.on.Store(true)
			time.Sleep(200 * time.Millisecond)
			close(stop)
			wg.Wait()
			if refused == 0 {
				t.Fatal("no send was refused while the disk failed")
			}
			t.Logf("%s: %d accepted, %d refused with 503", tc.name, len(accepted), refused)

			// The fault lasts: sends refused, store reports its failure,
			// stored messages are still delivered.
			if status, code, _ := e.send(alice, bob, newID(), []byte("x")); status != http.StatusServiceUnavailable || code != server.CodeUnavailable {
				t.Fatalf("send while failed: %d %q", status, code)
			}
			// The disk probe fails too, so the failed store is kept for
			// its reads.
			time.Sleep(300 * time.Millisecond)
			if err := e.db.Failed(); !errors.Is(err, pebblestore.ErrFailed) {
				t.Fatalf("Failed() = %v", err)
			}
			if tc.err == errNoSpace && !errors.Is(e.db.Failed(), syscall.ENOSPC) {
				t.Fatalf("the failure does not name the cause: %v", e.db.Failed())
			}
			r, err := e.dial(bob)
			if err != nil {
				t.Fatalf("a device cannot connect while the disk fails: %v", err)
			}
			// Without acknowledgements the relay sends at most its window
			// (64) of messages.
			got, closed := r.drain(t, false, 64)
			if closed || len(got) < min(10, len(accepted)) {
				t.Fatalf("delivery while failed: %d messages, closed %v", len(got), closed)
			}
			// An acknowledgement is a write: it cannot be applied now. The
			// connection must not take the server down; the message is
			// delivered again after the restart (clients drop duplicates).
			ackCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			ackErr := r.c.Write(ackCtx, websocket.MessageBinary, (&wire.Ack{Cursor: r.lastCursor}).Marshal())
			cancel()
			_, ackClosed := r.drain(t, false, 1)
			t.Logf("ack while failed: write err %v, connection closed afterwards: %v", ackErr, ackClosed)
			r.c.CloseNow()

			// The fault clears: the store reopens itself, sends are
			// accepted again within seconds, no restart.
			f.on.Store(false)
			cleared := time.Now()
			for {
				id := newID()
				status, code, err := e.send(alice, bob, id, []byte("after the fault"))
				if err != nil {
					t.Fatal(err)
				}
				if status == http.StatusOK {
					accepted = append(accepted, id)
					break
				}
				if status != http.StatusServiceUnavailable || code != server.CodeUnavailable {
					t.Fatalf("send while recovering: %d %q", status, code)
				}
				if time.Since(cleared) > 10*time.Second {
					t.Fatal("sends still refused 10 s after the fault cleared")
				}
				time.Sleep(20 * time.Millisecond)
			}
			t.Logf("%s: sends accepted again %v after the fault cleared (no restart)", tc.name, time.Since(cleared).Round(time.Millisecond))
			if err := e.db.Failed(); err != nil {
				t.Fatalf("recovered store reports %v", err)
			}
			r, err = e.dial(bob)
			if err != nil {
				t.Fatal(err)
			}
			got, closed = r.drain(t, true, 0)
			if closed {
				t.Fatal("connection closed while draining after recovery")
			}
			checkOnce(t, "after recovery", got, accepted)
			r.c.CloseNow()
			// More accepted after the recovery, left unacknowledged for
			// the crash below.
			for range 5 {
				id := newID()
				if status, code, err := e.send(alice, bob, id, []byte("after")); status != http.StatusOK {
					t.Fatalf("send after recovery: %d %q %v", status, code, err)
				}
				accepted = append(accepted, id)
			}

			// Restart on what reached the disk.
			e.fs = mem.CrashClone(vfs.CrashCloneCfg{})
			e.restart()
			if err := e.db.Failed(); err != nil {
				t.Fatalf("reopened store failed: %v", err)
			}
			r, err = e.dial(bob)
			if err != nil {
				t.Fatal(err)
			}
			got, closed = r.drain(t, true, 0)
			if closed {
				t.Fatal("connection closed while draining after restart")
			}
			// The acknowledgements made after the recovery were synced by
			// the sends that followed them: the five messages sent last
			// (never acknowledged) must come exactly once, and nothing
			// twice.
			checkOnce(t, "after a crash and restart", got, accepted[len(accepted)-5:])
			if status, code, err := e.send(alice, bob, newID(), []byte("after")); status != http.StatusOK {
				t.Fatalf("send after restart: %d %q %v", status, code, err)
			}
		})
	}
}

// checkOnce requires every accepted ID exactly once in got, and no ID
// twice.
func checkOnce(t *testing.T, when string, got, accepted [][16]byte) {
	t.Helper()
	have := make(map[[16]byte]int, len(got))
	for _, id := range got {
		have[id]++
		if have[id] > 1 {
			t.Fatalf("%s: message delivered twice in one drain", when)
		}
	}
	for i, id := range accepted {
		if have[id] != 1 {
			t.Fatalf("%s: accepted message %d of %d delivered %d times", when, i, len(accepted), have[id])
		}
	}
}
