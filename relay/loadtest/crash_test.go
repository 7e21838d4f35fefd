package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/sotto-im/sotto/relay/wire"
)

// TestCrashKeepsAcceptedMessages runs the relay as a separate process
// (cmd/sotto-load -serve), sends to it from concurrent senders while
// killing it with SIGKILL at random moments and restarting it on the same
// directory, then checks that every message whose acceptance a sender
// received is delivered, intact, exactly once after de-duplication by
// message ID.
func TestCrashKeepsAcceptedMessages(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("builds and kills a relay process; skipped with -short and -race")
	}
	bin := filepath.Join(t.TempDir(), "sotto-load")
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build the relay with")
	}
	build := exec.Command(gobin, "build", "-o", bin, "github.com/sotto-im/sotto/cmd/sotto-load")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	const devices, senders, kills, want = 8, 16, 5, 10_000
	f := Fixture{Seed: "crash", Accounts: devices}
	dir := t.TempDir()

	var mu sync.Mutex
	var cur *exec.Cmd
	var url atomic.Value
	start := func() {
		cmd := exec.Command(bin, "-serve", "-addr", "127.0.0.1:0", "-dir", dir, "-seed", f.Seed, "-accounts", "8")
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("relay did not start: %v", err)
		}
		mu.Lock()
		cur = cmd
		mu.Unlock()
		url.Store(strings.TrimSpace(line))
	}
	kill := func() {
		mu.Lock()
		defer mu.Unlock()
		cur.Process.Signal(syscall.SIGKILL)
		cur.Wait()
	}
	start()
	defer kill()

	// Senders: sealed sends over HTTP, each body derived from its ID.
	body := func(id [16]byte) []byte { return bytes.Repeat(id[:], 4) }
	var accepted sync.Map // [16]byte → recipient index
	var nAccepted atomic.Int64
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 5 * time.Second}
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := uint64(0); ctx.Err() == nil; seq++ {
				to := int(seq) % devices
				var id [16]byte
				binary.BigEndian.PutUint64(id[:], uint64(s))
				binary.BigEndian.PutUint64(id[8:], seq)
				m := wire.Send{ID: id, Sealed: true, Body: body(id),
					Accounts: []wire.SendAccount{{Account: f.Account(to), AccessKey: f.AccessKey(to), Devices: []wire.SendDevice{{Device: 1}}}}}
				resp, err := client.Post(url.Load().(string)+"/v1/messages", "application/octet-stream", bytes.NewReader(m.Marshal()))
				if err != nil {
					time.Sleep(10 * time.Millisecond) // the relay is down: try the next message
					continue
				}
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					accepted.Store(id, to)
					nAccepted.Add(1)
				}
			}
		}()
	}
	deadline := time.Now().Add(3 * time.Minute)
	waitAccepted := func(n int64) {
		for nAccepted.Load() < n {
			if time.Now().After(deadline) {
				stop()
				wg.Wait()
				t.Fatalf("only %d of %d sends accepted in 3 minutes", nAccepted.Load(), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	for k := range kills {
		waitAccepted(int64(want)*int64(k+1)/(kills+1) + int64(rand.IntN(200)))
		kill()
		start()
	}
	waitAccepted(want)
	stop()
	wg.Wait()

	// Receive everything from the last incarnation.
	got := make(map[[16]byte]int)
	for i := range devices {
		c, err := dial(context.Background(), url.Load().(string), f, i)
		if err != nil {
			t.Fatal(err)
		}
		for {
			rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, fr, err := c.Read(rctx)
			cancel()
			if err != nil {
				t.Fatalf("device %d: %v", i, err)
			}
			if wire.FrameType(fr[0]) == wire.FrameDrained {
				break
			}
			d, err := wire.ParseDeliver(fr)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(d.Body, body(d.ID)) {
				t.Fatalf("message %x corrupted", d.ID)
			}
			got[d.ID]++
			if err := c.Write(context.Background(), websocket.MessageBinary, (&wire.Ack{Cursor: d.Cursor}).Marshal()); err != nil {
				t.Fatal(err)
			}
		}
		c.Close(websocket.StatusNormalClosure, "")
	}
	missing, total := 0, 0
	accepted.Range(func(k, v any) bool {
		total++
		if got[k.([16]byte)] == 0 {
			missing++
		}
		return true
	})
	for id, n := range got {
		if n != 1 {
			t.Errorf("message %x delivered %d times", id, n)
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d accepted messages lost across %d SIGKILLs", missing, total, kills)
	}
	t.Logf("%d accepted messages, %d delivered (unacknowledged sends may be delivered too), %d kills", total, len(got), kills)
}
