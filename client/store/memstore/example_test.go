package memstore_test

import (
	"context"
	"fmt"
	"time"

	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/client/store/memstore"
)

// Example pages backwards through a conversation's history, newest first,
// as a chat view does when the user scrolls up.
func Example() {
	ctx := context.Background()
	var s store.Store = memstore.New()
	defer s.Close()

	conv := store.ConversationID{1}
	start := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	for i := range 5 {
		m := store.MessageRecord{Conversation: conv, ID: [16]byte{byte(i)}, Time: start.Add(time.Duration(i) * time.Minute), Data: fmt.Appendf(nil, "message %d", i)}
		if err := s.PutMessage(ctx, m); err != nil {
			panic(err)
		}
	}
	var before time.Time // zero: start from the newest
	for {
		page, err := s.ListMessages(ctx, conv, time.Time{}, before, 2)
		if err != nil {
			panic(err)
		}
		if len(page) == 0 {
			break
		}
		for _, m := range page {
			fmt.Printf("%s %s\n", m.Time.UTC().Format("15:04"), m.Data)
		}
		before = page[len(page)-1].Time
		fmt.Println("--")
	}
	// Output:
	// 09:04 message 4
	// 09:03 message 3
	// --
	// 09:02 message 2
	// 09:01 message 1
	// --
	// 09:00 message 0
	// --
}
