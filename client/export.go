package client

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"filippo.io/age"

	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/crypto"
)

// Export and import.
//
// An export is an age file encrypted with a passphrase (scrypt). Inside,
// one JSON value per line: a header with the identity record (account key,
// this device's identity key and ID, delivery access key), then this
// device's prekeys and every contact, conversation, group and message
// record. Importing it on a fresh machine restores this device there: the
// old copy must not be used afterwards (two live copies of one device
// would each advance their own ratchets).
//
// What it leaves out, and why:
//   - ratchet sessions: a copy of a session restored beside a live one
//     would reuse message keys, so sessions never leave a device. After an
//     import, messages that arrive under an old session fail to decrypt;
//     the client then asks the sender to resend over a fresh session
//     (KindResendRequest), and its own sends start fresh sessions;
//   - group sender keys: the restored device makes a new one and
//     distributes it; members' keys arrive again as they send;
//   - the outbox and the de-duplication table: pending sends stay with the
//     copy that wrote them;
//   - attachment blobs: messages keep their pointers (and keys), but the
//     relay deletes blobs after its retention period.
//
// exportVersion is the version of the export format.
const exportVersion = 1

// testOnlyExportWorkFactor, when non-zero, lowers scrypt's work factor of
// exports (tests only: a low factor makes a stolen export cheap to attack).
var testOnlyExportWorkFactor int

type exportHeader struct {
	V        int             `json:"v"`
	Identity json.RawMessage `json:"identity"`
	Created  time.Time       `json:"created"`
}

type exportLine struct {
	Kind  string    `json:"kind"` // "record", "prekey" or "message"
	PKind uint8     `json:"pkind,omitempty"`
	PID   uint32    `json:"pid,omitempty"`
	RKind string    `json:"rkind,omitempty"` // record kind
	Key   []byte    `json:"key,omitempty"`
	Data  []byte    `json:"data"`
	Conv  *[32]byte `json:"conv,omitempty"`
	ID    *[16]byte `json:"id,omitempty"`
	Time  time.Time `json:"time,omitzero"`
}

// Export writes an encrypted backup of this device (account key if it
// holds it, device keys, contacts, groups, history; see above for what is
// left out) to w, under passphrase. The passphrase must be strong: the
// file is as safe as the passphrase.
func (c *Client) Export(ctx context.Context, w io.Writer, passphrase []byte) error {
	idRec, err := c.st.LoadIdentity(ctx)
	if err != nil {
		return wrap("export", err)
	}
	rcpt, err := age.NewScryptRecipient(string(passphrase))
	if err != nil {
		return wrap("export", err)
	}
	if testOnlyExportWorkFactor != 0 {
		rcpt.SetWorkFactor(testOnlyExportWorkFactor)
	}
	aw, err := age.Encrypt(w, rcpt)
	if err != nil {
		return wrap("export", err)
	}
	bw := bufio.NewWriter(aw)
	enc := json.NewEncoder(bw)
	if err := enc.Encode(exportHeader{V: exportVersion, Identity: idRec, Created: c.now()}); err != nil {
		return wrap("export", err)
	}
	for _, kind := range []store.PreKeyKind{store.SignedEC, store.OneTimeEC, store.KEM, store.KEMLastResort} {
		ids, err := c.st.PreKeyIDs(ctx, kind)
		if err != nil {
			return wrap("export prekeys", err)
		}
		for _, id := range ids {
			rec, err := c.st.LoadPreKey(ctx, kind, id)
			if err != nil {
				return wrap("export prekeys", err)
			}
			if err := enc.Encode(exportLine{Kind: "prekey", PKind: uint8(kind), PID: id, Data: rec}); err != nil {
				return wrap("export", err)
			}
		}
	}
	for _, kind := range []string{kindContact, kindConv, kindGroup} {
		err := c.st.ListRecords(ctx, kind, func(key, rec []byte) error {
			return enc.Encode(exportLine{Kind: "record", RKind: kind, Key: key, Data: rec})
		})
		if err != nil {
			return wrap("export "+kind, err)
		}
	}
	err = c.st.ScanMessages(ctx, func(m store.MessageRecord) error {
		conv, id := [32]byte(m.Conversation), m.ID
		return enc.Encode(exportLine{Kind: "message", Conv: &conv, ID: &id, Time: m.Time, Data: m.Data})
	})
	if err != nil {
		return wrap("export messages", err)
	}
	if err := bw.Flush(); err != nil {
		return wrap("export", err)
	}
	return wrap("export", aw.Close())
}

// Import restores an export into a new store (opts) and starts the
// restored device. A wrong passphrase gives an error wrapping
// crypto.ErrDecrypt.
func Import(ctx context.Context, opts Options, r io.Reader, passphrase []byte) (*Client, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	id, err := age.NewScryptIdentity(string(passphrase))
	if err != nil {
		return nil, wrap("import", err)
	}
	ar, err := age.Decrypt(r, id)
	if err != nil {
		return nil, fmt.Errorf("client: import: %w", crypto.ErrDecrypt)
	}
	dec := json.NewDecoder(bufio.NewReader(ar))
	var h exportHeader
	if err := dec.Decode(&h); err != nil || h.V != exportVersion {
		return nil, fmt.Errorf("client: import: not a Sotto export (version %d)", h.V)
	}
	ident, err := parseIdentity(h.Identity)
	if err != nil {
		return nil, err
	}
	st, err := openStore(opts, true)
	if err != nil {
		return nil, err
	}
	c := newClient(opts, st)
	c.id = ident
	fail := func(err error) (*Client, error) { st.Close(); return nil, err }
	for {
		var l exportLine
		if err := dec.Decode(&l); err == io.EOF {
			break
		} else if err != nil {
			return fail(wrap("import", err))
		}
		switch {
		case l.Kind == "prekey" && store.PreKeyKind(l.PKind).Valid():
			err = st.StorePreKey(ctx, store.PreKeyKind(l.PKind), l.PID, l.Data)
		case l.Kind == "record" && (l.RKind == kindContact || l.RKind == kindConv || l.RKind == kindGroup):
			if l.RKind == kindGroup {
				// Sender keys are not exported: distribute a new one.
				var g groupRecord
				if json.Unmarshal(l.Data, &g) == nil {
					g.KeyID, g.Distributed = 0, nil
					l.Data, _ = json.Marshal(&g)
				}
			}
			err = st.StoreRecord(ctx, l.RKind, l.Key, l.Data)
		case l.Kind == "message" && l.Conv != nil && l.ID != nil:
			err = st.PutMessage(ctx, store.MessageRecord{Conversation: *l.Conv, ID: *l.ID, Time: l.Time, Data: l.Data})
		}
		if err != nil {
			return fail(wrap("import", err))
		}
	}
	if err := st.StoreIdentity(ctx, h.Identity); err != nil {
		return fail(wrap("import", err))
	}
	if err := c.ks.login(ctx, c.Address(), c.id.ik, c.now); err != nil {
		return fail(wrap("import: login", err))
	}
	c.start()
	return c, nil
}
