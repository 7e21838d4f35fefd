package client

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/sotto-im/sotto/client/internal/content"
	"github.com/sotto-im/sotto/crypto"
)

// Linking a new device (DESIGN.md, Identities):
//
//	new device (Link)                     key server                 existing device (LinkDevice)
//	POST /v1/provisioning            →    address
//	shows LinkCode: address, age recipient, identity key, secret
//	                                                                  ← scans the code
//	                                      PUT devicelist          ←  new signed list (+ the device)
//	                                      PUT /v1/provisioning/a  ←  age-encrypted payload
//	GET /v1/provisioning/a (polls)   →    payload, once
//	checks the secret and the list, logs in, uploads prekeys, starts
//
// The payload is encrypted with age to an X25519 recipient made for this
// one link, and carries an HMAC under the code's one-time secret: only a
// device that saw the code can produce it. It holds the account's public
// key, the delivery access key, the new device list, and the account's
// groups and contacts (not the history); the account's private key stays on
// the device that created the account.

// linkPrefix starts every link code.
const linkPrefix = "sotto:link?"

// LinkCode is what a new device shows (as text or QR payload) for an
// existing device of the account to scan. It holds a one-time secret: show
// it only to the account's owner.
type LinkCode struct {
	KeyServerURL string
	Address      string             // provisioning address at the key server
	Recipient    string             // age X25519 recipient for the payload
	Identity     crypto.IdentityKey // the new device's identity key
	Secret       [32]byte
}

// String returns the link code as text, which is also its QR payload.
func (l LinkCode) String() string {
	v := url.Values{}
	v.Set("k", l.KeyServerURL)
	v.Set("a", l.Address)
	v.Set("r", l.Recipient)
	v.Set("i", base64.RawURLEncoding.EncodeToString(l.Identity.Bytes()))
	v.Set("s", base64.RawURLEncoding.EncodeToString(l.Secret[:]))
	return linkPrefix + v.Encode()
}

// ErrInvalidLinkCode reports a link code that does not parse.
var ErrInvalidLinkCode = errors.New("client: invalid link code")

// ParseLinkCode parses a link code.
func ParseLinkCode(s string) (LinkCode, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), linkPrefix)
	if !ok || len(rest) > 4096 {
		return LinkCode{}, ErrInvalidLinkCode
	}
	v, err := url.ParseQuery(rest)
	if err != nil {
		return LinkCode{}, ErrInvalidLinkCode
	}
	l := LinkCode{KeyServerURL: v.Get("k"), Address: v.Get("a"), Recipient: v.Get("r")}
	ik, err1 := base64.RawURLEncoding.DecodeString(v.Get("i"))
	sec, err2 := base64.RawURLEncoding.DecodeString(v.Get("s"))
	if err1 != nil || err2 != nil || len(sec) != 32 || l.Address == "" {
		return LinkCode{}, ErrInvalidLinkCode
	}
	if _, err := age.ParseX25519Recipient(l.Recipient); err != nil {
		return LinkCode{}, ErrInvalidLinkCode
	}
	if l.Identity, err = crypto.NewIdentityKey(ik); err != nil {
		return LinkCode{}, ErrInvalidLinkCode
	}
	copy(l.Secret[:], sec)
	return l, nil
}

// provisionPayload is what the existing device sends the new one.
type provisionPayload struct {
	AccountKey []byte          `json:"account_key"`
	Device     crypto.DeviceID `json:"device"`
	DeviceList []byte          `json:"device_list"`
	AccessKey  []byte          `json:"access_key"`
	// Groups and Contacts are the account's state the new device needs
	// before its first message (older devices leave them out; older new
	// devices ignore them). History is not sent.
	Groups   []provisionGroup   `json:"groups,omitempty"`
	Contacts []provisionContact `json:"contacts,omitempty"`
}

// provisionGroup is a group as a newly linked device learns it: the state
// every member holds, without this device's sender-key bookkeeping (each
// device has its own sender key).
type provisionGroup struct {
	ID       GroupID          `json:"id"`
	Name     string           `json:"name,omitempty"`
	Revision uint64           `json:"rev"`
	Members  []content.Member `json:"members"`
	Timer    time.Duration    `json:"timer,omitempty"`
}

// provisionContact is a contact as a newly linked device learns it. The
// device list is left out: the new device fetches and verifies it itself.
type provisionContact struct {
	Account   crypto.AccountID `json:"account"`
	Name      string           `json:"name,omitempty"`
	AccessKey []byte           `json:"access_key,omitempty"`
	Blocked   bool             `json:"blocked,omitempty"`
	Verified  bool             `json:"verified,omitempty"`
	Timer     time.Duration    `json:"timer,omitempty"`
}

// maxProvisionPayload bounds the payload: the key server keeps provisioning
// messages of up to 64 KiB, and age and the MAC add a little.
const maxProvisionPayload = 60 << 10

