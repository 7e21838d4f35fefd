package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/client/store/pebblestore"
	"github.com/sotto-im/sotto/crypto"
)

// Implementation constants.
const (
	// DefaultEventBuffer is the capacity of the events channel. When it is
	// full the client waits for the app to read (the relay keeps what the
	// client has not acknowledged), so no event is ever dropped.
	DefaultEventBuffer = 1024
	// PreKeyRefillThreshold is the number of one-time prekeys on the key
	// server below which the client uploads a new batch.
	PreKeyRefillThreshold = 20
	// PreKeyBatch is how many one-time prekeys one refill uploads.
	PreKeyBatch = 100
	// SignedPreKeyRotation is how often the signed and last-resort prekeys
	// are replaced; SignedPreKeyGrace is how long a replaced one is kept to
	// accept prekey messages that were already in flight.
	SignedPreKeyRotation = 7 * 24 * time.Hour
	SignedPreKeyGrace    = 30 * 24 * time.Hour
	// DeleteWindow is how long after sending a message its author may
	// delete it for everyone or edit it (Signal allows 24 hours for both).
	DeleteWindow = 24 * time.Hour
	// outboxMaxBackoff bounds the wait between two attempts to send.
	outboxMaxBackoff = 30 * time.Second
	// outboxMinBackoff is the first wait after a failed attempt.
	outboxMinBackoff = 200 * time.Millisecond
	// reconnectMaxBackoff bounds the wait between two relay connections: short,
	// because a device that is not connected receives nothing.
	reconnectMaxBackoff = 5 * time.Second
	// maintenanceInterval is how often the client prunes its
	// de-duplication table, deletes disappeared messages and checks its
	// prekeys (also once at start).
	maintenanceInterval = 10 * time.Minute
	// seenRetention is how long received message IDs are remembered for
	// de-duplication; the relay keeps a message at most 90 days.
	seenRetention = 91 * 24 * time.Hour
)

// Options configures [Create] and [Open].
type Options struct {
	// Dir and Passphrase select the default encrypted store (a Pebble
	// directory, see client/store/pebblestore). Either them or Store.
	Dir        string
	Passphrase []byte
	// PebbleOptions tunes the default store (nil: defaults).
	PebbleOptions *pebblestore.Options
	// Store is an app-provided store; it must keep data encrypted at rest.
	// The client closes it on Close.
	Store store.Store

	// KeyServerURL and RelayURL are the base URLs of the servers, e.g.
	// "https://sotto.example.org". Both may be the same sottod.
	KeyServerURL string
	RelayURL     string
	// TrustRoots are the key servers' sender-certificate roots the client
	// accepts in sealed-sender envelopes. Required.
	TrustRoots []crypto.TrustRoot

	// Now is the clock; nil uses time.Now.
	Now func() time.Time
	// Logger receives diagnostics (never keys or message content); nil
	// discards them.
	Logger *slog.Logger
	// HTTPClient is used for the key server, blobs and the relay; nil uses
	// a client with a 30-second timeout.
	HTTPClient *http.Client
	// EventBuffer is the capacity of the events channel; 0 selects
	// DefaultEventBuffer.
	EventBuffer int
	// Handle optionally registers an @handle with the account ([Create]).
	Handle string
	// Offline keeps the client from connecting to the relay: nothing is
	// received and the outbox holds what is sent until a later Open.
	Offline bool
}

func (o *Options) defaults() error {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if o.EventBuffer <= 0 {
		o.EventBuffer = DefaultEventBuffer
	}
	if len(o.TrustRoots) == 0 {
		return errors.New("client: Options.TrustRoots is empty")
	}
	if o.KeyServerURL == "" || o.RelayURL == "" {
		return errors.New("client: Options.KeyServerURL and RelayURL are required")
	}
	if (o.Store == nil) == (o.Dir == "") {
		return errors.New("client: set exactly one of Options.Dir and Options.Store")
	}
	return nil
}

// Errors returned by the client; test with errors.Is.
var (
	// ErrNotRegistered reports a store that holds no account.
	ErrNotRegistered = errors.New("client: no account in this store")
	// ErrExists reports Create on a store that already holds an account.
	ErrExists = errors.New("client: store already holds an account")
	// ErrClosed reports a call after Close.
	ErrClosed = errors.New("client: closed")
	// ErrUnknownConversation reports a conversation the client does not know.
	ErrUnknownConversation = errors.New("client: unknown conversation")
	// ErrUnknownContact reports an account that is not a contact.
	ErrUnknownContact = errors.New("client: unknown contact")
	// ErrBlocked reports a send to a blocked contact.
	ErrBlocked = errors.New("client: contact is blocked")
	// ErrTooLarge reports a message beyond what one envelope carries.
	ErrTooLarge = errors.New("client: message too large")
	// ErrWindowPassed reports an edit or delete-for-everyone after
	// DeleteWindow.
	ErrWindowPassed = errors.New("client: edit/delete window has passed")
	// ErrNotFound reports a message that is not in the history.
	ErrNotFound = errors.New("client: not found")
	// ErrInvalidInvite reports an invite link or QR payload that does not
	// parse.
	ErrInvalidInvite = errors.New("client: invalid invite")
	// ErrNotAdmin reports a group change by a member who is not an admin.
	ErrNotAdmin = errors.New("client: not a group admin")
)

