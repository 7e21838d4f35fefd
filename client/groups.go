package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/sotto-im/sotto/client/internal/content"
	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/relay/wire"
)

// Groups.
//
// A group's state (name, members, roles, revision) is sent in full in every
// change, pairwise (over the 1:1 sessions) to the old and new members. A
// member accepts a change with a higher revision from an admin of the state
// it holds, or a member's own departure. Messages to the group are
// encrypted once with the sender's sender key (crypto.SenderKey) and sent as
// one multi-recipient relay request: the relay stores the body once. Each
// member's device distributes its sender key pairwise to every member
// before its first group message; when membership shrinks every remaining
// member rotates its sender key, so a removed member cannot decrypt what
// follows.
//
// The account's own devices. A change made on one device reaches the
// account's other devices as a transcript of the group update (the first
// member's copy is sent with Sync set; applyTranscript applies it as a
// change by this account), and a newly linked device receives the groups
// in its provisioning payload (link.go). Each device keeps its own sender
// key; the account's other devices never need it, since what one device
// sends to a group reaches the others as a transcript. Other members'
// devices send to every device of this account's device list, and after
// the relay's 409 for a new device they distribute their sender key again.
//
// Recovery. A group message that does not decrypt (the receiver lacks the
// sender's key: lost, or the receiver was reinstalled or linked late) makes
// the receiver send a resend request naming the group and the relay message
// ID (groupDecryptFailed). The sender's device answers with the group
// state, its current sender key and, if the message is in its history, the
// message itself pairwise under its original ID (groupResend). Other
// messages sent under a key the receiver never held are not recovered.

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
	// Distributed lists the accounts that hold this device's current
	// sender key (KeyID).
	KeyID       uint32             `json:"key_id,omitempty"`
	Distributed []crypto.AccountID `json:"distributed,omitempty"`
	Left        bool               `json:"left,omitempty"`
}

func (g *groupRecord) public() Group {
	out := Group{ID: g.ID, Conversation: groupConversation(g.ID), Name: g.Name, Revision: g.Revision}
	for _, m := range g.Members {
		out.Members = append(out.Members, GroupMember{Account: m.Account, Admin: m.Role == content.RoleAdmin})
	}
	return out
}