// provisionState adds the account's groups and contacts to p, as many as fit
// in budget bytes of JSON (groups first: without them the new device drops
// group messages). It returns the groups left out, to be sent to the new
// device as group updates instead.
func (c *Client) provisionState(ctx context.Context, p *provisionPayload, budget int) ([]*groupRecord, error) {
	base, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	size := len(base) + len(`,"groups":[],"contacts":[]`)
	var left []*groupRecord
	err = c.st.ListRecords(ctx, kindGroup, func(_, rec []byte) error {
		g := new(groupRecord)
		if err := json.Unmarshal(rec, g); err != nil || g.Left {
			return nil
		}
		pg := provisionGroup{ID: g.ID, Name: g.Name, Revision: g.Revision, Members: g.Members}
		if cr, err := c.loadConv(ctx, groupConversation(g.ID)); err == nil {
			pg.Timer = cr.Timer
		}
		b, _ := json.Marshal(pg)
		if size+len(b)+1 > budget {
			left = append(left, g)
			return nil
		}
		size += len(b) + 1
		p.Groups = append(p.Groups, pg)
		return nil
	})
	if err != nil {
		return nil, wrap("list groups", err)
	}
	err = c.st.ListRecords(ctx, kindContact, func(_, rec []byte) error {
		var r contactRecord
		if err := json.Unmarshal(rec, &r); err != nil || r.Account == c.id.account {
			return nil
		}
		pc := provisionContact{Account: r.Account, Name: r.Name, AccessKey: r.AccessKey, Blocked: r.Blocked, Verified: r.Verified}
		if cr, err := c.loadConv(ctx, directConversation(r.Account)); err == nil {
			pc.Timer = cr.Timer
		}
		b, _ := json.Marshal(pc)
		if size+len(b)+1 > budget {
			return nil // learned later, from the contact's next message
		}
		size += len(b) + 1
		p.Contacts = append(p.Contacts, pc)
		return nil
	})
	return left, wrap("list contacts", err)
}

// applyProvisioned stores the groups and contacts of a provisioning payload
// on the new device.
func (c *Client) applyProvisioned(ctx context.Context, p *provisionPayload) error {
	for _, pc := range p.Contacts {
		if pc.Account == c.id.account || pc.Account == (crypto.AccountID{}) {
			continue
		}
		r := &contactRecord{Account: pc.Account, Name: pc.Name, Blocked: pc.Blocked, Verified: pc.Verified}
		if len(pc.AccessKey) == 32 {
			r.AccessKey = pc.AccessKey
		}
		if err := c.saveContact(ctx, r); err != nil {
			return err
		}
		if pc.Timer > 0 {
			if err := c.saveConv(ctx, directConversation(pc.Account), &convRecord{Peer: pc.Account, Timer: pc.Timer}); err != nil {
				return err
			}
		}
	}
	for _, pg := range p.Groups {
		// The same checks as a group update: a valid state that lists
		// this account.
		st := &content.Group{Revision: pg.Revision, Name: pg.Name, Members: pg.Members}
		m := &content.Message{Kind: content.KindGroupUpdate, Sent: time.UnixMilli(0), Group: pg.ID, GroupState: st}
		if _, err := m.Marshal(); err != nil || pg.ID == (GroupID{}) {
			continue
		}
		g := &groupRecord{ID: pg.ID, Name: pg.Name, Revision: pg.Revision, Members: pg.Members}
		if g.role(c.id.account) == 0 {
			continue
		}
		if err := c.saveGroup(ctx, g); err != nil {
			return err
		}
		if pg.Timer > 0 {
			if err := c.saveConv(ctx, groupConversation(pg.ID), &convRecord{Group: pg.ID, IsGroup: true, Timer: pg.Timer}); err != nil {
				return err
			}
		}
	}
	return nil
}

// provisionMAC binds the payload to the link code's secret.
func provisionMAC(secret [32]byte, payload []byte) []byte {
	m := hmac.New(sha256.New, secret[:])
	m.Write([]byte("sotto/v1 provisioning\x00"))
	m.Write(payload)
	return m.Sum(nil)
}

// LinkDevice adds the device that shows code to this account: it assigns a
// device ID, publishes a new device list signed by the account key, and
// sends the new device what it needs through the key server's provisioning
// address. Only the device holding the account key can do it.
func (c *Client) LinkDevice(ctx context.Context, code string) (crypto.DeviceID, error) {
	return c.linkDevice(ctx, code, maxProvisionPayload)
}

