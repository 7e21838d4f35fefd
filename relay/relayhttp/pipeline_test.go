package relayhttp_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync"
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

// dialSendErr opens the anonymous send-only socket, with extra request
// headers if given.
func (e *env) dialSendErr(header http.Header) (*device, *http.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.hs.URL, "http")+"/v1/relay/ws/send",
		&websocket.DialOptions{HTTPHeader: header, Subprotocols: []string{wire.Subprotocol}})
	if err != nil {
		return nil, resp, err
	}
	d := newDevice(e.t, c)
	e.t.Cleanup(func() { c.CloseNow() })
	return d, resp, nil
}

func (e *env) dialSend() *device {
	e.t.Helper()
	d, _, err := e.dialSendErr(nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return d
}

// setAccessKey registers q's account's delivery access key.
func (e *env) setAccessKey(q store.QueueID, key [32]byte) {
	e.t.Helper()
	kb, _ := json.Marshal(map[string]string{"access_key": b64(key[:])})
	if status, body := e.do("PUT", "/v1/relay/access-key", e.token(q), kb); status != http.StatusNoContent {
		e.t.Fatalf("register access key: %d %s", status, body)
	}
}

// sealedMsg builds a sealed single-recipient Send.
func sealedMsg(to store.QueueID, key [32]byte, body string) *wire.Send {
	m := msg(to, 0, body)
	m.Sealed = true
	m.Accounts[0].AccessKey = key
	return m
}

// pipeline writes msgs on d with at most wire.MaxSendsInFlight unanswered,
// numbering their request IDs from 1, and returns the status of each (by
// index) once all are answered.
func pipeline(t *testing.T, d *device, msgs []*wire.Send) []uint16 {
	t.Helper()
	status := make([]uint16, len(msgs))
	slots := make(chan struct{}, wire.MaxSendsInFlight)
	errc := make(chan error, 1)
	go func() {
		for i, m := range msgs {
			slots <- struct{}{}
			m.RequestID = uint32(i + 1)
			if err := d.write(m.Marshal()); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	for range msgs {
		f := d.next()
		r, err := wire.ParseSendResult(f)
		if err != nil || r.RequestID == 0 || int(r.RequestID) > len(msgs) || status[r.RequestID-1] != 0 {
			t.Fatalf("bad or repeated SendResult %+v: %v", r, err)
		}
		status[r.RequestID-1] = r.Status
		<-slots
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return status
}

// receiveAll reads n messages on d, acknowledging each, and returns their
// bodies in delivery order.
func receiveAll(t *testing.T, d *device, n int) []string {
	t.Helper()
	var bodies []string
	for len(bodies) < n {
		f := d.next()
		if wire.ParseDrained(f) == nil {
			continue
		}
		m, err := wire.ParseDeliver(f)
		if err != nil {
			t.Fatalf("want Deliver: %v", err)
		}
		bodies = append(bodies, string(m.Body))
		d.ack(m.Cursor)
	}
	return bodies
}

// checkSenderOrder checks that, for each prefix, the bodies that start with
// it are prefix0, prefix1, ... in that order, n of them.
func checkSenderOrder(t *testing.T, bodies []string, counts map[string]int) {
	t.Helper()
	next := map[string]int{}
	for _, b := range bodies {
		p, n, ok := strings.Cut(b, "-")
		if !ok {
			t.Fatalf("unexpected body %q", b)
		}
		if want := fmt.Sprint(next[p]); n != want {
			t.Fatalf("sender %s: got message %s, want %s", p, n, want)
		}
		next[p]++
	}
	for p, n := range counts {
		if next[p] != n {
			t.Fatalf("sender %s: %d messages delivered, want %d", p, next[p], n)
		}
	}
}

func numbered(prefix string, n int, mk func(body string) *wire.Send) []*wire.Send {
	msgs := make([]*wire.Send, n)
	for i := range msgs {
		msgs[i] = mk(fmt.Sprintf("%s-%d", prefix, i))
	}
	return msgs
}

func allOK(t *testing.T, what string, status []uint16) {
	t.Helper()
	for i, s := range status {
		if s != http.StatusOK {
			t.Fatalf("%s: send %d answered %d", what, i, s)
		}
	}
}

// TestPipelinedSendsStoredInOrder pipelines 1,000 sends (64 in flight) over
// one connection to one recipient device, which must receive them in send
// order: sealed sends over the anonymous socket, identified ones over the
// authenticated socket, and both again while a second sender hammers the
// same queue (each sender's own order must hold).
func TestPipelinedSendsStoredInOrder(t *testing.T) {
	n := 1000
	if raceEnabled {
		n = 200
	}
	e := newEnv(t, envOptions{cfg: server.Config{IdentifiedRate: 1e6, IdentifiedBurst: 1e6}})
	bob := store.QueueID{Account: e.account(1), Device: 1}
	key := [32]byte{7}
	e.setAccessKey(bob, key)
	alice := store.QueueID{Account: e.account(1), Device: 1}
	sealed := func(body string) *wire.Send { return sealedMsg(bob, key, body) }
	identified := func(body string) *wire.Send { return msg(bob, 0, body) }

	rx := e.dial(bob)
	rx.drained()

	t.Run("sealed over the anonymous socket", func(t *testing.T) {
		allOK(t, "sealed", pipeline(t, e.dialSend(), numbered("s", n, sealed)))
		checkSenderOrder(t, receiveAll(t, rx, n), map[string]int{"s": n})
	})
	t.Run("identified over the authenticated socket", func(t *testing.T) {
		d := e.dial(alice)
		d.drained()
		allOK(t, "identified", pipeline(t, d, numbered("i", n, identified)))
		checkSenderOrder(t, receiveAll(t, rx, n), map[string]int{"i": n})
		d.c.Close(websocket.StatusNormalClosure, "")
	})
	t.Run("with a second sender on the same queue", func(t *testing.T) {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			// The hammer: another anonymous socket, pipelining too.
			defer wg.Done()
			allOK(t, "hammer", pipeline(t, e.dialSend(), numbered("h", n, sealed)))
		}()
		d := e.dial(alice)
		d.drained()
		wg.Add(1)
		go func() {
			defer wg.Done()
			allOK(t, "identified", pipeline(t, d, numbered("i", n/2, identified)))
		}()
		allOK(t, "sealed", pipeline(t, e.dialSend(), numbered("s", n, sealed)))
		wg.Wait()
		checkSenderOrder(t, receiveAll(t, rx, 2*n+n/2), map[string]int{"s": n, "h": n, "i": n / 2})
		d.c.Close(websocket.StatusNormalClosure, "")
	})
	// The last acknowledgements may still be on their way.
	for deadline := time.Now().Add(5 * time.Second); e.depth(bob) != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d messages left after every one was acknowledged", e.depth(bob))
		}
	}
}

// TestPipelinedSendsWithoutOrderedStore checks the fallback for a store
// without store.OrderedPutter: pipelined sends are all stored, once each
// (in no guaranteed order).
func TestPipelinedSendsWithoutOrderedStore(t *testing.T) {
	e := newEnv(t, envOptions{unordered: true})
	bob := store.QueueID{Account: e.account(1), Device: 1}
	key := [32]byte{6}
	e.setAccessKey(bob, key)
	const n = 300
	allOK(t, "sealed", pipeline(t, e.dialSend(), numbered("s", n, func(b string) *wire.Send { return sealedMsg(bob, key, b) })))
	bodies := receiveAll(t, e.dial(bob), n)
	seen := map[string]bool{}
	for _, b := range bodies {
		if seen[b] {
			t.Fatalf("%s delivered twice", b)
		}
		seen[b] = true
	}
}

// TestSendSocketIsSendOnly checks what the anonymous socket refuses: a
// Send without the sealed flag (401, the connection stays open), a bad
// access key (401), an Ack (1008), and an Authorization header at the
// upgrade (400); and that nothing is delivered on it.
func TestSendSocketIsSendOnly(t *testing.T) {
	e := newEnv(t, envOptions{})
	bob := store.QueueID{Account: e.account(1), Device: 1}
	key := [32]byte{9}
	e.setAccessKey(bob, key)
	alice := store.QueueID{Account: e.account(1), Device: 1}

	d := e.dialSend()
	identified := msg(bob, 0, "who am I?")
	wrongKey := sealedMsg(bob, [32]byte{8}, "guess")
	good := sealedMsg(bob, key, "sealed")
	for i, m := range []*wire.Send{identified, wrongKey, good} {
		m.RequestID = uint32(10 + i)
		if err := d.write(m.Marshal()); err != nil {
			t.Fatal(err)
		}
	}
	want := map[uint32]uint16{10: http.StatusUnauthorized, 11: http.StatusUnauthorized, 12: http.StatusOK}
	for range want {
		r, err := wire.ParseSendResult(d.next())
		if err != nil || want[r.RequestID] != r.Status {
			t.Fatalf("result %+v, %v; want statuses %v", r, err, want)
		}
		if r.Status == http.StatusUnauthorized && r.Code != server.CodeUnauthorized {
			t.Fatalf("code %q", r.Code)
		}
	}
	// The sealed message reached bob; nothing is delivered on the send
	// socket, not even a Drained marker.
	rx := e.dial(bob)
	if m := rx.deliver(); string(m.Body) != "sealed" {
		t.Fatalf("bob got %q", m.Body)
	}
	d.quiet(200 * time.Millisecond)
	if err := d.write((&wire.Ack{}).Marshal()); err != nil {
		t.Fatal(err)
	}
	if code := d.closeStatus(); code != websocket.StatusPolicyViolation {
		t.Fatalf("Ack on the send socket: closed with %d, want 1008", code)
	}

	h := http.Header{}
	h.Set("Authorization", "Bearer "+e.token(alice))
	if _, resp, err := e.dialSendErr(h); err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("send socket with a token: %v, %+v; want 400", err, resp)
	}
}