func (g *groupRecord) role(a crypto.AccountID) content.Role {
	for _, m := range g.Members {
		if m.Account == a {
			return m.Role
		}
	}
	return 0
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

func (c *Client) saveGroup(ctx context.Context, g *groupRecord) error {
	g.V = recordVersion
	b, err := json.Marshal(g)
	if err != nil {
		return err
	}
	if err := c.st.StoreRecord(ctx, kindGroup, g.ID[:], b); err != nil {
		return wrap("store group", err)
	}
	conv := groupConversation(g.ID)
	if _, err := c.loadConv(ctx, conv); errors.Is(err, ErrUnknownConversation) {
		return c.saveConv(ctx, conv, &convRecord{Group: g.ID, IsGroup: true})
	}
	return nil
}

func sortMembers(ms []content.Member) {
	slices.SortFunc(ms, func(a, b content.Member) int { return bytes.Compare(a.Account[:], b.Account[:]) })
}

// CreateGroup creates a group with this account as its admin and the given
// contacts as members, and tells them.
func (c *Client) CreateGroup(ctx context.Context, name string, members []crypto.AccountID) (Group, error) {
	g := &groupRecord{ID: newID(), Name: name, Revision: 1,
		Members: []content.Member{{Account: c.id.account, Role: content.RoleAdmin}}}
	for _, a := range members {
		if a == c.id.account || g.role(a) != 0 {
			continue
		}
		if _, err := c.loadContact(ctx, a); err != nil {
			if _, err := c.addAccount(ctx, a); err != nil {
				return Group{}, err
			}
		}
		g.Members = append(g.Members, content.Member{Account: a, Role: content.RoleMember})
	}
	sortMembers(g.Members)
	if err := c.saveGroup(ctx, g); err != nil {
		return Group{}, err
	}
	return g.public(), c.announce(ctx, g, nil)
}

// Groups returns the groups this account is a member of.
func (c *Client) Groups(ctx context.Context) ([]Group, error) {
	var out []Group
	err := c.st.ListRecords(ctx, kindGroup, func(_, rec []byte) error {
		var g groupRecord
		if err := json.Unmarshal(rec, &g); err != nil {
			return err
		}
		if !g.Left {
			out = append(out, g.public())
		}
		return nil
	})
	return out, wrap("list groups", err)
}

// Group returns one group.
func (c *Client) Group(ctx context.Context, id GroupID) (Group, error) {
	g, err := c.loadGroup(ctx, id)
	if err != nil {
		return Group{}, err
	}
	return g.public(), nil
}

// AddMembers adds contacts to a group (admins only).
func (c *Client) AddMembers(ctx context.Context, id GroupID, accounts ...crypto.AccountID) error {
	return c.changeGroup(ctx, id, true, func(g *groupRecord) error {
		for _, a := range accounts {
			if g.role(a) != 0 {
				continue
			}
			if _, err := c.loadContact(ctx, a); err != nil {
				if _, err := c.addAccount(ctx, a); err != nil {
					return err
				}
			}
			g.Members = append(g.Members, content.Member{Account: a, Role: content.RoleMember})
		}
		return nil
	})
}

// RemoveMembers removes members from a group (admins only). Every remaining
// member rotates its sender key.
func (c *Client) RemoveMembers(ctx context.Context, id GroupID, accounts ...crypto.AccountID) error {
	return c.changeGroup(ctx, id, true, func(g *groupRecord) error {
		g.Members = slices.DeleteFunc(g.Members, func(m content.Member) bool { return slices.Contains(accounts, m.Account) })
		return nil
	})
}

// Rename renames a group (admins only).
func (c *Client) Rename(ctx context.Context, id GroupID, name string) error {
	return c.changeGroup(ctx, id, true, func(g *groupRecord) error { g.Name = name; return nil })
}

// SetAdmin gives or takes a member's admin role (admins only).
func (c *Client) SetAdmin(ctx context.Context, id GroupID, a crypto.AccountID, admin bool) error {
	return c.changeGroup(ctx, id, true, func(g *groupRecord) error {
		for i := range g.Members {
			if g.Members[i].Account == a {
				g.Members[i].Role = content.RoleMember
				if admin {
					g.Members[i].Role = content.RoleAdmin
				}
				return nil
			}
		}
		return fmt.Errorf("client: %s is not a member", a)
	})
}

// Leave leaves a group.
func (c *Client) Leave(ctx context.Context, id GroupID) error {
	return c.changeGroup(ctx, id, false, func(g *groupRecord) error {
		g.Members = slices.DeleteFunc(g.Members, func(m content.Member) bool { return m.Account == c.id.account })
		g.Left = true
		return nil
	})
}

// changeGroup applies change to a group's state, bumps its revision, and
// sends the new state to the old and new members.
func (c *Client) changeGroup(ctx context.Context, id GroupID, adminOnly bool, change func(*groupRecord) error) error {
	g, err := c.loadGroup(ctx, id)
	if err != nil {
		return err
	}
	if adminOnly && g.role(c.id.account) != content.RoleAdmin {
		return ErrNotAdmin
	}
	old := slices.Clone(g.Members)
	if err := change(g); err != nil {
		return err
	}
	sortMembers(g.Members)
	g.Revision++
	shrunk := c.shrunk(old, g.Members)
	if shrunk {
		g.KeyID, g.Distributed = 0, nil // rotate: a new key at the next send
		if err := c.st.DeleteSenderKeys(ctx, store.GroupID(g.ID)); err != nil {
			return wrap("rotate sender keys", err)
		}
	}
	if err := c.saveGroup(ctx, g); err != nil {
		return err
	}
	c.emit(GroupEvent{Group: g.public()})
	return c.announce(ctx, g, old)
}

func (c *Client) shrunk(old, now []content.Member) bool {
	for _, m := range old {
		if !slices.ContainsFunc(now, func(n content.Member) bool { return n.Account == m.Account }) {
			return true
		}
	}
	return false
}

// announce sends the group's state pairwise to its members and to the
// members of old who are no longer in it.
func (c *Client) announce(ctx context.Context, g *groupRecord, old []content.Member) error {
	state := &content.Group{Revision: g.Revision, Name: g.Name, Members: g.Members}
	to := map[crypto.AccountID]bool{}
	for _, m := range append(slices.Clone(old), g.Members...) {
		if m.Account != c.id.account {
			to[m.Account] = true
		}
	}
	accounts := slices.SortedFunc(maps.Keys(to), func(a, b crypto.AccountID) int { return bytes.Compare(a[:], b[:]) })
	conv := groupConversation(g.ID)
	sync := true
	for _, a := range accounts {
		m := &content.Message{Kind: content.KindGroupUpdate, ID: newID(), Sent: c.now().Truncate(time.Millisecond),
			Group: g.ID, GroupState: state, AccessKey: c.id.accessKey}
		// The first copy also goes to this account's other devices, as a
		// transcript: they apply it as this account's own change. (A state
		// too large for a transcript does not: those devices learn it when
		// a member's message makes them ask, see groupDecryptFailed.)
		if b, err := m.Marshal(); sync && (err != nil || !fitsEnvelope(len(b), true)) {
			c.log.Debug("client: group state too large for a transcript", "members", len(g.Members))
			sync = false
		}
		if err := c.enqueueTo(ctx, conv, []crypto.AccountID{a}, m, false, sync); err != nil {
			return err
		}
		sync = false
	}
	if len(accounts) == 0 {
		// No other member to piggyback on: tell the other devices directly.
		m := &content.Message{Kind: content.KindGroupUpdate, ID: newID(), Sent: c.now().Truncate(time.Millisecond),
			Group: g.ID, GroupState: state}
		c.syncOwnDevices(ctx, conv, m)
	}
	return nil
}

// syncOwnDevices sends a transcript of m to this account's other devices
// only, in the background and once (best effort: used for a group without
// other members, whose state matters to no one else).
func (c *Client) syncOwnDevices(ctx context.Context, conv ConversationID, m *content.Message) {
	if err := c.closed(); err != nil {
		return
	}
	b, err := m.Marshal()
	if err != nil {
		return
	}
	// To only names a destination, which a group transcript ignores.
	rec := &outboxRecord{ID: m.ID, Conv: conv, To: []crypto.AccountID{c.id.account}, Content: b, Sync: true}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		cert, err := c.senderCert(c.ctx)
		if err == nil {
			err = c.deliverTranscript(c.ctx, rec, m, cert)
		}
		if err != nil {
			c.log.Debug("client: group state not synced to own devices", "err", err)
		}
	}()
}

