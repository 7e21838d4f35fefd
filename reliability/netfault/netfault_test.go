// Package netfault runs a real sottod behind a misbehaving TCP proxy and
// misbehaving clients: connections cut mid-frame, a silent (half-open)
// path, a slow-loris client, the server killed during a blob upload, and
// the key server down while the relay stays up.
package netfault

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sotto-im/sotto/client"
	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/client/store/memstore"
	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/reliability/internal/harness"
)

func skipShort(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the sottod binary")
	}
}

func newUser(t *testing.T, name, url string, roots []crypto.TrustRoot) *harness.User {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	u, err := harness.NewUser(ctx, name, url, roots)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.C.Close() })
	return u
}

func check(t *testing.T, streams []*harness.Stream) harness.Report {
	t.Helper()
	return checkWait(t, streams, 60*time.Second)
}

func checkWait(t *testing.T, streams []*harness.Stream, wait time.Duration) harness.Report {
	t.Helper()
	rep := harness.Check(context.Background(), streams, 60*time.Second, wait)
	for _, e := range rep.Errors {
		t.Error(e)
	}
	if rep.Sent == 0 {
		t.Error("nothing was sent")
	}
	return rep
}

// TestCutMidFrame cuts every client connection (HTTP sends, blob uploads,
// the relay WebSocket) at random moments while two clients talk; every
// message that reached Sent arrives once, in order.
func TestCutMidFrame(t *testing.T) {
	skipShort(t)
	t.Parallel()
	srv := harness.StartT(t, t.TempDir())
	px, err := harness.NewProxy(srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	url := "http://" + px.Addr
	roots := []crypto.TrustRoot{srv.Trust}
	alice, bob := newUser(t, "alice", url, roots), newUser(t, "bob", url, roots)
	ab, ba, err := harness.Befriend(context.Background(), alice, bob)
	if err != nil {
		t.Fatal(err)
	}
	streams := []*harness.Stream{
		{Label: "ab", From: alice, Conv: ab, To: []*harness.User{bob}, Attach: true, Pause: 20 * time.Millisecond},
		{Label: "ba", From: bob, Conv: ba, To: []*harness.User{alice}, Pause: 20 * time.Millisecond},
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, s := range streams {
		wg.Go(func() { s.Run(context.Background(), stop) })
	}
	for range 15 {
		time.Sleep(time.Duration(100+time.Now().UnixNano()%300) * time.Millisecond)
		px.Cut()
	}
	close(stop)
	wg.Wait()
	// Known failure (RELIABILITY.md, Found 1): with connections cut at
	// random, some messages that reached Sent never arrive and some arrive
	// out of order. The default run records it; SOTTO_STRICT=1 fails on it.
	// Duplicates and failed attachments always fail.
	if os.Getenv("SOTTO_STRICT") != "" {
		checkWait(t, streams, 60*time.Second)
		return
	}
	rep := harness.Check(context.Background(), streams, 60*time.Second, 15*time.Second)
	for _, e := range rep.Errors {
		if strings.Contains(e, "never received") || strings.Contains(e, "out of order") {
			t.Logf("KNOWN FAILURE: %s", e)
		} else {
			t.Error(e)
		}
	}
	t.Logf("known failure counts: missing %d, out of order %d (duplicates %d)", rep.Missing, rep.OutOfOrder, rep.Duplicates)
	t.Logf("connections cut %d; sent %d, refused at the sender %d, deliveries checked %d, attachments %d",
		px.Cuts, rep.Sent, rep.Refused, rep.Deliveries, rep.Attachments)
}

// TestHalfOpenConnection makes the path between the clients and the server
// silent (bytes held, nothing closed) for a while, then heals it; messages
// sent during the blackout are delivered after it, once. With SOTTO_LONG=1
// the blackout outlasts the relay's ping timeout (30 s + 15 s), so the
// relay drops the silent WebSocket and the client must notice.
func TestHalfOpenConnection(t *testing.T) {
	skipShort(t)
	t.Parallel()
	srv := harness.StartT(t, t.TempDir())
	px, err := harness.NewProxy(srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	url := "http://" + px.Addr
	roots := []crypto.TrustRoot{srv.Trust}
	alice, bob := newUser(t, "alice", url, roots), newUser(t, "bob", url, roots)
	ab, _, err := harness.Befriend(context.Background(), alice, bob)
	if err != nil {
		t.Fatal(err)
	}
	blackout := 3 * time.Second
	if os.Getenv("SOTTO_LONG") != "" {
		blackout = 60 * time.Second
	}
	streams := []*harness.Stream{{Label: "ab", From: alice, Conv: ab, To: []*harness.User{bob}, Pause: 100 * time.Millisecond}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { streams[0].Run(context.Background(), stop) })
	time.Sleep(500 * time.Millisecond)
	px.Blackout(true)
	time.Sleep(blackout)
	px.Blackout(false)
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	rep := check(t, streams)
	t.Logf("blackout %v; sent %d, deliveries checked %d", blackout, rep.Sent, rep.Deliveries)
}

// TestSlowLorisTimedOut sends a request header one byte at a time, slower
// than sottod's ReadHeaderTimeout (10 s) allows; the server must close the
// connection and keep serving others meanwhile.
func TestSlowLorisTimedOut(t *testing.T) {
	skipShort(t)
	t.Parallel()
	srv := harness.StartT(t, t.TempDir())
	const lorises = 20
	closed := make(chan time.Duration, lorises)
	for range lorises {
		go func() {
			start := time.Now()
			c, err := net.Dial("tcp", srv.Addr)
			if err != nil {
				closed <- -1
				return
			}
			defer c.Close()
			header := "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("a", 1000)
			for i := 0; i < len(header); i++ {
				c.SetWriteDeadline(time.Now().Add(2 * time.Second))
				if _, err := c.Write([]byte{header[i]}); err != nil {
					closed <- time.Since(start)
					return
				}
				// A closed connection shows on a read too.
				c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
				var b [512]byte
				if n, err := c.Read(b[:]); n > 0 || (err != nil && !isTimeout(err)) {
					closed <- time.Since(start)
					return
				}
			}
			closed <- 0 // never closed
		}()
	}
	// Meanwhile the server answers others.
	time.Sleep(2 * time.Second)
	if err := srv.WaitReady(5 * time.Second); err != nil {
		t.Fatalf("server unresponsive during the slow-loris attack: %v", err)
	}
	for range lorises {
		d := <-closed
		if d <= 0 || d > 20*time.Second {
			t.Fatalf("slow-loris connection not closed in time: %v", d)
		}
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestRelayRestartDuringBlobUpload kills sottod in the middle of a
// throttled attachment upload: the upload fails with an error (it does not
// hang), the restarted server holds no half-written blob under the client's
// name, and a retry uploads and downloads intact.
func TestRelayRestartDuringBlobUpload(t *testing.T) {
	skipShort(t)
	t.Parallel()
	srv := harness.StartT(t, t.TempDir())
	px, err := harness.NewProxy(srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	url := "http://" + px.Addr
	roots := []crypto.TrustRoot{srv.Trust}
	alice, bob := newUser(t, "alice", url, roots), newUser(t, "bob", url, roots)
	ab, _, err := harness.Befriend(context.Background(), alice, bob)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 2<<20)
	rand.Read(data)
	px.Throttle(512 << 10) // 2 MiB takes about 4 s
	errc := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		_, err := alice.C.UploadAttachment(ctx, bytes.NewReader(data), "application/octet-stream", "big.bin")
		errc <- err
	}()
	time.Sleep(1500 * time.Millisecond)
	srv.Kill()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("upload reported success although the server was killed in the middle")
		}
		t.Logf("interrupted upload: %v", err)
	case <-time.After(45 * time.Second):
		t.Fatal("the interrupted upload hangs")
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	px.Throttle(0)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a, err := alice.C.UploadAttachment(ctx, bytes.NewReader(data), "application/octet-stream", "big.bin")
	if err != nil {
		t.Fatalf("retry after restart: %v", err)
	}
	if _, err := alice.C.Send(ctx, ab, client.Text("big").WithAttachment(a)); err != nil {
		t.Fatal(err)
	}
	m, err := bob.WaitMessage("big", 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := bob.C.DownloadAttachment(ctx, m.Attachments[0], &buf); err != nil || sha256.Sum256(buf.Bytes()) != sha256.Sum256(data) {
		t.Fatalf("download after retry: %v (%d bytes)", err, buf.Len())
	}
}

// TestKeyServerDownRelayUp runs the split deployment, kills the key server
// once two clients have sessions, and checks that messages still flow both
// ways through the relay (the relay has cached the key server's JWKS and
// device lists; clients have tokens), also after the relay's device-list
// cache TTL has passed, and after the key server returns.
func TestKeyServerDownRelayUp(t *testing.T) {
	skipShort(t)
	t.Parallel()
	bin, err := harness.Binary()
	if err != nil {
		t.Fatal(err)
	}
	ksAddr, err := harness.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	relayAddr, err := harness.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	internal := "SOTTO_INTERNAL_KEY=" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32)))
	ks := &harness.Proc{Bin: bin, Mode: "keyserver", Addr: ksAddr, Data: t.TempDir(), Env: []string{internal},
		Args: []string{"--relay-url", "http://" + relayAddr}, Log: io.Discard}
	if err := ks.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ks.Kill)
	relay := &harness.Proc{Bin: bin, Mode: "relay", Addr: relayAddr, Data: t.TempDir(), Env: []string{internal},
		Args: []string{"--keyserver-url", ks.URL}, Log: io.Discard}
	if err := relay.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(relay.Kill)

	roots := []crypto.TrustRoot{ks.Trust}
	mk := func(name string) *harness.User {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		st := newStore()
		c, err := client.Create(ctx, client.Options{Store: st, KeyServerURL: ks.URL, RelayURL: relay.URL, TrustRoots: roots})
		if err != nil {
			t.Fatal(err)
		}
		u := harness.Watch(name, c, st)
		t.Cleanup(func() { c.Close() })
		return u
	}
	alice, bob := mk("alice"), mk("bob")
	ab, ba, err := harness.Befriend(context.Background(), alice, bob)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := alice.C.Send(ctx, ab, client.Text("before")); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.WaitMessage("before", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.C.Send(ctx, ba, client.Text("before reply")); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.WaitMessage("before reply", 30*time.Second); err != nil {
		t.Fatal(err)
	}

	ks.Kill()
	// Right after the key server went down, the relay still has its JWKS
	// and the device lists (cached 5 s): messages flow both ways.
	for i, dir := range []struct {
		from, to *harness.User
		conv     client.ConversationID
	}{{alice, bob, ab}, {bob, alice, ba}} {
		text := "while the key server is down " + string(rune('a'+i))
		if _, err := dir.from.C.Send(ctx, dir.conv, client.Text(text)); err != nil {
			t.Fatalf("send with the key server down: %v", err)
		}
		if _, err := dir.to.WaitMessage(text, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	// Past the relay's 5 s device-list cache, the relay uses the last
	// lists it fetched while it cannot reach the key server
	// (stale-while-error, up to an hour; RELIABILITY.md Found 6): messages
	// keep flowing both ways.
	time.Sleep(6 * time.Second)
	for i, dir := range []struct {
		from, to *harness.User
		conv     client.ConversationID
	}{{alice, bob, ab}, {bob, alice, ba}} {
		text := "after the device-list cache expired " + string(rune('a'+i))
		if _, err := dir.from.C.Send(ctx, dir.conv, client.Text(text)); err != nil {
			t.Fatalf("send: %v", err)
		}
		sent := time.Now()
		if _, err := dir.to.WaitMessage(text, 30*time.Second); err != nil {
			t.Fatalf("not delivered with the key server down past the relay's cache TTL: %v", err)
		}
		t.Logf("delivered %v after sending, the key server down", time.Since(sent).Round(time.Millisecond))
	}
	// The key server returns: messages go on (the relay follows the key
	// server's lists again).
	if err := ks.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.C.Send(ctx, ab, client.Text("after the key server returned")); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.WaitMessage("after the key server returned", 45*time.Second); err != nil {
		t.Fatalf("not delivered after the key server returned: %v", err)
	}
}

// newStore is a client store that survives Close.
func newStore() store.Store { return durable{memstore.New()} }

type durable struct{ store.Store }

func (durable) Close() error { return nil }