func (c *Client) linkDevice(ctx context.Context, code string, budget int) (crypto.DeviceID, error) {
	l, err := ParseLinkCode(code)
	if err != nil {
		return 0, err
	}
	if c.id.accountPriv == nil {
		return 0, errors.New("client: only the device holding the account key can link devices")
	}
	if err := c.refreshOwnDevices(ctx); err != nil {
		return 0, err
	}
	c.idMu.Lock()
	list, err := crypto.VerifyDeviceList(c.id.deviceList, c.id.account)
	c.idMu.Unlock()
	if err != nil {
		return 0, err
	}
	next := crypto.DeviceID(1)
	for _, d := range list.Devices {
		if d.Identity.Equal(l.Identity) {
			return 0, errors.New("client: that device is already linked")
		}
		next = max(next, d.ID+1)
	}
	nl := &crypto.DeviceList{AccountKey: list.AccountKey, Version: list.Version + 1,
		Devices: append(list.Devices, crypto.Device{ID: next, Identity: l.Identity, Added: c.now().Truncate(time.Second)})}
	signed, err := crypto.SignDeviceList(c.id.accountPriv, nl)
	if err != nil {
		return 0, err
	}
	if err := c.ks.replaceDeviceList(ctx, c.id.account, signed); err != nil {
		return 0, wrap("publish device list", err)
	}
	c.idMu.Lock()
	c.id.deviceList = signed
	err = c.saveIdentity(ctx)
	c.idMu.Unlock()
	if err != nil {
		return 0, err
	}
	p := provisionPayload{AccountKey: c.id.accountKey.Bytes(), Device: next, DeviceList: signed, AccessKey: c.id.accessKey[:]}
	overflow, err := c.provisionState(ctx, &p, budget)
	if err != nil {
		return 0, err
	}
	payload, _ := json.Marshal(p)
	rcpt, err := age.ParseX25519Recipient(l.Recipient)
	if err != nil {
		return 0, ErrInvalidLinkCode
	}
	var ct bytes.Buffer
	w, err := age.Encrypt(&ct, rcpt)
	if err != nil {
		return 0, err
	}
	w.Write(provisionMAC(l.Secret, payload))
	w.Write(payload)
	if err := w.Close(); err != nil {
		return 0, err
	}
	if err := c.ks.do(ctx, http.MethodPut, "/v1/provisioning/"+url.PathEscape(l.Address), true,
		map[string][]byte{"message": ct.Bytes()}, nil); err != nil {
		return 0, wrap("provisioning", err)
	}
	var ids []crypto.DeviceID
	for _, d := range nl.Devices {
		ids = append(ids, d.ID)
	}
	c.emit(DeviceEvent{Devices: ids})
	for _, g := range overflow {
		// Groups that did not fit reach the new device as group updates
		// (members already holding this revision ignore them).
		if err := c.announce(ctx, g, nil); err != nil {
			return next, err
		}
	}
	return next, nil
}

// linkPoll is how often a new device asks for its provisioning message
// while a person scans its code, which takes seconds to minutes. The key
// server allows 5 unauthenticated requests a second per client address
// after a burst of 20 (keyserver.Limits); polling every 100 ms, as this
// did, used that up after 4 s and the link failed with 429 (or the login
// after it did). Twice a second leaves room for the device's own login
// and for other devices behind the same address.
const linkPoll = 500 * time.Millisecond

// retryAfter reads a Retry-After header in seconds, or returns def.
func retryAfter(h http.Header, def time.Duration) time.Duration {
	if secs, err := strconv.Atoi(h.Get("Retry-After")); err == nil && secs > 0 && secs <= 60 {
		return time.Duration(secs) * time.Second
	}
	return def
}

