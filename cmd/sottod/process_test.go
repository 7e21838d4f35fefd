package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sotto-im/sotto/client"
	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/client/store/memstore"
	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/internal/testbin"
	relaystore "github.com/sotto-im/sotto/relay/store"
	"github.com/sotto-im/sotto/relay/store/pebblestore"
)

// These tests build the real sottod binary and run it as a process.

// freeAddr returns a loopback address with a port that was free a moment
// ago, so that a restarted server can come back on the same URL.
func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := testbin.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// proc is a running sottod.
type proc struct {
	t     *testing.T
	p     *testbin.Proc
	cmd   *exec.Cmd // for signals
	url   string
	trust crypto.TrustRoot
}

// startSottod builds sottod (once) and runs it with args and env added to
// the environment; it is killed at cleanup unless stopped.
func startSottod(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the sottod binary")
	}
	bin, err := testbin.Build(testbin.SottodPkg)
	if err != nil {
		t.Fatal(err)
	}
	s, err := testbin.StartSottod(bin, args, env, testbin.LogWriter(t.Logf, "sottod"), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Kill)
	return &proc{t: t, p: s.Proc, cmd: s.Cmd, url: s.URL, trust: s.Trust}
}

// stop sends SIGTERM and requires exit status 0 within the shutdown
// deadline.
func (p *proc) stop() {
	p.t.Helper()
	if err := p.p.Stop(20 * time.Second); err != nil {
		p.t.Fatalf("sottod after SIGTERM: %v", err)
	}
}

// durable keeps a memstore across Close, as a directory would, without the
// cost of the passphrase KDF in every test.
type durable struct{ store.Store }

func (durable) Close() error { return nil }

type user struct {
	t  *testing.T
	c  *client.Client
	st store.Store
	ev chan client.Event
}

func newUser(t *testing.T, ks, relay string, roots []crypto.TrustRoot, st store.Store, create bool) *user {
	t.Helper()
	open := client.Open
	if create {
		open = client.Create
	}
	c, err := open(context.Background(), client.Options{Store: durable{st}, KeyServerURL: ks, RelayURL: relay, TrustRoots: roots})
	if err != nil {
		t.Fatal(err)
	}
	u := &user{t: t, c: c, st: st, ev: make(chan client.Event, 4096)}
	go func() {
		for ev := range c.Events() {
			u.ev <- ev
		}
	}()
	t.Cleanup(func() { c.Close() })
	return u
}

// send sends text; the test fails if the client refuses it.
func (u *user) send(conv client.ConversationID, text string) client.MessageID {
	u.t.Helper()
	id, err := u.c.Send(context.Background(), conv, client.Text(text))
	if err != nil {
		u.t.Fatal(err)
	}
	return id
}

func (u *user) waitText(text string) client.Message {
	u.t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case ev := <-u.ev:
			if m, ok := ev.(client.MessageEvent); ok && m.Message.Text == text {
				return m.Message
			}
		case <-timeout:
			u.t.Fatalf("no message %q", text)
		}
	}
}

// waitStatus waits until an outgoing message has reached at least status.
func (u *user) waitStatus(conv client.ConversationID, id client.MessageID, status client.Status) {
	u.t.Helper()
	for start := time.Now(); time.Since(start) < 30*time.Second; time.Sleep(20 * time.Millisecond) {
		m, err := u.c.Message(context.Background(), conv, id)
		if err == nil && m.Status >= status {
			return
		}
	}
	u.t.Fatalf("message never reached status %v", status)
}

func befriend(t *testing.T, a, b *user) (ab, ba client.ConversationID) {
	t.Helper()
	ctx := context.Background()
	cb, err := a.c.AddContact(ctx, b.c.Invite(false).String())
	if err != nil {
		t.Fatal(err)
	}
	ca, err := b.c.AddContact(ctx, a.c.Invite(false).String())
	if err != nil {
		t.Fatal(err)
	}
	return cb.Conversation, ca.Conversation
}

