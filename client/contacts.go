package client

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/crypto"
)

// Record kinds in the RecordStore.
const (
	kindContact = "contact"
	kindConv    = "conv"
	kindGroup   = "group"
)

// Contact is a person this account talks to.
type Contact struct {
	Account      crypto.AccountID
	Conversation ConversationID
	Name         string
	Blocked      bool
	// Verified is set by SetVerified after comparing safety numbers, and
	// cleared when the contact's devices change.
	Verified bool
	Devices  []crypto.DeviceID
}

type contactRecord struct {
	V          int              `json:"v"`
	Account    crypto.AccountID `json:"account"`
	DeviceList []byte           `json:"device_list,omitempty"` // signed, verified against Account
	AccessKey  []byte           `json:"access_key,omitempty"`
	Name       string           `json:"name,omitempty"`
	Blocked    bool             `json:"blocked,omitempty"`
	Verified   bool             `json:"verified,omitempty"`
	Timer      time.Duration    `json:"timer,omitempty"`
}

func (r *contactRecord) list() (*crypto.DeviceList, error) {
	if r.DeviceList == nil {
		return nil, nil
	}
	return crypto.VerifyDeviceList(r.DeviceList, r.Account)
}

func (r *contactRecord) public() Contact {
	ct := Contact{Account: r.Account, Conversation: directConversation(r.Account), Name: r.Name, Blocked: r.Blocked, Verified: r.Verified}
	if l, err := r.list(); err == nil && l != nil {
		for _, d := range l.Devices {
			ct.Devices = append(ct.Devices, d.ID)
		}
	}
	return ct
}

// directConversation derives the conversation ID of a 1:1 conversation.
func directConversation(a crypto.AccountID) ConversationID {
	return sha256.Sum256(append([]byte("sotto/v1 direct conversation\x00"), a[:]...))
}

// groupConversation derives the conversation ID of a group.
func groupConversation(g GroupID) ConversationID {
	return sha256.Sum256(append([]byte("sotto/v1 group conversation\x00"), g[:]...))
}

// convRecord maps a conversation ID to what it is.
type convRecord struct {
	V       int              `json:"v"`
	Peer    crypto.AccountID `json:"peer,omitzero"`
	Group   GroupID          `json:"group,omitzero"`
	IsGroup bool             `json:"is_group,omitempty"`
	Timer   time.Duration    `json:"timer,omitempty"`
}

func (c *Client) loadContact(ctx context.Context, a crypto.AccountID) (*contactRecord, error) {
	if r, ok := c.contacts.get(a); ok {
		return r, nil
	}
	b, err := c.st.LoadRecord(ctx, kindContact, a[:])
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrUnknownContact
	}
	if err != nil {
		return nil, wrap("load contact", err)
	}
	r := new(contactRecord)
	if err := json.Unmarshal(b, r); err != nil {
		return nil, wrap("contact record", err)
	}
	c.contacts.put(a, r)
	return r, nil
}

func (c *Client) saveContact(ctx context.Context, r *contactRecord) error {
	r.V = recordVersion
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := c.st.StoreRecord(ctx, kindContact, r.Account[:], b); err != nil {
		c.contacts.forget(r.Account)
		return wrap("store contact", err)
	}
	c.contacts.put(r.Account, r)
	conv := directConversation(r.Account)
	if _, err := c.loadConv(ctx, conv); errors.Is(err, ErrUnknownConversation) {
		return c.saveConv(ctx, conv, &convRecord{Peer: r.Account})
	}
	return nil
}

func (c *Client) loadConv(ctx context.Context, id ConversationID) (*convRecord, error) {
	if r, ok := c.convs.get(id); ok {
		return r, nil
	}
	b, err := c.st.LoadRecord(ctx, kindConv, id[:])
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrUnknownConversation
	}
	if err != nil {
		return nil, wrap("load conversation", err)
	}
	r := new(convRecord)
	if err := json.Unmarshal(b, r); err != nil {
		return nil, wrap("conversation record", err)
	}
	c.convs.put(id, r)
	return r, nil
}

