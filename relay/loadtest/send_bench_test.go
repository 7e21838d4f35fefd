package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/sotto-im/sotto/relay/wire"
)

// The sealed-send benchmarks run the relay in a child process (this test
// binary, re-executed into TestBenchRelayChild) so that its CPU time can be
// told apart from the client's: relay-cpu-us/msg is the child's user plus
// system CPU time per accepted send, read from its MemPath endpoint.
//
//	go test -run '^$' -bench 'SealedSends' -benchtime 5000x -count 5 ./relay/loadtest

const (
	benchChildEnv  = "SOTTO_LOADTEST_BENCH_RELAY_DIR"
	benchAccounts  = 256 // recipients, round robin: no queue reaches its quota
	benchBodyBytes = 256
)

var benchFixture = Fixture{Seed: "send-bench", Accounts: benchAccounts}

// TestBenchRelayChild is the relay process of the send benchmarks: it runs
// only when re-executed by them, prints its URL and serves until its
// standard input closes.
func TestBenchRelayChild(t *testing.T) {
	dir := os.Getenv(benchChildEnv)
	if dir == "" {
		t.Skip("the relay child of the send benchmarks")
	}
	r, err := StartRelay(dir, "127.0.0.1:0", benchFixture, nil, map[string]http.Handler{MemPath: MemHandler()})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println(r.URL)
	io.Copy(io.Discard, os.Stdin)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

// startBenchRelay starts the relay child on a durable Pebble directory and
// returns its URL.
func startBenchRelay(b *testing.B) string {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestBenchRelayChild$")
	cmd.Env = append(os.Environ(), benchChildEnv+"="+b.TempDir())
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "http://") {
		b.Fatalf("relay child did not start: %q, %v", line, err)
	}
	go io.Copy(io.Discard, out)
	return strings.TrimSpace(line)
}

func relayCPU(b *testing.B, url string) float64 {
	b.Helper()
	s, err := getStats(context.Background(), url+MemPath+"?gc=0")
	if err != nil {
		b.Fatal(err)
	}
	return s.CPUSeconds
}

// sealedSend returns the i-th benchmark send: sealed, 256-byte body, to
// the recipients in turn.
func sealedSend(i int, body []byte) *wire.Send {
	to := i % benchAccounts
	m := &wire.Send{RequestID: uint32(i + 1), Sealed: true, Body: body,
		Accounts: []wire.SendAccount{{Account: benchFixture.Account(to), AccessKey: benchFixture.AccessKey(to), Devices: []wire.SendDevice{{Device: 1}}}}}
	rand.Read(m.ID[:])
	return m
}

// report adds msgs/s and the relay's CPU per message; start is when the
// timed part began and cpu0 the relay's CPU then.
func report(b *testing.B, url string, start time.Time, cpu0 float64) {
	elapsed := time.Since(start)
	cpu := relayCPU(b, url) - cpu0
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(cpu*1e6/float64(b.N), "relay-cpu-us/msg")
}

// BenchmarkSealedSendsPipelined sends sealed messages over one anonymous
// send socket with wire.MaxSendsInFlight unanswered.
func BenchmarkSealedSendsPipelined(b *testing.B) {
	url := startBenchRelay(b)
	ctx := context.Background()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(url, "http")+"/v1/relay/ws/send",
		&websocket.DialOptions{Subprotocols: []string{wire.Subprotocol}, CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		b.Fatal(err)
	}
	defer c.CloseNow()
	body := bytes.Repeat([]byte{'x'}, benchBodyBytes)
	slots := make(chan struct{}, wire.MaxSendsInFlight)
	errc := make(chan error, 1)
	cpu0 := relayCPU(b, url)
	b.ResetTimer()
	start := time.Now()
	go func() {
		buf := make([]byte, 0, 512)
		for i := range b.N {
			slots <- struct{}{}
			buf = sealedSend(i, body).Append(buf[:0])
			if err := c.Write(ctx, websocket.MessageBinary, buf); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	for range b.N {
		_, f, err := c.Read(ctx)
		if err != nil {
			b.Fatal(err)
		}
		r, err := wire.ParseSendResult(f)
		if err != nil || r.Status != http.StatusOK {
			b.Fatalf("result %+v, %v", r, err)
		}
		<-slots
	}
	b.StopTimer()
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	report(b, url, start, cpu0)
}

// BenchmarkSealedSendsHTTP sends the same messages one at a time with HTTP
// POST /v1/messages (keep-alive), each waiting for its answer: what a
// client does without the socket.
func BenchmarkSealedSendsHTTP(b *testing.B) {
	url := startBenchRelay(b)
	body := bytes.Repeat([]byte{'x'}, benchBodyBytes)
	client := &http.Client{}
	cpu0 := relayCPU(b, url)
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		resp, err := client.Post(url+"/v1/messages", "application/octet-stream", bytes.NewReader(sealedSend(i, body).Marshal()))
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("send %d: %d", i, resp.StatusCode)
		}
	}
	b.StopTimer()
	report(b, url, start, cpu0)
}
