package client

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/sotto-im/sotto/client/internal/content"
	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/internal/boundedmap"
	"github.com/sotto-im/sotto/relay/wire"
)

// The outbox (PROTOCOL of the client, not of the wire):
//
//	Send ──► history (pending) + outbox record ──► runOutbox ──► deliver ──► relay
//	                                                   ▲   │ failure: backoff with jitter
//	                                                   └───┘
//
// A message is in the outbox from before Send returns until the relay has
// accepted it for every recipient device; then the record is deleted and
// the history status moves to Sent. The relay de-duplicates by message ID,
// so a retry after an answer was lost stores nothing twice. Each attempt
// encrypts afresh (a ratchet message that was never delivered only leaves
// a skipped key at the recipient).
//
// runOutbox takes the outbox in batches of up to outboxBatch entries, in
// order: it encrypts a batch with deferred session writes, syncs once, and
// pipelines the sends (sendBatch; the send socket is in sender.go). Order
// per recipient holds because the relay stores one connection's sends in
// frame order and the pipeline stops at the first refusal. One exception:
// a send refused for a passing reason (5xx, 507) while later sends to the
// same recipient were already in flight and accepted is stored after
// them when it is retried.

// outboxRecord is one message waiting to be sent.
type outboxRecord struct {
	V       int                `json:"v"`
	ID      [16]byte           `json:"id"`
	Conv    ConversationID     `json:"conv"`
	To      []crypto.AccountID `json:"to"`
	Content []byte             `json:"content"`         // encoded content.Message
	Track   bool               `json:"track,omitempty"` // update the history status
	Sync    bool               `json:"sync,omitempty"`  // send a transcript to own devices
	Group   bool               `json:"group,omitempty"` // a group message: sender key, multi-recipient
	// RelayID, if set, is the relay-level message ID (a resent message
	// keeps its ID but needs a new one at the relay, which remembers
	// acknowledged IDs for de-duplication).
	RelayID   [16]byte `json:"relay_id,omitzero"`
	Attempts  int      `json:"attempts,omitempty"`
	Ephemeral bool     `json:"-"`
}

func (c *Client) recipients(ctx context.Context, cr *convRecord) ([]crypto.AccountID, error) {
	if !cr.IsGroup {
		r, err := c.loadContact(ctx, cr.Peer)
		if err != nil {
			return nil, err
		}
		if r.Blocked {
			return nil, ErrBlocked
		}
		return []crypto.AccountID{cr.Peer}, nil
	}
	g, err := c.loadGroup(ctx, cr.Group)
	if err != nil {
		return nil, err
	}
	var out []crypto.AccountID
	for _, m := range g.Members {
		if m.Account != c.id.account {
			out = append(out, m.Account)
		}
	}
	return out, nil
}

// enqueue places a message for a conversation in the outbox.
func (c *Client) enqueue(ctx context.Context, conv ConversationID, cr *convRecord, m *content.Message, track bool) error {
	to, err := c.recipients(ctx, cr)
	if err != nil {
		return err
	}
	return c.enqueueRec(ctx, conv, to, m, track, true, [16]byte{}, cr.IsGroup)
}

func (c *Client) enqueueTo(ctx context.Context, conv ConversationID, to []crypto.AccountID, m *content.Message, track, sync bool) error {
	return c.enqueueRelay(ctx, conv, to, m, track, sync, [16]byte{})
}

func (c *Client) enqueueRelay(ctx context.Context, conv ConversationID, to []crypto.AccountID, m *content.Message, track, sync bool, relayID [16]byte) error {
	return c.enqueueRec(ctx, conv, to, m, track, sync, relayID, false)
}

func (c *Client) enqueueRec(ctx context.Context, conv ConversationID, to []crypto.AccountID, m *content.Message, track, sync bool, relayID [16]byte, group bool) error {
	if m.Kind != content.KindReceipt && m.Kind != content.KindResendRequest && m.Kind != content.KindProfile {
		m.AccessKey = c.id.accessKey
	}
	if m.Kind == content.KindReceipt {
		m.AccessKey = c.id.accessKey
	}
	b, err := m.Marshal()
	if err != nil {
		return wrap("encode message", err)
	}
	if !fitsEnvelope(len(b), sync) {
		return ErrTooLarge
	}
	rec := &outboxRecord{V: recordVersion, ID: m.ID, Conv: conv, To: to, Content: b, Track: track, Sync: sync, RelayID: relayID, Group: group}
	raw, err := marshalOutbox(rec)
	if err != nil {
		return wrap("outbox record", err)
	}
	key := m.ID
	if relayID != ([16]byte{}) {
		key = relayID
	}
	if err := c.st.PutOutbox(ctx, key, raw); err != nil {
		return wrap("outbox", err)
	}
	select {
	case c.kick <- struct{}{}:
	default:
	}
	return nil
}