// Link creates this device as a new device of an existing account. It
// shows code (call show with it: display the text or a QR code of it), waits
// until a device of the account scans it and calls LinkDevice, then sets
// the device up (prekeys, login) in a new store and starts it. ctx bounds
// the wait.
func Link(ctx context.Context, opts Options, show func(LinkCode)) (*Client, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	ks := newKeyServer(opts.KeyServerURL, opts.HTTPClient)
	var slot struct {
		Address string `json:"address"`
	}
	if err := ks.do(ctx, http.MethodPost, "/v1/provisioning", false, struct{}{}, &slot); err != nil {
		return nil, wrap("provisioning address", err)
	}
	ageID, err := age.GenerateX25519Identity()
	if err != nil {
		return nil, err
	}
	ik := crypto.GenerateIdentityKey()
	code := LinkCode{KeyServerURL: opts.KeyServerURL, Address: slot.Address, Recipient: ageID.Recipient().String(), Identity: ik.Public()}
	rand.Read(code.Secret[:])
	show(code)
	var ct []byte
	for ct == nil {
		var msg struct {
			Message []byte `json:"message"`
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, ks.base+"/v1/provisioning/"+url.PathEscape(slot.Address), nil)
		resp, err := opts.HTTPClient.Do(req)
		if err != nil {
			return nil, wrap("provisioning", err)
		}
		wait := linkPoll
		switch resp.StatusCode {
		case http.StatusOK:
			err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&msg)
			ct = msg.Message
		case http.StatusNoContent:
		case http.StatusTooManyRequests:
			// Other devices behind the same address share the key
			// server's limit: wait as it says, and ask again.
			wait = max(wait, retryAfter(resp.Header, linkPoll))
		default:
			err = &APIError{Status: resp.StatusCode, Code: "provisioning"}
		}
		resp.Body.Close()
		if err != nil {
			return nil, wrap("provisioning", err)
		}
		if ct == nil {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(wait):
			}
		}
	}
	r, err := age.Decrypt(bytes.NewReader(ct), ageID)
	if err != nil {
		return nil, wrap("provisioning message", crypto.ErrDecrypt)
	}
	plain, err := io.ReadAll(io.LimitReader(r, 1<<20))
	if err != nil || len(plain) < sha256.Size {
		return nil, wrap("provisioning message", crypto.ErrDecrypt)
	}
	mac, payload := plain[:sha256.Size], plain[sha256.Size:]
	if !hmac.Equal(mac, provisionMAC(code.Secret, payload)) {
		return nil, wrap("provisioning message", crypto.ErrDecrypt)
	}
	var p provisionPayload
	if err := json.Unmarshal(payload, &p); err != nil {
		return nil, wrap("provisioning message", err)
	}
	ak, err := crypto.NewAccountKey(p.AccountKey)
	if err != nil {
		return nil, wrap("provisioning message", err)
	}
	list, err := crypto.VerifyDeviceList(p.DeviceList, ak.ID())
	if err != nil {
		return nil, wrap("provisioning device list", err)
	}
	if d, ok := list.Device(p.Device); !ok || !d.Identity.Equal(ik.Public()) || len(p.AccessKey) != 32 {
		return nil, errors.New("client: provisioning message does not name this device")
	}
	st, err := openStore(opts, true)
	if err != nil {
		return nil, err
	}
	c := newClient(opts, st)
	c.id = &identity{account: ak.ID(), accountKey: ak, device: p.Device, ik: ik, deviceList: p.DeviceList,
		nextOneTime: 1, nextKEM: 1, nextSigned: 1}
	copy(c.id.accessKey[:], p.AccessKey)
	if err := c.applyProvisioned(ctx, &p); err != nil {
		st.Close()
		return nil, err
	}
	if err := c.setUpDevice(ctx); err != nil {
		st.Close()
		return nil, err
	}
	c.start()
	return c, nil
}

// setUpDevice logs a linked device in and uploads its first prekeys.
func (c *Client) setUpDevice(ctx context.Context) error {
	if err := c.ks.login(ctx, c.Address(), c.id.ik, c.now); err != nil {
		return wrap("login", err)
	}
	keys, err := c.newPreKeys(ctx, true, PreKeyBatch)
	if err != nil {
		return err
	}
	if err := c.ks.uploadPreKeys(ctx, keys); err != nil {
		return wrap("upload prekeys", err)
	}
	return c.saveIdentity(ctx)
}

// Devices returns this account's devices, from its current device list.
func (c *Client) Devices(ctx context.Context) ([]crypto.Device, error) {
	if err := c.refreshOwnDevices(ctx); err != nil {
		return nil, err
	}
	c.idMu.Lock()
	defer c.idMu.Unlock()
	l, err := crypto.VerifyDeviceList(c.id.deviceList, c.id.account)
	if err != nil {
		return nil, err
	}
	return l.Devices, nil
}

// RemoveDevice removes a device from this account (publishing a new device
// list without it). Only the device holding the account key can do it, and
// not for itself.
func (c *Client) RemoveDevice(ctx context.Context, id crypto.DeviceID) error {
	if c.id.accountPriv == nil || id == c.id.device {
		return errors.New("client: this device cannot remove that device")
	}
	if err := c.refreshOwnDevices(ctx); err != nil {
		return err
	}
	c.idMu.Lock()
	defer c.idMu.Unlock()
	l, err := crypto.VerifyDeviceList(c.id.deviceList, c.id.account)
	if err != nil {
		return err
	}
	nl := &crypto.DeviceList{AccountKey: l.AccountKey, Version: l.Version + 1}
	for _, d := range l.Devices {
		if d.ID != id {
			nl.Devices = append(nl.Devices, d)
		}
	}
	if len(nl.Devices) == len(l.Devices) {
		return fmt.Errorf("client: no device %d", id)
	}
	signed, err := crypto.SignDeviceList(c.id.accountPriv, nl)
	if err != nil {
		return err
	}
	if err := c.ks.replaceDeviceList(ctx, c.id.account, signed); err != nil {
		return wrap("publish device list", err)
	}
	c.id.deviceList = signed
	c.deleteSession(ctx, crypto.Address{Account: c.id.account, Device: id})
	return c.saveIdentity(ctx)
}
