package client

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/client/store/pebblestore"
)

// BenchmarkSearch100k searches the text of 100,000 stored messages in the
// default encrypted Pebble store (every value is opened and decoded).
func BenchmarkSearch100k(b *testing.B) {
	ctx := context.Background()
	db, err := pebblestore.Create(b.TempDir(), []byte("benchmark passphrase"), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	c := &Client{st: db, now: time.Now}
	n := 100_000
	if s := os.Getenv("SOTTO_SEARCH_N"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	convs := []store.ConversationID{{1}, {2}, {3}, {4}}
	start := time.Unix(1_790_000_000, 0)
	for i := range n {
		sm := &storedMessage{Sent: start.Add(time.Duration(i) * time.Second), Received: start,
			Text: fmt.Sprintf("message number %d about the weather and other things", i), Status: StatusReceived}
		if i%1000 == 0 {
			sm.Text = fmt.Sprintf("a rare needle %d", i)
		}
		if err := c.putMessage(ctx, convs[i%len(convs)], newID(), sm); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		res, err := c.Search(ctx, "NEEDLE", 0)
		if err != nil {
			b.Fatal(err)
		}
		if len(res) != n/1000 {
			b.Fatalf("found %d", len(res))
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