// maxPlaintext bounds a padded plaintext so that its sealed prekey message
// fits a relay header (wire.MaxHeaderSize): 4096 minus the KEM ciphertext,
// the ratchet and sealed-sender overheads and the sender certificate.
const maxPlaintext = 2048

// runOutbox sends the outbox in order, forever, backing off after failures.
func (c *Client) runOutbox() {
	defer c.wg.Done()
	var s sender
	defer s.drop()
	backoff := time.Duration(0)
	for {
		if backoff > 0 {
			// Full jitter: a random wait in [backoff/2, backoff).
			wait := backoff/2 + rand.N(backoff/2+1)
			select {
			case <-c.ctx.Done():
				return
			case <-time.After(wait):
			case <-c.kick:
				// A new message or a new relay connection: try now.
			}
		}
		err := c.flushOutbox(c.ctx, &s)
		if c.ctx.Err() != nil {
			return
		}
		if err != nil {
			c.log.Debug("client: outbox attempt failed", "err", err)
			backoff = min(max(2*backoff, outboxMinBackoff), outboxMaxBackoff)
			continue
		}
		backoff = 0
		select {
		case <-c.ctx.Done():
			return
		case <-c.kick:
		case <-c.refill:
			if err := c.maintainPreKeys(c.ctx); err != nil {
				c.log.Debug("client: prekey maintenance failed", "err", err)
			}
		}
	}
}

// outboxEntry is one parsed outbox entry.
type outboxEntry struct {
	key [16]byte // the outbox key (the message ID, or the relay ID of a resend)
	rec outboxRecord
	m   *content.Message
	// envelope is the relay ID of the batch envelope that carries the
	// entry with others (zero when it travels alone); member is its
	// encoding as a batch member.
	envelope [16]byte
	member   []byte
}

// outboxBatch bounds the entries one pass encrypts and sends together.
// Entries batched into shared envelopes (see batchRun) leave fewer sends
// than entries; the send socket's window bounds the sends in flight.
const outboxBatch = 4 * sendWindow

// flushOutbox sends every outbox entry in order, a batch at a time; it
// stops at the first failure so that messages are accepted in order.
//
// While one batch is on the wire, the next is encrypted: the relay's
// answers take about as long as the encryption (a durable write per
// batch), and the two used to take turns. The next batch is listed
// without the entries in flight. It is sent only if every entry of the
// batch before it was accepted; otherwise its ciphertexts are dropped (its
// sessions have advanced, which costs the recipients a few skipped message
// keys, as after any refusal) and its entries are encrypted afresh after
// the failure is handled.
func (c *Client) flushOutbox(ctx context.Context, s *sender) error {
	var next *builtBatch
	for {
		b := next
		next = nil
		if b == nil {
			batch, err := c.nextBatch(ctx, outboxBatch, nil)
			if err != nil || len(batch) == 0 {
				return err
			}
			if batch[0].rec.Group {
				// Group messages (sender keys, one multi-recipient send)
				// go one at a time.
				if err := c.sendOne(ctx, &batch[0]); err != nil {
					return err
				}
				continue
			}
			// Connect before encrypting: an attempt that cannot reach the
			// relay must not advance the sessions (each failed attempt
			// would cost the recipients a batch of skipped message keys,
			// and a long outage more than they keep).
			if _, err := s.socket(ctx, c); err != nil {
				return err
			}
			if b, err = c.buildBatch(ctx, batch); err != nil {
				return err
			}
		}
		prepared := make(chan *builtBatch, 1)
		go func() { prepared <- c.prepareNext(ctx, b) }()
		complete, err := c.sendBuilt(ctx, s, b)
		next = <-prepared
		if err != nil || !complete {
			next = nil
		}
		if err != nil {
			return err
		}
	}
}