// applyGroupUpdate handles a group state from author.
func (c *Client) applyGroupUpdate(ctx context.Context, author crypto.AccountID, m *content.Message) ([]Event, error) {
	st := m.GroupState
	g, err := c.loadGroup(ctx, m.Group)
	isMember := func(ms []content.Member, a crypto.AccountID) bool {
		return slices.ContainsFunc(ms, func(x content.Member) bool { return x.Account == a })
	}
	switch {
	case errors.Is(err, ErrUnknownConversation):
		// A new group: accept it from a member who lists us.
		if !isMember(st.Members, c.id.account) || !isMember(st.Members, author) {
			return nil, nil
		}
		g = &groupRecord{ID: m.Group}
	case err != nil:
		return nil, local(err)
	default:
		if st.Revision <= g.Revision {
			return nil, nil
		}
		selfLeave := !isMember(st.Members, author) && isMember(g.Members, author) && len(st.Members) == len(g.Members)-1
		if g.role(author) != content.RoleAdmin && !selfLeave {
			c.log.Debug("client: ignoring group change by a non-admin")
			return nil, nil
		}
	}
	old := g.Members
	g.Name, g.Revision, g.Members = st.Name, st.Revision, st.Members
	if !isMember(st.Members, c.id.account) {
		g.Left = true
	}
	if len(old) > 0 && c.shrunk(old, st.Members) {
		g.KeyID, g.Distributed = 0, nil
		if err := c.st.DeleteSenderKeys(ctx, store.GroupID(g.ID)); err != nil {
			return nil, local(err)
		}
	}
	if err := c.saveGroup(ctx, g); err != nil {
		return nil, local(err)
	}
	return []Event{GroupEvent{Group: g.public()}}, nil
}

