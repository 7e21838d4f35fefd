// Package crash kills a real sottod process with SIGKILL at random moments
// while clients keep sending (1:1, a group, attachments, a second device),
// restarts it on the same data directory and port, and checks that every
// message a sender saw reach status Sent arrives at every recipient device
// exactly once, in order per sender and conversation, and decrypted.
//
// SOTTO_LONG=1 runs 20 cycles instead of 5; SOTTO_CRASH_CYCLES=n sets the
// count.
package crash

import (
	"bytes"
	"context"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sotto-im/sotto/client"
	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/reliability/internal/harness"
)

func cycles() int {
	if s := os.Getenv("SOTTO_CRASH_CYCLES"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			return n
		}
	}
	if os.Getenv("SOTTO_LONG") != "" {
		return 20
	}
	return 5
}

func TestCrashCycles(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the sottod binary")
	}
	n := cycles()
	ctx := context.Background()
	t0 := time.Now()
	phase := func(what string) { t.Logf("%s at %v", what, time.Since(t0).Round(time.Millisecond)) }
	data := t.TempDir()
	srv := harness.StartT(t, data)
	roots := []crypto.TrustRoot{srv.Trust}

	mk := func(name string) *harness.User {
		u, err := harness.NewUser(ctx, name, srv.URL, roots)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { u.C.Close() })
		return u
	}
	alice, bob, carol := mk("alice"), mk("bob"), mk("carol")
	alice2, err := harness.Link(ctx, alice, "alice2", srv.URL, roots)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { alice2.C.Close() })
	ab, ba, err := harness.Befriend(ctx, alice, bob)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := harness.Befriend(ctx, alice, carol); err != nil {
		t.Fatal(err)
	}
	if _, _, err := harness.Befriend(ctx, bob, carol); err != nil {
		t.Fatal(err)
	}
	g, err := alice.C.CreateGroup(ctx, "crash", []crypto.AccountID{bob.C.Account(), carol.C.Account()})
	if err != nil {
		t.Fatal(err)
	}
	// Warm up every path once, so that sessions and sender keys exist.
	if _, err := alice.C.Send(ctx, g.Conversation, client.Text("warm group")); err != nil {
		t.Fatal(err)
	}
	for _, u := range []*harness.User{bob, carol, alice2} {
		if _, err := u.WaitMessage("warm group", 60*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	gc := func(u *harness.User) client.ConversationID {
		gg, err := u.C.Group(ctx, g.ID)
		if err != nil {
			t.Fatal(err)
		}
		return gg.Conversation
	}
	if _, err := carol.C.Send(ctx, gc(carol), client.Text("warm carol")); err != nil {
		t.Fatal(err)
	}
	// alice2 too: a group created on one device reaches the account's
	// other devices (RELIABILITY.md, Found 2, fixed).
	for _, u := range []*harness.User{alice, bob, alice2} {
		if _, err := u.WaitMessage("warm carol", 60*time.Second); err != nil {
			t.Fatal(err)
		}
	}

	streams := []*harness.Stream{
		{Label: "ab", From: alice, Conv: ab, To: []*harness.User{bob, alice2}, Attach: true},
		{Label: "ba", From: bob, Conv: ba, To: []*harness.User{alice, alice2}},
		{Label: "g", From: alice, Conv: g.Conversation, To: []*harness.User{bob, carol, alice2}},
		{Label: "g", From: carol, Conv: gc(carol), To: []*harness.User{alice, bob, alice2}},
	}
	phase("set up")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, s := range streams {
		wg.Go(func() { s.Run(ctx, stop) })
	}

	start := time.Now()
	for i := range n {
		time.Sleep(time.Duration(200+mrand.IntN(1300)) * time.Millisecond)
		srv.Kill()
		time.Sleep(time.Duration(mrand.IntN(300)) * time.Millisecond)
		if err := srv.Start(); err != nil {
			t.Fatalf("restart %d: %v", i+1, err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("%d SIGKILL cycles in %v", n, time.Since(start).Round(time.Millisecond))

	// Every message reaches Sent (the outboxes retry with backoff up to
	// 30 s); then every recipient must have each one exactly once, in
	// order, with its attachment.
	rep := harness.Check(ctx, streams, 90*time.Second, 60*time.Second)
	phase("checked")
	for _, e := range rep.Errors {
		t.Error(e)
	}
	t.Logf("cycles %d, messages sent %d (send attempts refused by the client: %d), deliveries checked %d, attachments checked %d",
		n, rep.Sent, rep.Refused, rep.Deliveries, rep.Attachments)
	if rep.Sent < 4*n {
		t.Errorf("only %d messages sent: the load did not run", rep.Sent)
	}
	srv.Kill()
	scanDir(t, data, []byte(harness.Marker))
}

// scanDir fails if needle appears in any file under dir.
func scanDir(t *testing.T, dir string, needle []byte) {
	t.Helper()
	files := 0
	err := filepath.WalkDir(dir, func(path string, de os.DirEntry, err error) error {
		if err != nil || !de.Type().IsRegular() {
			return err // sockets and directories are not scanned
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		if bytes.Contains(b, needle) {
			t.Errorf("%s holds the plaintext marker", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 {
		t.Fatal("scanned no files")
	}
}