func TestProcessLifecycle(t *testing.T) {
	data := t.TempDir()
	addr := freeAddr(t)
	srv := startSottod(t, nil, "--listen", addr, "--data", data)

	for path, want := range map[string]string{"/healthz": "ok", "/metrics": "sotto_relay_connections"} {
		resp, err := http.Get(srv.url + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Fatalf("%s: %d %q", path, resp.StatusCode, body)
		}
	}
	for _, f := range []string{tokenKeyFile, certKeyFile, internalKeyFile} {
		fi, err := os.Stat(filepath.Join(data, keysDir, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("key file %s: %v %v", f, fi.Mode(), err)
		}
	}

	roots := []crypto.TrustRoot{srv.trust}
	aliceStore, bobStore := memstore.New(), memstore.New()
	alice := newUser(t, srv.url, srv.url, roots, aliceStore, true)
	bob := newUser(t, srv.url, srv.url, roots, bobStore, true)
	ab, ba := befriend(t, alice, bob)
	alice.send(ab, "hello bob")
	bob.waitText("hello bob")
	bob.send(ba, "hello alice")
	alice.waitText("hello alice")

	// Bob goes offline; a message waits for him at the relay across a
	// restart of the server.
	bob.c.Close()
	id := alice.send(ab, "while you were away")
	alice.waitStatus(ab, id, client.StatusSent)
	alice.c.Close()
	srv.stop()

	srv = startSottod(t, nil, "--listen", addr, "--data", data)
	if srv.trust != roots[0] {
		t.Fatal("the trust root changed across a restart")
	}
	bob = newUser(t, srv.url, srv.url, roots, bobStore, false)
	bob.waitText("while you were away")
	srv.stop()
}

func TestProcessSplitDeployment(t *testing.T) {
	ksAddr, relayAddr := freeAddr(t), freeAddr(t)
	internal := "SOTTO_INTERNAL_KEY=" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32)))
	ks := startSottod(t, []string{internal}, "keyserver", "--listen", ksAddr, "--data", t.TempDir(), "--relay-url", "http://"+relayAddr)
	relay := startSottod(t, []string{internal}, "relay", "--listen", relayAddr, "--data", t.TempDir(), "--keyserver-url", ks.url)

	roots := []crypto.TrustRoot{ks.trust}
	alice := newUser(t, ks.url, relay.url, roots, memstore.New(), true)
	bob := newUser(t, ks.url, relay.url, roots, memstore.New(), true)
	ab, ba := befriend(t, alice, bob)
	alice.send(ab, "split hello")
	bob.waitText("split hello")
	bob.send(ba, "split reply")
	alice.waitText("split reply")
	alice.c.Close()
	bob.c.Close()
	relay.stop()
	ks.stop()
}

func TestProcessBackupWhileMessagesFlow(t *testing.T) {
	data := t.TempDir()
	srv := startSottod(t, nil, "--listen", freeAddr(t), "--data", data)
	roots := []crypto.TrustRoot{srv.trust}
	bobStore := memstore.New()
	alice := newUser(t, srv.url, srv.url, roots, memstore.New(), true)
	bob := newUser(t, srv.url, srv.url, roots, bobStore, true)
	ab, _ := befriend(t, alice, bob)
	bob.c.Close() // everything waits at the relay

	ctx := context.Background()
	type sent struct {
		id   client.MessageID
		text string
	}
	var mu sync.Mutex
	var accepted []sent // accepted before the backup began
	backupStarted := make(chan struct{})
	stopSending := make(chan struct{})
	senderDone := make(chan struct{})
	go func() {
		defer close(senderDone)
		for i := 0; ; i++ {
			select {
			case <-stopSending:
				return
			default:
			}
			text := fmt.Sprintf("flowing %d", i)
			id, err := alice.c.Send(ctx, ab, client.Text(text))
			if err != nil {
				t.Error(err)
				return
			}
			alice.waitStatus(ab, id, client.StatusSent)
			select {
			case <-backupStarted:
			default:
				mu.Lock()
				accepted = append(accepted, sent{id, text})
				mu.Unlock()
			}
		}
	}()
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		n := len(accepted)
		mu.Unlock()
		if n >= 20 || time.Since(start) > 20*time.Second {
			break
		}
	}
	mu.Lock()
	close(backupStarted)
	before := append([]sent(nil), accepted...)
	mu.Unlock()
	if len(before) == 0 {
		t.Fatal("no message was accepted before the backup")
	}
	out := filepath.Join(t.TempDir(), "backup")
	var stdout, stderr strings.Builder
	if code := run(ctx, []string{"backup", "--data", data, out}, func(string) string { return "" }, &stdout, &stderr); code != exitOK {
		t.Fatalf("backup exit %d: %s", code, stderr.String())
	}
	close(stopSending)
	<-senderDone
	alice.c.Close()
	srv.stop()

	restored := filepath.Join(t.TempDir(), "restored")
	if code := run(ctx, []string{"restore", out, restored}, func(string) string { return "" }, &stdout, &stderr); code != exitOK {
		t.Fatalf("restore exit %d: %s", code, stderr.String())
	}
	srv2 := startSottod(t, nil, "--listen", freeAddr(t), "--data", restored)
	if srv2.trust != srv.trust {
		t.Fatal("restored server has another trust root")
	}
	bob = newUser(t, srv2.url, srv2.url, roots, bobStore, false)
	for _, m := range before {
		bob.waitText(m.text)
	}
	srv2.stop()
}