// applySenderKey stores a member's sender-key distribution.
func (c *Client) applySenderKey(ctx context.Context, sender crypto.Address, m *content.Message) error {
	g, err := c.loadGroup(ctx, m.Group)
	if err != nil || g.role(sender.Account) == 0 {
		return nil // not a group we know, or not a member: ignore
	}
	r := crypto.NewGroupReceiver(crypto.GroupID(m.Group))
	if b, err := c.st.LoadSenderKey(ctx, store.GroupID(m.Group), sender); err == nil {
		if parsed, err := crypto.ParseGroupReceiver(b); err == nil {
			r = parsed
		}
	}
	if err := r.Process(m.SenderKey); err != nil {
		return nil
	}
	b, err := r.MarshalBinary()
	if err != nil {
		return err
	}
	return local(c.st.StoreSenderKey(ctx, store.GroupID(m.Group), sender, b))
}

// ownSenderKey returns this device's sender key for g (creating or rotating
// it), distributing it first to the members that do not hold it.
func (c *Client) ownSenderKey(ctx context.Context, g *groupRecord) (*crypto.SenderKey, error) {
	self := c.Address()
	var sk *crypto.SenderKey
	if b, err := c.st.LoadSenderKey(ctx, store.GroupID(g.ID), self); err == nil {
		if sk, err = crypto.ParseSenderKey(b); err != nil {
			return nil, wrap("sender key", err)
		}
	} else if !isNotFound(err) {
		return nil, wrap("load sender key", err)
	}
	if sk == nil || sk.KeyID() != g.KeyID {
		sk = crypto.NewSenderKey(crypto.GroupID(g.ID))
		g.KeyID, g.Distributed = sk.KeyID(), nil
		if err := c.storeOwnSenderKey(ctx, g.ID, sk); err != nil {
			return nil, err
		}
	}
	for _, m := range g.Members {
		if m.Account == c.id.account || slices.Contains(g.Distributed, m.Account) {
			continue
		}
		d := &content.Message{Kind: content.KindSenderKey, ID: newID(), Sent: c.now().Truncate(time.Millisecond),
			Group: g.ID, AccessKey: c.id.accessKey, SenderKey: sk.Distribution()}
		pt, err := d.Marshal()
		if err != nil {
			return nil, err
		}
		rec := &outboxRecord{ID: d.ID, Conv: groupConversation(g.ID), To: []crypto.AccountID{m.Account}, Content: pt}
		if err := c.deliver(ctx, rec, d); err != nil {
			return nil, err
		}
		g.Distributed = append(g.Distributed, m.Account)
		if err := c.saveGroup(ctx, g); err != nil {
			return nil, err
		}
	}
	return sk, nil
}

func (c *Client) storeOwnSenderKey(ctx context.Context, id GroupID, sk *crypto.SenderKey) error {
	b, err := sk.MarshalBinary()
	if err != nil {
		return err
	}
	return wrap("store sender key", c.st.StoreSenderKey(ctx, store.GroupID(id), c.Address(), b))
}

