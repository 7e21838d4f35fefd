package client

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/sotto-im/sotto/client/internal/content"
	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/crypto"
)

// Group is a group conversation's state.
type Group struct {
	ID           GroupID
	Conversation ConversationID
	Name         string
	Revision     uint64
	Members      []GroupMember
}

// GroupMember is a member of a group.
type GroupMember struct {
	Account crypto.AccountID
	Admin   bool
}

type groupRecord struct {
	V        int              `json:"v"`
	ID       GroupID          `json:"id"`
	Name     string           `json:"name"`
	Revision uint64           `json:"rev"`
	Members  []content.Member `json:"members"`
}

func (c *Client) loadGroup(ctx context.Context, id GroupID) (*groupRecord, error) {
	b, err := c.st.LoadRecord(ctx, kindGroup, id[:])
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrUnknownConversation
	}
	if err != nil {
		return nil, wrap("load group", err)
	}
	g := new(groupRecord)
	return g, wrap("group record", json.Unmarshal(b, g))
}