// TestRelayDiskHoldsNoPlaintext sends messages and an attachment whose
// plaintext carries a marker through the real client encryption to an
// offline recipient, so that their ciphertext sits in the relay, then scans
// every byte under the server's data directory: the marker never appears;
// and the messages the relay stores never name their sender (sealed sender).
func TestRelayDiskHoldsNoPlaintext(t *testing.T) {
	data, addr := t.TempDir(), freeAddr(t)
	srv := startSottod(t, nil, "--listen", addr, "--data", data)
	roots := []crypto.TrustRoot{srv.trust}
	alice := newUser(t, srv.url, srv.url, roots, memstore.New(), true)
	bobStore := memstore.New()
	bob := newUser(t, srv.url, srv.url, roots, bobStore, true)
	ab, _ := befriend(t, alice, bob)
	bob.c.Close()

	marker := "MARKER-7f3c9e1d-plaintext-must-not-reach-the-relay"
	ctx := context.Background()
	att, err := alice.c.UploadAttachment(ctx, strings.NewReader(strings.Repeat(marker, 2000)), "text/plain", "marker.txt")
	if err != nil {
		t.Fatal(err)
	}
	var ids []client.MessageID
	for i := range 20 {
		d := client.Text(fmt.Sprintf("%s %d", marker, i))
		if i == 0 {
			d = d.WithAttachment(att)
		}
		id, err := alice.c.Send(ctx, ab, d)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	for _, id := range ids {
		alice.waitStatus(ab, id, client.StatusSent)
	}

	scan := func(root string, needles ...[]byte) (files int) {
		filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return nil
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			files++
			for _, n := range needles {
				if strings.Contains(string(b), string(n)) {
					t.Errorf("%s holds %q", path, n)
				}
			}
			return nil
		})
		return files
	}
	if n := scan(data, []byte(marker)); n == 0 {
		t.Fatal("scanned no files")
	}
	alice.c.Close()
	srv.stop()

	// What the relay holds for Bob names Bob, not Alice: the sender is
	// inside the sealed envelope. (The relay does know Alice as a user of
	// her own queue; that is not what this checks.)
	db, err := pebblestore.Open(filepath.Join(data, relayDir), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	q := relaystore.QueueID{Account: bob.c.Account(), Device: bob.c.Device()}
	msgs, err := db.Fetch(ctx, q, relaystore.Cursor{}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) == 0 {
		// Fewer envelopes than messages is fine: messages queued together
		// share one (PROTOCOL.md §13.4).
		t.Fatal("relay holds no messages for bob")
	}
	aliceID := alice.c.Account()
	for _, m := range msgs {
		for _, b := range [][]byte{m.Header, m.Body} {
			if bytes.Contains(b, aliceID[:]) || bytes.Contains(b, []byte(aliceID.String())) || bytes.Contains(b, []byte(marker)) {
				t.Fatal("a stored message names its sender or carries plaintext")
			}
		}
	}
	db.Close()

	srv = startSottod(t, nil, "--listen", addr, "--data", data)
	// The control: the recipient does decrypt them.
	bob = newUser(t, srv.url, srv.url, roots, bobStore, false)
	for i := range ids {
		bob.waitText(fmt.Sprintf("%s %d", marker, i))
	}
	srv.stop()
}