// deliverGroup sends a group message once, as a multi-recipient message to
// every device of every other member.
func (c *Client) deliverGroup(ctx context.Context, rec *outboxRecord, cert *crypto.SenderCertificate) error {
	var gid GroupID
	if m, err := content.Parse(rec.Content); err == nil {
		gid = m.Group
	}
	g, err := c.loadGroup(ctx, gid)
	if err != nil {
		return &permanentError{http.StatusGone}
	}
	if g.Left {
		return &permanentError{http.StatusGone}
	}
	for round := 0; ; round++ {
		sk, err := c.ownSenderKey(ctx, g)
		if err != nil {
			return err
		}
		var recips []crypto.MultiRecipient
		sealed := true
		keys := map[crypto.AccountID][32]byte{}
		for _, m := range g.Members {
			if m.Account == c.id.account {
				continue
			}
			r, err := c.loadContact(ctx, m.Account)
			if errors.Is(err, ErrUnknownContact) {
				r, err = c.addAccount(ctx, m.Account)
			}
			if err != nil {
				return err
			}
			l, err := r.list()
			if err == nil && l == nil {
				l, err = c.refreshDevices(ctx, r)
			}
			if err != nil {
				return err
			}
			for _, d := range l.Devices {
				recips = append(recips, crypto.MultiRecipient{Address: crypto.Address{Account: m.Account, Device: d.ID}, Identity: d.Identity})
			}
			if len(r.AccessKey) == 32 {
				keys[m.Account] = [32]byte(r.AccessKey)
			} else {
				sealed = false
			}
		}
		if len(recips) == 0 {
			return nil
		}
		c.cryptoMu.Lock()
		ct, err := sk.Encrypt(crypto.Pad(rec.Content))
		if err == nil {
			err = c.storeOwnSenderKey(ctx, g.ID, sk)
		}
		c.cryptoMu.Unlock()
		if err != nil {
			return wrap("group encrypt", err)
		}
		body, headers, err := crypto.SealMulti(c.id.ik, cert, recips, ct)
		if err != nil {
			return wrap("seal group message", err)
		}
		send := &wire.Send{ID: rec.ID, Sealed: sealed, Body: body}
		if rec.RelayID != ([16]byte{}) {
			send.ID = rec.RelayID
		}
		for _, h := range headers {
			a := h.Address.Account
			if n := len(send.Accounts); n == 0 || send.Accounts[n-1].Account != a {
				send.Accounts = append(send.Accounts, wire.SendAccount{Account: a, AccessKey: keys[a]})
			}
			acct := &send.Accounts[len(send.Accounts)-1]
			acct.Devices = append(acct.Devices, wire.SendDevice{Device: uint32(h.Address.Device), Header: h.Header})
		}
		res, err := c.postSend(ctx, send)
		if err != nil {
			return err
		}
		switch {
		case res.Status == http.StatusOK:
			return nil
		case res.Status == http.StatusConflict && round < maxDeviceRetries:
			if err := c.refreshNamed(ctx, res); err != nil {
				return err
			}
			// New devices need the sender key too.
			g.Distributed = nil
		case res.Status == http.StatusGone || res.Status == http.StatusBadRequest:
			return &permanentError{int(res.Status)}
		default:
			return fmt.Errorf("client: relay answered %d %s to a group message", res.Status, res.Code)
		}
	}
}

// openGroup decrypts a multi-recipient group message. It returns the
// padded plaintext and the receiver state to persist once the message is
// stored.
func (c *Client) openGroup(ctx context.Context, sender crypto.Address, msg []byte) ([]byte, func() error, error) {
	gid, _, err := crypto.GroupMessageInfo(msg)
	if err != nil {
		return nil, nil, err
	}
	b, err := c.st.LoadSenderKey(ctx, store.GroupID(gid), sender)
	if err != nil {
		if isNotFound(err) {
			return nil, nil, fmt.Errorf("client: no sender key of %s: %w", sender, crypto.ErrDecrypt)
		}
		return nil, nil, local(err)
	}
	r, err := crypto.ParseGroupReceiver(b)
	if err != nil {
		return nil, nil, local(err)
	}
	pt, err := r.Decrypt(msg)
	if err != nil {
		return nil, nil, err
	}
	commit := func() error {
		b, err := r.MarshalBinary()
		if err != nil {
			return err
		}
		return c.st.StoreSenderKey(ctx, store.GroupID(gid), sender, b)
	}
	return pt, commit, nil
}