// Client is a running Sotto account on this device. Its methods are safe for
// concurrent use.
type Client struct {
	opts Options
	st   store.Store
	log  *slog.Logger
	now  func() time.Time
	ks   *keyServer

	id *identity // immutable after open except under idMu
	// idMu guards the identity record's mutable parts (prekey counters,
	// device list, token).
	idMu sync.Mutex

	// cryptoMu serialises session state changes: every Encrypt and Decrypt
	// loads, advances and stores a session under it.
	cryptoMu sync.Mutex

	certMu sync.Mutex
	cert   *crypto.SenderCertificate

	receipts receipts

	caches cryptoCache // verified device lists and the Sealer (verified.go)

	contacts recordCache[crypto.AccountID, contactRecord] // decoded contact records
	convs    recordCache[ConversationID, convRecord]      // decoded conversation records
	outgoing recordCache[msgKey, storedMessage]           // own messages whose status can advance (history.go)
	sessions sessionCache                                 // parsed ratchet sessions, checked out while in use (sessions.go)
	// statusMu makes a status change's read and write of a message one
	// step, so that marking a message sent cannot overwrite the delivered
	// status of a receipt handled at the same moment.
	statusMu sync.Mutex

	sendSyncs sendSyncs // concurrent Sends share their syncs (sendsync.go)

	resendLimits resendLimits  // per requesting device (resendlimit.go)
	envelopes    envelopeIndex // messages of the batch envelopes built lately (outbox.go)

	finalizing sync.Map      // outbox IDs being finalized (see finalize)
	finalSem   chan struct{} // bounds the finalizing goroutines

	events chan Event
	kick   chan struct{} // wakes the outbox loop
	refill chan struct{} // wakes the prekey maintenance

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// Create creates a new account: a fresh account key and device identity
// key, stored in a new store, registered with the key server (device list,
// prekeys, optional handle) and logged in. It returns the running client.
// It fails with ErrExists if the store already holds an account.
func Create(ctx context.Context, opts Options) (*Client, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	st, err := openStore(opts, true)
	if err != nil {
		return nil, err
	}
	c := newClient(opts, st)
	if _, err := st.LoadIdentity(ctx); err == nil {
		st.Close()
		return nil, ErrExists
	}
	if err := c.register(ctx); err != nil {
		st.Close()
		return nil, err
	}
	c.start()
	return c, nil
}

// Open opens an existing account and starts the client. A wrong passphrase
// is reported by the store (pebblestore.ErrWrongPassphrase).
func Open(ctx context.Context, opts Options) (*Client, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	st, err := openStore(opts, false)
	if err != nil {
		return nil, err
	}
	c := newClient(opts, st)
	if err := c.loadIdentity(ctx); err != nil {
		st.Close()
		return nil, err
	}
	c.start()
	return c, nil
}

func newClient(opts Options, st store.Store) *Client {
	c := &Client{opts: opts, st: st, log: opts.Logger, now: opts.Now}
	c.events = make(chan Event, opts.EventBuffer)
	c.kick = make(chan struct{}, 1)
	c.refill = make(chan struct{}, 1)
	c.finalSem = make(chan struct{}, maxFinalizing)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.ks = newKeyServer(opts.KeyServerURL, opts.HTTPClient)
	return c
}

// start launches the background loops: relay connection and outbox.
func (c *Client) start() {
	if c.opts.Offline {
		return
	}
	c.wg.Add(3)
	go c.runRelay()
	go c.runOutbox()
	go c.runMaintenance()
}

// Events returns the channel on which the client reports what happens. It
// is closed by Close. An app must keep reading it: when its buffer is full
// the client waits.
func (c *Client) Events() <-chan Event { return c.events }

// emit delivers an event, waiting while the buffer is full, unless the
// client is closing.
func (c *Client) emit(ev Event) {
	select {
	case c.events <- ev:
	case <-c.ctx.Done():
	}
}

// Close stops the client: it disconnects, waits for the background loops,
// closes the store and then the events channel. What is still in the outbox
// is sent after the next Open.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.cancel()
		c.wg.Wait()
		c.closeErr = c.st.Close()
		close(c.events)
	})
	return c.closeErr
}

// Account returns the account ID.
func (c *Client) Account() crypto.AccountID { return c.id.account }

// Device returns this device's ID.
func (c *Client) Device() crypto.DeviceID { return c.id.device }

// Address returns this device's address.
func (c *Client) Address() crypto.Address {
	return crypto.Address{Account: c.id.account, Device: c.id.device}
}

func (c *Client) closed() error {
	if c.ctx.Err() != nil {
		return ErrClosed
	}
	return nil
}

func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("client: %s: %w", what, err)
}