// gate is a filesystem wrapper whose write-ahead log writes block while it
// is shut, so that Puts stay waiting for durability.
type gate struct {
	mu   sync.Mutex
	open chan struct{} // closed while the gate is open
}

func newGate() *gate {
	g := &gate{open: make(chan struct{})}
	close(g.open)
	return g
}

func (g *gate) shut() {
	g.mu.Lock()
	g.open = make(chan struct{})
	g.mu.Unlock()
}

func (g *gate) release() {
	g.mu.Lock()
	select {
	case <-g.open:
	default:
		close(g.open)
	}
	g.mu.Unlock()
}

func (g *gate) MaybeError(op errorfs.Op) error {
	if strings.HasSuffix(op.Path, ".log") && op.Kind.ReadOrWrite() == errorfs.OpIsWrite {
		g.mu.Lock()
		c := g.open
		g.mu.Unlock()
		<-c
	}
	return nil
}

func (g *gate) String() string { return "gate" }

// TestSendFloodIsBounded writes far more than wire.MaxSendsInFlight sends
// on the anonymous socket while the store cannot sync: the relay holds at
// most that many (it stops reading the socket), and once the store syncs
// again every send is answered and stored in order.
func TestSendFloodIsBounded(t *testing.T) {
	g := newGate()
	e := newEnv(t, envOptions{store: pebblestore.Options{FS: errorfs.Wrap(vfs.Default, g)}})
	t.Cleanup(g.release) // before the store closes
	bob := store.QueueID{Account: e.account(1), Device: 1}
	key := [32]byte{3}
	e.setAccessKey(bob, key)
	d := e.dialSend()
	// One send through first, so that the connection's goroutines exist.
	allOK(t, "first", pipeline(t, d, numbered("f", 1, func(b string) *wire.Send { return sealedMsg(bob, key, b) })))
	settle := func() int {
		n := runtime.NumGoroutine()
		for range 20 {
			time.Sleep(50 * time.Millisecond)
			n = min(n, runtime.NumGoroutine())
		}
		return n
	}
	before := settle()

	g.shut()
	const flood = 600
	msgs := numbered("s", flood, func(b string) *wire.Send { return sealedMsg(bob, key, b) })
	for i, m := range msgs {
		m.RequestID = uint32(i + 1)
		if err := d.write(m.Marshal()); err != nil {
			t.Fatal(err)
		}
	}
	// The reader takes sends until every slot is used...
	for deadline := time.Now().Add(10 * time.Second); runtime.NumGoroutine()-before < wire.MaxSendsInFlight; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d goroutines more: the sends were not pipelined", runtime.NumGoroutine()-before)
		}
	}
	// ...and then no more: it stops reading.
	for range 30 {
		if extra := runtime.NumGoroutine() - before; extra > wire.MaxSendsInFlight+16 {
			t.Fatalf("%d goroutines more with %d sends written and the store stalled; want at most about %d", extra, flood, wire.MaxSendsInFlight)
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.quiet(100 * time.Millisecond) // nothing answered before it is durable

	g.release()
	seen := map[uint32]bool{}
	for range flood {
		r, err := wire.ParseSendResult(d.next())
		if err != nil || r.Status != http.StatusOK || seen[r.RequestID] {
			t.Fatalf("result %+v, %v", r, err)
		}
		seen[r.RequestID] = true
	}
	rx := e.dial(bob)
	checkSenderOrder(t, receiveAll(t, rx, flood+1), map[string]int{"f": 1, "s": flood})
}

// TestSendSocketClosedWithSendsInFlight closes the anonymous socket while
// sends are waiting: every send answered 200 is stored exactly once, and a
// retry of each send (same message ID) is accepted as a duplicate, leaving
// every message stored exactly once.
func TestSendSocketClosedWithSendsInFlight(t *testing.T) {
	e := newEnv(t, envOptions{})
	bob := store.QueueID{Account: e.account(1), Device: 1}
	key := [32]byte{5}
	e.setAccessKey(bob, key)
	const n = 300
	msgs := numbered("s", n, func(b string) *wire.Send { return sealedMsg(bob, key, b) })

	d := e.dialSend()
	for i, m := range msgs {
		m.RequestID = uint32(i + 1)
		if err := d.write(m.Marshal()); err != nil {
			break // the relay may stop reading
		}
		if i == n/2 {
			break
		}
	}
	answered := map[string]bool{}
	for len(answered) < 20 {
		r, err := wire.ParseSendResult(d.next())
		if err != nil || r.Status != http.StatusOK {
			t.Fatalf("result %+v, %v", r, err)
		}
		answered[string(msgs[r.RequestID-1].Body)] = true
	}
	d.c.CloseNow() // with sends in flight

	count := func() map[string]int {
		ms, err := e.db.Fetch(context.Background(), bob, store.Cursor{}, 10*n)
		if err != nil {
			t.Fatal(err)
		}
		c := map[string]int{}
		for _, m := range ms {
			c[string(m.Body)]++
		}
		return c
	}
	// Let what was submitted finish.
	time.Sleep(200 * time.Millisecond)
	stored := count()
	for b := range answered {
		if stored[b] != 1 {
			t.Fatalf("answered send %s stored %d times", b, stored[b])
		}
	}
	for b, k := range stored {
		if k != 1 {
			t.Fatalf("%s stored %d times", b, k)
		}
	}

	// Retry everything, pipelined on a new socket.
	allOK(t, "retry", pipeline(t, e.dialSend(), msgs))
	stored = count()
	if len(stored) != n {
		t.Fatalf("%d messages stored after the retry, want %d", len(stored), n)
	}
	for b, k := range stored {
		if k != 1 {
			t.Fatalf("%s stored %d times", b, k)
		}
	}
	if dup := testDuplicates(t, e); dup < len(answered) {
		t.Fatalf("%d entries refused as duplicates, want at least %d", dup, len(answered))
	}
}

func testDuplicates(t *testing.T, e *env) int {
	t.Helper()
	st, err := e.db.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return int(st.Duplicate)
}

// TestShutdownWithStoreStalled fills the store's request queue from many
// send sockets while its log cannot be written, so that readers block
// submitting; the relay must still shut down promptly (closing a
// connection cancels what it waits for), before the store recovers.
func TestShutdownWithStoreStalled(t *testing.T) {
	g := newGate()
	e := newEnv(t, envOptions{store: pebblestore.Options{FS: errorfs.Wrap(vfs.Default, g)}})
	t.Cleanup(g.release) // before the store closes
	bob := store.QueueID{Account: e.account(1), Device: 1}
	key := [32]byte{2}
	e.setAccessKey(bob, key)
	g.shut()
	// 30 × 64 in flight: more than the store takes while stalled (a batch
	// of 512 being built, 1,024 queued), so some readers block submitting.
	const sockets, each = 30, 70
	for s := range sockets {
		d := e.dialSend()
		for i := range each {
			if err := d.write(sealedMsg(bob, key, fmt.Sprintf("%d-%d", s, i)).Marshal()); err != nil {
				t.Fatal(err)
			}
		}
	}
	time.Sleep(500 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := e.srv.Close(ctx); err != nil {
		t.Fatalf("Close with the store stalled: %v after %v", err, time.Since(start))
	}
}
