package client_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sotto-im/sotto/client"
	"github.com/sotto-im/sotto/client/store/pebblestore"
)

// BenchmarkClientReceiveBacklog measures the receive path alone: b.N
// messages wait at the relay for a recipient on the default encrypted
// store; the clock runs from the recipient's Open to its last
// MessageEvent (connect, deliveries, open and decrypt, store, Sync, Acks).
// CPU is the whole process's (relay deliveries, the recipient, and the
// sender handling the delivery receipts that come back).
func BenchmarkClientReceiveBacklog(b *testing.B) {
	env := startEnv(b)
	ctx := context.Background()
	alice := newParty(b, env)
	dir := b.TempDir()
	opts := options(env, nil)
	opts.Dir, opts.Passphrase = dir, []byte("correct horse")
	opts.PebbleOptions = &pebblestore.Options{ScryptLogN: 10} // cheap Open: not what is measured
	bc, err := client.Create(ctx, opts)
	if err != nil {
		b.Fatal(err)
	}
	cb, err := alice.c.AddContact(ctx, bc.Invite(false).String())
	if err != nil {
		b.Fatal(err)
	}
	if _, err := bc.AddContact(ctx, alice.c.Invite(true).String()); err != nil {
		b.Fatal(err)
	}
	bc.Close()
	var last client.MessageID
	for i := 0; i < b.N; i++ {
		if last, err = alice.c.Send(ctx, cb.Conversation, client.Text(fmt.Sprintf("backlog %d", i))); err != nil {
			b.Fatal(err)
		}
	}
	alice.waitFor("last message sent", func(ev client.Event) bool {
		u, ok := ev.(client.UpdateEvent)
		return ok && u.Message.ID == last && u.Message.Status >= client.StatusSent
	})
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU(b)
	start := time.Now()
	bc, err = client.Open(ctx, opts)
	if err != nil {
		b.Fatal(err)
	}
	defer bc.Close()
	timeout := time.After(120 * time.Second)
	for got := 0; got < b.N; {
		select {
		case ev := <-bc.Events():
			if _, ok := ev.(client.MessageEvent); ok {
				got++
			}
		case <-timeout:
			b.Fatalf("received %d of %d", got, b.N)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	cpu.report(b.N, "cpu-µs/msg")
}