func (c *Client) saveConv(ctx context.Context, id ConversationID, r *convRecord) error {
	r.V = recordVersion
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := c.st.StoreRecord(ctx, kindConv, id[:], b); err != nil {
		c.convs.forget(id)
		return wrap("store conversation", err)
	}
	c.convs.put(id, r)
	return nil
}

// Contacts returns every contact.
func (c *Client) Contacts(ctx context.Context) ([]Contact, error) {
	var out []Contact
	err := c.st.ListRecords(ctx, kindContact, func(_, rec []byte) error {
		var r contactRecord
		if err := json.Unmarshal(rec, &r); err != nil {
			return err
		}
		out = append(out, r.public())
		return nil
	})
	slices.SortFunc(out, func(a, b Contact) int { return strings.Compare(a.Account.String(), b.Account.String()) })
	return out, wrap("list contacts", err)
}

// Contact returns one contact.
func (c *Client) Contact(ctx context.Context, a crypto.AccountID) (Contact, error) {
	r, err := c.loadContact(ctx, a)
	if err != nil {
		return Contact{}, err
	}
	return r.public(), nil
}

// AddContact adds the account an invite names. It fetches and verifies the
// account's device list from the key server: the list must be signed by a
// key that hashes to the invite's account ID.
func (c *Client) AddContact(ctx context.Context, invite string) (Contact, error) {
	inv, err := ParseInvite(invite)
	if err != nil {
		return Contact{}, err
	}
	r, err := c.addAccount(ctx, inv.Account)
	if err != nil {
		return Contact{}, err
	}
	if inv.AccessKey != ([32]byte{}) {
		r.AccessKey = inv.AccessKey[:]
		if err := c.saveContact(ctx, r); err != nil {
			return Contact{}, err
		}
	}
	return r.public(), nil
}

// AddContactByHandle looks a handle up on the key server (exact match) and
// adds the account it names. The handle is only a directory entry: what the
// client trusts is the account ID, checked against the device list.
func (c *Client) AddContactByHandle(ctx context.Context, handle string) (Contact, error) {
	a, err := c.ks.lookupHandle(ctx, strings.TrimPrefix(handle, "@"))
	if err != nil {
		return Contact{}, err
	}
	r, err := c.addAccount(ctx, a)
	if err != nil {
		return Contact{}, err
	}
	return r.public(), nil
}

// addAccount adds (or refreshes) a contact for account a.
func (c *Client) addAccount(ctx context.Context, a crypto.AccountID) (*contactRecord, error) {
	if a == c.id.account {
		return nil, errors.New("client: cannot add this account as a contact")
	}
	r, err := c.loadContact(ctx, a)
	if errors.Is(err, ErrUnknownContact) {
		r, err = &contactRecord{Account: a}, nil
	}
	if err != nil {
		return nil, err
	}
	if _, err := c.refreshDevices(ctx, r); err != nil {
		return nil, err
	}
	return r, nil
}

// refreshDevices fetches the contact's device list, verifies it, stores it
// if it is newer, and reports a SafetyNumberEvent when devices changed.
func (c *Client) refreshDevices(ctx context.Context, r *contactRecord) (*crypto.DeviceList, error) {
	signed, err := c.ks.deviceList(ctx, r.Account)
	if err != nil {
		return nil, err
	}
	l, err := crypto.VerifyDeviceList(signed, r.Account)
	if err != nil {
		return nil, wrap("device list of "+r.Account.String(), err)
	}
	old, _ := r.list()
	if old != nil && l.Version < old.Version {
		return nil, fmt.Errorf("client: device list of %s: %w", r.Account, crypto.ErrStaleDeviceList)
	}
	if old != nil && l.Version == old.Version {
		return old, nil
	}
	r.DeviceList = signed
	var added, removed []crypto.DeviceID
	if old != nil {
		for _, d := range l.Devices {
			if od, ok := old.Device(d.ID); !ok || !od.Identity.Equal(d.Identity) {
				added = append(added, d.ID)
			}
		}
		for _, d := range old.Devices {
			if nd, ok := l.Device(d.ID); !ok || !nd.Identity.Equal(d.Identity) {
				removed = append(removed, d.ID)
			}
		}
		if len(added) > 0 {
			r.Verified = false
		}
	}
	if err := c.saveContact(ctx, r); err != nil {
		return nil, err
	}
	for _, d := range removed {
		c.deleteSession(ctx, crypto.Address{Account: r.Account, Device: d})
	}
	if len(added)+len(removed) > 0 {
		c.emit(SafetyNumberEvent{Contact: r.Account, Added: added, Removed: removed})
	}
	return l, nil
}