// prepareNext lists and encrypts the batch after b, whose entries are in
// flight, or returns nil if there is none to prepare (an empty outbox, a
// group message first, or a failure: the next turn of flushOutbox lists
// and builds again and meets the failure itself).
func (c *Client) prepareNext(ctx context.Context, b *builtBatch) *builtBatch {
	if b.buildErr != nil {
		return nil
	}
	skip := make(map[[16]byte]bool, len(b.entries))
	for _, e := range b.entries {
		skip[e.key] = true
	}
	batch, err := c.nextBatch(ctx, outboxBatch, skip)
	if err != nil || len(batch) == 0 || batch[0].rec.Group {
		return nil
	}
	nb, err := c.buildBatch(ctx, batch)
	if err != nil {
		return nil
	}
	return nb
}

// errStopList ends a ListOutbox walk early.
var errStopList = errors.New("client: enough outbox entries")

// nextBatch returns up to max outbox entries, oldest first, skipping those
// being finalized and those in skip; it deletes entries that do not parse.
func (c *Client) nextBatch(ctx context.Context, max int, skip map[[16]byte]bool) ([]outboxEntry, error) {
	var (
		batch []outboxEntry
		bad   [][16]byte
	)
	err := c.st.ListOutbox(ctx, func(id [16]byte, raw []byte) error {
		if _, busy := c.finalizing.Load(id); busy || skip[id] {
			return nil
		}
		e := outboxEntry{key: id}
		if err := decodeOutbox(raw, &e.rec); err != nil {
			bad = append(bad, id)
			return nil
		}
		m, err := content.Parse(e.rec.Content)
		if err != nil {
			bad = append(bad, id)
			return nil
		}
		e.m = m
		batch = append(batch, e)
		if len(batch) == max {
			return errStopList
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStopList) {
		return nil, wrap("list outbox", err)
	}
	for _, id := range bad {
		c.log.Error("client: dropping unreadable outbox entry")
		c.st.DeleteOutbox(ctx, id)
	}
	return batch, nil
}

// builtBatch is a batch of outbox entries encrypted and made durable,
// ready to be sent.
type builtBatch struct {
	entries     []outboxEntry
	sends       []*wire.Send
	spans       []int        // how many entries each send carries, in order
	transcripts []*wire.Send // per entry; nil where the entry has none
	cert        *crypto.SenderCertificate
	buildErr    error // why building stopped before the batch's end
}

// buildBatch encrypts the entries of batch up to the first group message
// (batch[0] must not be one) one after another with their session writes
// deferred, and makes the sessions durable with one sync: a ratchet step
// must be on disk before its ciphertext leaves, otherwise a crash could
// reuse a message key. Runs of entries for the same account share one
// envelope (batchRun). An entry that fails to build ends the batch there
// (buildErr); an error means nothing was built.
func (c *Client) buildBatch(ctx context.Context, batch []outboxEntry) (*builtBatch, error) {
	n := 0
	for n < len(batch) && !batch[n].rec.Group {
		n++
	}
	cert, err := c.senderCert(ctx)
	if err != nil {
		return nil, err
	}
	b := &builtBatch{cert: cert, transcripts: make([]*wire.Send, 0, n)}
	dctx := deferWrites(ctx)
	built := 0
	for built < n {
		run := batchRun(batch[built:n])
		send, trs, err := c.buildRun(dctx, run, cert)
		if err != nil {
			b.buildErr = err
			break
		}
		b.sends, b.spans = append(b.sends, send), append(b.spans, len(run))
		b.transcripts = append(b.transcripts, trs...)
		built += len(run)
	}
	if built == 0 {
		return nil, b.buildErr
	}
	b.entries = batch[:built]
	if err := c.sync(ctx); err != nil {
		return nil, err
	}
	return b, nil
}

// buildRun builds the send for a run of entries (one envelope per
// recipient device) and the transcripts of its entries.
func (c *Client) buildRun(ctx context.Context, run []outboxEntry, cert *crypto.SenderCertificate) (*wire.Send, []*wire.Send, error) {
	var (
		send *wire.Send
		err  error
	)
	if len(run) == 1 {
		send, err = c.buildSend(ctx, &run[0].rec, run[0].m, cert, false)
	} else {
		if send, err = c.buildBatchSend(ctx, run, cert); err == nil {
			c.envelopes.record(run)
		}
	}
	if err != nil {
		return nil, nil, err
	}
	trs := make([]*wire.Send, len(run))
	for i := range run {
		if run[i].rec.Sync {
			if trs[i], err = c.buildSend(ctx, &run[i].rec, run[i].m, cert, true); err != nil {
				return nil, nil, err
			}
		}
	}
	return send, trs, nil
}

// Batches (content.KindBatch): when several messages for one account wait
// in the outbox, they travel in one envelope per recipient device, so the
// sealed-sender and ratchet work, the relay's stored entry and the
// recipient's acknowledgement are paid once for the run instead of once
// per message. Each member keeps its own ID, and the recipient handles it
// exactly as the same message received alone (de-duplication by ID
// included). A batch's relay ID is derived from its members' IDs, so a
// retry of the same run is the same relay message (the relay drops the
// copy), and a retry that runs differently is a new one whose members the
// recipient has already seen, or not, by ID. Transcripts for this
// account's other devices still go one per message.

// batchable reports whether an outbox entry may share an envelope: a 1:1
// message of a kind batches carry, sent for the first time (a resend
// keeps the relay ID it was asked under).
func (e *outboxEntry) batchable() bool {
	return !e.rec.Group && !e.rec.Ephemeral && e.rec.RelayID == [16]byte{} && len(e.rec.To) == 1 && e.m.CanBatch()
}

// batchRun returns the entries at the head of entries that go in one
// envelope: the first alone, or the longest run of batchable entries for
// the same account whose batch fits an envelope; it sets each member's
// encoding and the batch's relay ID on the run's entries.
func batchRun(entries []outboxEntry) []outboxEntry {
	first := &entries[0]
	if !first.batchable() {
		return entries[:1]
	}
	// The batch's own encoding: header, access key and batch fields.
	size := 1 + 1 + 16 + 8 + (1 + 3 + 32) + (1 + 3)
	n := 0
	for n < len(entries) && n < content.MaxBatchMembers {
		e := &entries[n]
		if !e.batchable() || e.rec.To[0] != first.rec.To[0] {
			break
		}
		if e.member == nil {
			m := *e.m
			m.AccessKey = [32]byte{}
			b, err := m.Marshal()
			if err != nil {
				break
			}
			e.member = b
		}
		if !fitsEnvelope(size+2+len(e.member), false) {
			break
		}
		size += 2 + len(e.member)
		n++
	}
	if n < 2 {
		return entries[:1]
	}
	run := entries[:n]
	id := batchID(run)
	for i := range run {
		run[i].envelope = id
	}
	return run
}

// envelopeIndex remembers which messages the batch envelopes built lately
// carry, for resend requests (apply.go, resendBatch). The history records
// them too (storedMessage.Envelope), but only once the relay has accepted
// the envelope and finalizeBatch has run, which can be after the
// recipient has received the envelope, failed to decrypt it, and asked.
type envelopeIndex struct {
	once sync.Once
	m    *boundedmap.Map[[16]byte, sentEnvelope]
}

// sentEnvelope is what a batch envelope carried: messages of one
// conversation, in order.
type sentEnvelope struct {
	conv ConversationID
	ids  [][16]byte
}

// maxIndexedEnvelopes bounds the envelopeIndex (64 message IDs each at
// most).
const maxIndexedEnvelopes = 1024

func (x *envelopeIndex) index() *boundedmap.Map[[16]byte, sentEnvelope] {
	x.once.Do(func() { x.m = boundedmap.New[[16]byte, sentEnvelope](maxIndexedEnvelopes) })
	return x.m
}

// record notes the messages of a batch run (its entries' envelope set).
func (x *envelopeIndex) record(run []outboxEntry) {
	e := sentEnvelope{conv: run[0].rec.Conv, ids: make([][16]byte, len(run))}
	for i := range run {
		e.ids[i] = run[i].rec.ID
	}
	x.index().Put(run[0].envelope, e)
}

// lookup returns the messages of envelope if it carried messages of conv.
func (x *envelopeIndex) lookup(envelope [16]byte, conv ConversationID) ([][16]byte, bool) {
	e, ok := x.index().Get(envelope)
	if !ok || e.conv != conv {
		return nil, false
	}
	return e.ids, true
}

// batchID is the relay ID of a batch: the first 16 bytes of SHA-256 over
// a label and its members' IDs, in order (PROTOCOL.md §13.4). The label
// lives here rather than in crypto/labels.go: it is a client rule, not
// a cryptographic one.
func batchID(run []outboxEntry) [16]byte {
	h := sha256.New()
	h.Write([]byte("sotto/v1 batch relay ID")) // PROTOCOL.md §1.4
	for i := range run {
		h.Write(run[i].rec.ID[:])
	}
	return [16]byte(h.Sum(nil))
}

// buildBatchSend builds one send carrying a run of entries as a batch.
func (c *Client) buildBatchSend(ctx context.Context, run []outboxEntry, cert *crypto.SenderCertificate) (*wire.Send, error) {
	bm := &content.Message{Kind: content.KindBatch, ID: run[0].envelope, Sent: run[0].m.Sent, AccessKey: c.id.accessKey,
		Batch: make([][]byte, len(run))}
	for i := range run {
		bm.Batch[i] = run[i].member
	}
	raw, err := bm.Marshal()
	if err != nil {
		return nil, wrap("encode batch", err)
	}
	rec := &outboxRecord{V: recordVersion, ID: bm.ID, Conv: run[0].rec.Conv, To: run[0].rec.To, Content: raw}
	return c.buildSend(ctx, rec, bm, cert, false)
}

// sendBuilt sends a built batch, in order, and finalizes the entries the
// relay accepted; complete reports that it accepted all of them and the
// batch was built to its end. It returns a nil error when it made progress
// without a failure.
//
// The sends are pipelined (see sender.go). The first refusal stops the
// pipeline; that entry then goes through deliver, the one-at-a-time path
// with the 409 refresh, the 401 fallback and the permanent refusals, and
// the entries after it are encrypted afresh in the next batch (the
// ciphertexts of theirs that were not accepted only leave skipped keys at
// the recipients). A dropped socket or a timeout returns an error: the
// entries without a 200 are retried after the backoff, and the relay
// de-duplicates by message ID those whose 200 was lost.
func (c *Client) sendBuilt(ctx context.Context, s *sender, b *builtBatch) (complete bool, err error) {
	sock, err := s.socket(ctx, c)
	if err != nil {
		return false, err
	}
	var results []*wire.SendResult
	var sendErr error
	if sock != nil {
		results, sendErr = sock.pipeline(ctx, b.sends, func(send *wire.Send) (*wire.SendResult, error) {
			return c.postSend(ctx, send)
		})
		if sendErr != nil {
			s.drop()
		}
	} else {
		results = make([]*wire.SendResult, len(b.sends))
		for i, send := range b.sends {
			r, err := c.postSend(ctx, send)
			if err != nil {
				sendErr = err
				break
			}
			if results[i] = r; r.Status != http.StatusOK {
				break
			}
		}
	}

	// Accepted entries, in order up to the first send without a 200:
	// their transcripts go out (identified, over HTTP), then they are
	// finalized.
	batch := b.entries
	k := 0 // entries accepted
	j := 0 // sends accepted
	for ; j < len(b.sends); j++ {
		if results[j] == nil || results[j].Status != http.StatusOK {
			break
		}
		for i := k; i < k+b.spans[j]; i++ {
			if tr := b.transcripts[i]; tr != nil {
				if err := c.postTranscript(ctx, &batch[i], tr, b.cert); err != nil {
					c.finalizeBatch(ctx, batch[:i], nil)
					return false, err
				}
			}
		}
		k += b.spans[j]
	}
	c.finalizeBatch(ctx, batch[:k], nil)
	switch {
	case j == len(b.sends):
		return b.buildErr == nil, b.buildErr
	case results[j] == nil:
		if sendErr == nil {
			sendErr = errors.New("client: relay did not answer a send")
		}
		return false, sendErr
	default:
		// The refused send's first entry goes alone through deliver; the
		// rest of its run is built afresh in the next batch.
		e := batch[k]
		e.envelope = [16]byte{}
		return false, c.sendOne(ctx, &e)
	}
}

// postTranscript sends a transcript built in a batch; if the relay does not
// accept it, deliverTranscript builds it again and handles the refusal.
func (c *Client) postTranscript(ctx context.Context, e *outboxEntry, tr *wire.Send, cert *crypto.SenderCertificate) error {
	r, err := c.postSend(ctx, tr)
	if err != nil {
		return err
	}
	if r.Status == http.StatusOK {
		return nil
	}
	return c.deliverTranscript(ctx, &e.rec, e.m, cert)
}

// sendOne sends one entry through deliver and finalizes it unless the
// attempt failed in a way worth retrying.
func (c *Client) sendOne(ctx context.Context, e *outboxEntry) error {
	err := c.deliver(ctx, &e.rec, e.m)
	var perm *permanentError
	if errors.As(err, &perm) {
		c.log.Warn("client: message refused for good", "err", err)
		c.finalizeBatch(ctx, nil, e)
		return nil
	}
	if err != nil {
		return err
	}
	c.finalizeBatch(ctx, []outboxEntry{*e}, nil)
	return nil
}

// maxFinalizing bounds the batches whose outbox entries and statuses are
// being written in the background.
const maxFinalizing = 64

// finalizeBatch deletes the outbox entries of accepted messages and marks
// them sent (and deletes refused, if not nil, without a status change), in
// the background: these writes need not delay the next send. They are
// written deferred and made durable with one sync. Until it is done the
// entries are skipped by nextBatch; a crash before it is done only resends
// the messages under the same IDs, which the relay drops as duplicates.
func (c *Client) finalizeBatch(ctx context.Context, accepted []outboxEntry, refused *outboxEntry) {
	if len(accepted) == 0 && refused == nil {
		return
	}
	type fin struct {
		key      [16]byte
		rec      outboxRecord
		envelope [16]byte
		sent     bool
	}
	list := make([]fin, 0, len(accepted)+1)
	for i := range accepted {
		list = append(list, fin{accepted[i].key, accepted[i].rec, accepted[i].envelope, true})
	}
	if refused != nil {
		list = append(list, fin{refused.key, refused.rec, [16]byte{}, false})
	}
	for _, f := range list {
		c.finalizing.Store(f.key, true)
	}
	c.finalSem <- struct{}{}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer func() { <-c.finalSem }()
		defer func() {
			for _, f := range list {
				c.finalizing.Delete(f.key)
			}
		}()
		dctx := deferWrites(ctx)
		var sent []fin
		for _, f := range list {
			if err := c.st.DeleteOutbox(dctx, f.key); err != nil {
				c.log.Debug("client: outbox entry not deleted", "err", err)
				continue
			}
			if f.rec.Track && f.sent {
				sent = append(sent, f)
			}
		}
		var updates []Message
		for _, f := range sent {
			if sm, ok := c.markSent(dctx, f.rec.Conv, f.rec.ID, f.envelope); ok {
				updates = append(updates, sm)
			}
		}
		// The new statuses are reported once durable.
		if err := c.sync(ctx); err != nil {
			c.log.Debug("client: outbox finalization not synced", "err", err)
			return
		}
		for _, m := range updates {
			c.emit(UpdateEvent{Message: m})
		}
	}()
}

// markSent moves an outgoing message's status to Sent, if it is behind,
// and records the batch envelope that carried it (if not zero).
func (c *Client) markSent(ctx context.Context, conv ConversationID, id, envelope [16]byte) (Message, bool) {
	c.statusMu.Lock()
	defer c.statusMu.Unlock()
	sm, err := c.getMessage(ctx, conv, id)
	if err != nil || !sm.Outgoing {
		return Message{}, false
	}
	// The recipient's receipt may have moved the status on already; the
	// envelope is recorded all the same.
	behind := sm.Status < StatusSent
	if !behind && (envelope == [16]byte{} || sm.Envelope == envelope) {
		return Message{}, false
	}
	if behind {
		sm.Status = StatusSent
	}
	if envelope != ([16]byte{}) {
		sm.Envelope = envelope
	}
	if c.putMessage(ctx, conv, id, sm) != nil {
		return Message{}, false
	}
	return sm.public(conv, id), behind
}

// permanentError is a refusal that retrying cannot fix (410, 400, 413).
type permanentError struct{ status int }

func (e *permanentError) Error() string {
	return fmt.Sprintf("client: relay refused the message (%d)", e.status)
}

// maxDeviceRetries bounds the 409 refresh-and-retry rounds of one attempt.
const maxDeviceRetries = 3

// deliver encrypts m for every device of the recipients (and a transcript
// for this account's other devices) and sends it to the relay. On 409 it
// refreshes the device lists named and tries again.
func (c *Client) deliver(ctx context.Context, rec *outboxRecord, m *content.Message) error {
	cert, err := c.senderCert(ctx)
	if err != nil {
		return err
	}
	if rec.Group {
		if err := c.deliverGroup(ctx, rec, cert); err != nil {
			return err
		}
		return c.deliverTranscript(ctx, rec, m, cert)
	}
	for round := 0; ; round++ {
		send, err := c.buildSend(deferWrites(ctx), rec, m, cert, false)
		if err != nil {
			return err
		}
		// The session steps must be durable before the ciphertext leaves.
		if err := c.sync(ctx); err != nil {
			return err
		}
		res, err := c.postSend(ctx, send)
		if err != nil {
			return err
		}
		switch {
		case res.Status == http.StatusOK:
		case res.Status == http.StatusConflict && round < maxDeviceRetries:
			if err := c.refreshNamed(ctx, res); err != nil {
				return err
			}
			continue
		case res.Status == http.StatusUnauthorized && send.Sealed && round < maxDeviceRetries:
			// A stale access key: forget it and send identified.
			for _, a := range rec.To {
				if r, err := c.loadContact(ctx, a); err == nil {
					r.AccessKey = nil
					c.saveContact(ctx, r)
				}
			}
			continue
		case res.Status == http.StatusGone || res.Status == http.StatusBadRequest || res.Status == http.StatusRequestEntityTooLarge:
			return &permanentError{int(res.Status)}
		default:
			return fmt.Errorf("client: relay answered %d %s", res.Status, res.Code)
		}
		break
	}
	return c.deliverTranscript(ctx, rec, m, cert)
}

// deliverTranscript sends this account's other devices a transcript of a
// message it sent.
func (c *Client) deliverTranscript(ctx context.Context, rec *outboxRecord, m *content.Message, cert *crypto.SenderCertificate) error {
	if !rec.Sync || rec.Ephemeral {
		return nil
	}
	// The transcript for this account's other devices goes as an
	// identified send: the relay lets an identified sender leave out its
	// own sending device, which a sealed send cannot.
	for round := 0; ; round++ {
		send, err := c.buildSend(deferWrites(ctx), rec, m, cert, true)
		if err != nil || send == nil {
			return err
		}
		if err := c.sync(ctx); err != nil {
			return err
		}
		res, err := c.postSend(ctx, send)
		if err != nil {
			return err
		}
		switch {
		case res.Status == http.StatusOK:
			return nil
		case res.Status == http.StatusConflict && round < maxDeviceRetries:
			if err := c.refreshOwnDevices(ctx); err != nil {
				return err
			}
		default:
			return fmt.Errorf("client: relay answered %d %s to a transcript", res.Status, res.Code)
		}
	}
}

// buildSend builds the relay request: one sealed envelope per device.
// With own set it builds the transcript for this account's other devices
// (nil if there are none).
func (c *Client) buildSend(ctx context.Context, rec *outboxRecord, m *content.Message, cert *crypto.SenderCertificate, own bool) (*wire.Send, error) {
	send := &wire.Send{ID: rec.ID, Ephemeral: rec.Ephemeral}
	if rec.RelayID != ([16]byte{}) {
		send.ID = rec.RelayID
	}
	if own {
		nested, _ := m.Marshal()
		dest := &content.Destination{Account: rec.To[0]}
		if m.Group != ([16]byte{}) {
			dest = &content.Destination{Group: m.Group}
		}
		t := &content.Message{Kind: content.KindTranscript, ID: m.ID, Sent: m.Sent, Destination: dest, Nested: nested}
		pt, err := t.Marshal()
		if err != nil {
			return nil, wrap("encode transcript", err)
		}
		c.idMu.Lock()
		signed := c.id.deviceList
		c.idMu.Unlock()
		l, err := c.verifiedList(signed, c.id.account)
		if err != nil {
			return nil, wrap("own device list", err)
		}
		acct := wire.SendAccount{Account: c.id.account}
		for _, d := range l.Devices {
			if d.ID == c.id.device {
				continue
			}
			env, err := c.encryptDevice(ctx, crypto.Address{Account: c.id.account, Device: d.ID}, d.Identity, l, crypto.Pad(pt), cert)
			if err != nil {
				return nil, err
			}
			acct.Devices = append(acct.Devices, wire.SendDevice{Device: uint32(d.ID), Header: env})
		}
		if len(acct.Devices) == 0 {
			return nil, nil
		}
		send.Accounts = []wire.SendAccount{acct}
		return send, nil
	}
	padded := crypto.Pad(rec.Content)
	send.Sealed = true
	for _, a := range rec.To {
		r, err := c.loadContact(ctx, a)
		if errors.Is(err, ErrUnknownContact) {
			// A fellow group member this account has not talked to.
			r, err = c.addAccount(ctx, a)
		}
		if err != nil {
			return nil, err
		}
		var l *crypto.DeviceList
		if r.DeviceList != nil {
			if l, err = c.verifiedList(r.DeviceList, r.Account); err != nil {
				return nil, err
			}
		}
		if l == nil {
			if l, err = c.refreshDevices(ctx, r); err != nil {
				return nil, err
			}
		}
		acct := wire.SendAccount{Account: a}
		if len(r.AccessKey) == 32 {
			copy(acct.AccessKey[:], r.AccessKey)
		} else {
			send.Sealed = false
		}
		for _, d := range l.Devices {
			env, err := c.encryptDevice(ctx, crypto.Address{Account: a, Device: d.ID}, d.Identity, l, padded, cert)
			if err != nil {
				return nil, err
			}
			acct.Devices = append(acct.Devices, wire.SendDevice{Device: uint32(d.ID), Header: env})
		}
		send.Accounts = append(send.Accounts, acct)
	}
	return send, nil
}

// encryptDevice encrypts for one device, fetching its bundle and starting a
// session when there is none.
func (c *Client) encryptDevice(ctx context.Context, addr crypto.Address, ik crypto.IdentityKey, l *crypto.DeviceList, padded []byte, cert *crypto.SenderCertificate) ([]byte, error) {
	env, err := c.encryptTo(ctx, addr, ik, nil, padded, cert)
	if !errors.Is(err, errNeedBundle) {
		return env, err
	}
	bundle, err := c.ks.bundle(ctx, addr)
	if err != nil {
		return nil, err
	}
	if err := bundle.VerifyAgainst(l); err != nil {
		return nil, wrap("bundle of "+addr.String(), err)
	}
	return c.encryptTo(ctx, addr, ik, bundle, padded, cert)
}

// refreshNamed refreshes the device lists of the accounts a 409 names.
func (c *Client) refreshNamed(ctx context.Context, res *wire.SendResult) error {
	done := map[crypto.AccountID]bool{}
	for _, d := range append(res.Missing, res.Extra...) {
		a := crypto.AccountID(d.Account)
		if done[a] {
			continue
		}
		done[a] = true
		if a == c.id.account {
			if err := c.refreshOwnDevices(ctx); err != nil {
				return err
			}
			continue
		}
		r, err := c.loadContact(ctx, a)
		if err != nil {
			return err
		}
		if _, err := c.refreshDevices(ctx, r); err != nil {
			return err
		}
	}
	return nil
}

// refreshOwnDevices fetches this account's device list.
func (c *Client) refreshOwnDevices(ctx context.Context) error {
	signed, err := c.ks.deviceList(ctx, c.id.account)
	if err != nil {
		return err
	}
	l, err := crypto.VerifyDeviceList(signed, c.id.account)
	if err != nil {
		return wrap("own device list", err)
	}
	c.idMu.Lock()
	defer c.idMu.Unlock()
	old, err := crypto.VerifyDeviceList(c.id.deviceList, c.id.account)
	if err == nil && old.Version >= l.Version {
		return nil
	}
	c.id.deviceList = signed
	if err := c.saveIdentity(ctx); err != nil {
		return err
	}
	var ids []crypto.DeviceID
	for _, d := range l.Devices {
		ids = append(ids, d.ID)
	}
	go c.emit(DeviceEvent{Devices: ids})
	return nil
}

// deferWrites returns a context under which the store's writes need not be
// durable until the next c.sync.
func deferWrites(ctx context.Context) context.Context { return store.Deferred(ctx) }