// groupDecryptFailed is called (by handleDelivery, outside cryptoMu) for a
// group message from sender that did not decrypt: it asks the sender for
// its sender key and the message again, pairwise. inner is the sender-key
// message, which names the group in the clear; relayID names the message.
func (c *Client) groupDecryptFailed(ctx context.Context, sender crypto.Address, relayID [16]byte, inner []byte) {
	if sender.Account == c.id.account {
		return // this account's devices do not send each other group messages
	}
	gid, _, err := crypto.GroupMessageInfo(inner)
	if err != nil {
		return
	}
	// A known group: only for a member. An unknown one: ask anyway, since
	// the answer carries the group's state (this device may have missed
	// the update that added it).
	if g, err := c.loadGroup(ctx, GroupID(gid)); err == nil && (g.Left || g.role(sender.Account) == 0) {
		return
	} else if err != nil && !errors.Is(err, ErrUnknownConversation) {
		return
	}
	m := &content.Message{Kind: content.KindResendRequest, Group: GroupID(gid), Target: relayID}
	if err := c.sendTo(ctx, directConversation(sender.Account), sender.Account, m); err != nil {
		c.log.Debug("client: group resend request not queued", "err", err)
	}
}

// groupResend answers a member's request for a group message it could not
// decrypt: this device sends the requester's account, pairwise, the group's
// state, its current sender key and the message (same message ID, fresh
// relay ID) if it is still in the history. It runs under cryptoMu (from
// apply), so the sends are only queued, in that order, in the background.
func (c *Client) groupResend(ctx context.Context, from crypto.Address, gid GroupID, target [16]byte) {
	msgs, text := c.groupResendPlan(ctx, from, gid, target)
	if msgs == nil {
		return
	}
	conv := groupConversation(gid)
	to := []crypto.AccountID{from.Account}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for _, m := range msgs {
			if err := c.sendTo(c.ctx, conv, from.Account, m); err != nil {
				c.log.Debug("client: group resend not queued", "err", err)
				return
			}
		}
		if text != nil {
			// The message keeps its ID, so the requester stores it as the
			// message it missed; the relay gets a fresh ID, since it
			// remembers the first.
			if err := c.enqueueRelay(c.ctx, conv, to, text, false, false, newID()); err != nil {
				c.log.Debug("client: group resend not queued", "err", err)
			}
		}
	}()
}

// groupResendPlan decides the answer to a group resend request: nothing
// (nil) unless the requester is a member of a group this device is in and
// the message, if this device holds it, is one it sent; else the group
// state and this device's current sender key (if it has one) to send
// first, and the message to send again (nil if it is not in the history or
// was deleted). A non-member learns nothing of the group.
func (c *Client) groupResendPlan(ctx context.Context, from crypto.Address, gid GroupID, target [16]byte) ([]*content.Message, *content.Message) {
	g, err := c.loadGroup(ctx, gid)
	if err != nil || g.Left || g.role(from.Account) == 0 || from.Account == c.id.account {
		return nil, nil
	}
	var text *content.Message
	if sm, err := c.getMessage(ctx, groupConversation(gid), target); err == nil {
		if !sm.Outgoing || (sm.Device != 0 && sm.Device != c.id.device) {
			return nil, nil // another device's (or member's) message: not ours to answer
		}
		if !sm.Deleted {
			text = resendContent(target, sm)
			text.Group = gid
		}
	}
	msgs := []*content.Message{{Kind: content.KindGroupUpdate, Group: gid,
		GroupState: &content.Group{Revision: g.Revision, Name: g.Name, Members: slices.Clone(g.Members)}}}
	if b, err := c.st.LoadSenderKey(ctx, store.GroupID(gid), c.Address()); err == nil {
		if sk, err := crypto.ParseSenderKey(b); err == nil && sk.KeyID() == g.KeyID {
			msgs = append(msgs, &content.Message{Kind: content.KindSenderKey, Group: gid, SenderKey: sk.Distribution()})
		}
	}
	return msgs, text
}