// SetBlocked blocks or unblocks a contact. Messages from a blocked contact
// are acknowledged to the relay and dropped; sends to it fail.
func (c *Client) SetBlocked(ctx context.Context, a crypto.AccountID, blocked bool) error {
	r, err := c.loadContact(ctx, a)
	if err != nil {
		return err
	}
	r.Blocked = blocked
	return c.saveContact(ctx, r)
}

// SetContactName sets the name shown for a contact (local only).
func (c *Client) SetContactName(ctx context.Context, a crypto.AccountID, name string) error {
	r, err := c.loadContact(ctx, a)
	if err != nil {
		return err
	}
	r.Name = name
	return c.saveContact(ctx, r)
}

// Invite is what one person gives another to become contacts: the account
// ID, the servers' URLs, the delivery access key that lets the other send
// sealed messages at once, and an optional one-time secret.
type Invite struct {
	Account      crypto.AccountID
	KeyServerURL string
	RelayURL     string
	AccessKey    [32]byte
	Secret       []byte
}

// invitePrefix starts every invite link.
const invitePrefix = "sotto:invite?"

// String returns the invite as a link, which is also its QR payload.
func (i Invite) String() string {
	v := url.Values{}
	v.Set("a", i.Account.String())
	v.Set("k", i.KeyServerURL)
	v.Set("r", i.RelayURL)
	if i.AccessKey != ([32]byte{}) {
		v.Set("x", base64.RawURLEncoding.EncodeToString(i.AccessKey[:]))
	}
	if len(i.Secret) > 0 {
		v.Set("s", base64.RawURLEncoding.EncodeToString(i.Secret))
	}
	return invitePrefix + v.Encode()
}

// QRPayload returns the text to encode in a QR code: the link itself.
func (i Invite) QRPayload() string { return i.String() }

// ParseInvite parses an invite link. It checks the syntax only; the account
// is verified when it is added.
func ParseInvite(s string) (Invite, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), invitePrefix)
	if !ok || len(rest) > 2048 {
		return Invite{}, ErrInvalidInvite
	}
	v, err := url.ParseQuery(rest)
	if err != nil {
		return Invite{}, ErrInvalidInvite
	}
	var inv Invite
	if inv.Account, err = crypto.ParseAccountID(v.Get("a")); err != nil {
		return Invite{}, ErrInvalidInvite
	}
	inv.KeyServerURL, inv.RelayURL = v.Get("k"), v.Get("r")
	for _, u := range []string{inv.KeyServerURL, inv.RelayURL} {
		if p, err := url.Parse(u); err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" {
			return Invite{}, ErrInvalidInvite
		}
	}
	if x := v.Get("x"); x != "" {
		b, err := base64.RawURLEncoding.DecodeString(x)
		if err != nil || len(b) != 32 {
			return Invite{}, ErrInvalidInvite
		}
		copy(inv.AccessKey[:], b)
	}
	if s := v.Get("s"); s != "" {
		if inv.Secret, err = base64.RawURLEncoding.DecodeString(s); err != nil || len(inv.Secret) > 64 {
			return Invite{}, ErrInvalidInvite
		}
	}
	return inv, nil
}

// Invite returns an invite for this account. withSecret adds a random
// one-time secret (for apps that want to recognise who used which invite).
func (c *Client) Invite(withSecret bool) Invite {
	inv := Invite{Account: c.id.account, KeyServerURL: c.opts.KeyServerURL, RelayURL: c.opts.RelayURL, AccessKey: c.id.accessKey}
	if withSecret {
		inv.Secret = make([]byte, 16)
		rand.Read(inv.Secret)
	}
	return inv
}
