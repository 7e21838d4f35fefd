package client

import (
	"context"
	"time"

	"github.com/sotto-im/sotto/client/store"
)

// runMaintenance does the periodic work: prekey refill and rotation,
// pruning the de-duplication table, deleting messages whose disappearing
// timer ran out.
func (c *Client) runMaintenance() {
	defer c.wg.Done()
	t := time.NewTicker(maintenanceInterval)
	defer t.Stop()
	for {
		c.maintain(c.ctx)
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (c *Client) maintain(ctx context.Context) {
	if err := c.maintainPreKeys(ctx); err != nil && ctx.Err() == nil {
		c.log.Debug("client: prekey maintenance failed", "err", err)
	}
	if err := c.st.PruneSeen(ctx, c.now().Add(-seenRetention)); err != nil && ctx.Err() == nil {
		c.log.Debug("client: pruning seen messages failed", "err", err)
	}
	if n, err := c.sweepDisappeared(ctx); err != nil && ctx.Err() == nil {
		c.log.Debug("client: sweeping disappeared messages failed", "err", err)
	} else if n > 0 {
		c.log.Debug("client: disappeared messages deleted", "count", n)
	}
}

// sweepDisappeared deletes the messages whose timer ran out. (History
// already hides them; this removes them from the store.)
func (c *Client) sweepDisappeared(ctx context.Context) (int, error) {
	now := c.now()
	var gone []store.MessageRecord
	err := c.st.ScanMessages(ctx, func(r store.MessageRecord) error {
		sm, err := decodeStored(r.Data)
		if err == nil && !sm.ExpiresAt.IsZero() && !now.Before(sm.ExpiresAt) {
			gone = append(gone, store.MessageRecord{Conversation: r.Conversation, ID: r.ID})
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for _, r := range gone {
		if err := c.deleteMessage(ctx, r.Conversation, r.ID); err != nil {
			return 0, err
		}
		c.emit(UpdateEvent{Message: Message{ID: r.ID, Conversation: r.Conversation}, Removed: true})
	}
	return len(gone), nil
}
