package relayhttp_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/relay/server"
	"github.com/sotto-im/sotto/relay/store"
	"github.com/sotto-im/sotto/relay/wire"
)

// liveRecords returns every key and value of the relay's Pebble keyspace
// that contains needle.
func (e *env) liveRecords(needle []byte) [][2][]byte {
	e.t.Helper()
	it, err := e.db.Pebble().NewIter(nil)
	if err != nil {
		e.t.Fatal(err)
	}
	defer it.Close()
	var out [][2][]byte
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			e.t.Fatal(err)
		}
		if bytes.Contains(it.Key(), needle) || bytes.Contains(v, needle) {
			out = append(out, [2][]byte{bytes.Clone(it.Key()), bytes.Clone(v)})
		}
	}
	return out
}

// blobFilesNaming counts files under the blob store that contain needle.
func (e *env) blobFilesNaming(needle []byte) int {
	n := 0
	err := filepath.WalkDir(filepath.Join(e.dir, "blobs"), func(path string, de os.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err == nil && bytes.Contains(b, needle) {
			n++
		}
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

// fillAccount gives a through the relay everything the relay keeps for an
// account: queued and acknowledged messages on two devices, an access key,
// push endpoints and a blob. Bodies and blob contents carry the account ID.
func (e *env) fillAccount(a crypto.AccountID, from string) {
	e.t.Helper()
	q1 := store.QueueID{Account: a, Device: 1}
	q2 := store.QueueID{Account: a, Device: 2}
	for i := range 4 {
		m := msg(q1, uint8(i%2), "for "+string(a[:]))
		m.Accounts[0].Devices = append(m.Accounts[0].Devices, wire.SendDevice{Device: 2, Header: a[:]})
		e.mustSend(from, m)
	}
	// A one-recipient send stores its body inline: name device 2 alone for
	// a moment.
	e.direct.set(a, 2)
	for range 2 {
		e.mustSend(from, msg(q2, 0, "solo "+string(a[:])))
	}
	e.direct.set(a, 1, 2)
	key := [32]byte{9, 9, 9}
	kb, _ := json.Marshal(map[string]string{"access_key": b64(key[:])})
	if status, body := e.do("PUT", "/v1/relay/access-key", e.token(q1), kb); status != http.StatusNoContent {
		e.t.Fatalf("access key: %d %s", status, body)
	}
	for _, q := range []store.QueueID{q1, q2} {
		pb, _ := json.Marshal(map[string]string{"url": "http://push.test/" + q.String()})
		if status, body := e.do("PUT", "/v1/relay/push", e.token(q), pb); status != http.StatusNoContent {
			e.t.Fatalf("push: %d %s", status, body)
		}
	}
	if status, body := e.do("POST", "/v1/blobs", e.token(q1), bytes.Repeat(a[:], 100)); status != http.StatusCreated {
		e.t.Fatalf("blob: %d %s", status, body)
	}
	// Device 1 reads and acknowledges what it has: the messages leave the
	// queue, their idempotency records stay.
	d := e.dial(q1)
	for range 4 {
		d.ack(d.deliver().Cursor)
	}
	d.drained()
	d.c.CloseNow()
	waitFor(e.t, func() bool { return e.depth(q1) == 0 })
}

func TestPurgeErasesEverything(t *testing.T) {
	e := newEnv(t, envOptions{cfg: server.Config{PushHosts: []string{"push.test"}, PushAllowHTTP: true}})
	victim := e.account(1, 2)
	control := e.account(1, 2)
	from := e.token(store.QueueID{Account: e.account(1), Device: 1})
	e.fillAccount(victim, from)
	e.fillAccount(control, from)
	if err := e.db.Pebble().Flush(); err != nil {
		t.Fatal(err)
	}
	if len(e.liveRecords(victim[:])) == 0 || e.blobFilesNaming(victim[:]) == 0 {
		t.Fatal("nothing of the victim stored")
	}
	controlBefore := e.liveRecords(control[:])
	controlBlobs := e.blobFilesNaming(control[:])

	// One device first.
	v2 := store.QueueID{Account: victim, Device: 2}
	v2ID := append(victim[:len(victim):len(victim)], 0, 0, 0, 2)
	if len(e.liveRecords(v2ID)) == 0 {
		t.Fatal("nothing of device 2 stored")
	}
	if err := e.srv.PurgeDevice(context.Background(), v2); err != nil {
		t.Fatal(err)
	}
	if left := e.liveRecords(v2ID); len(left) != 0 {
		t.Fatalf("after PurgeDevice %d records name the device, first key %x", len(left), left[0][0])
	}
	if u, err := e.db.PushEndpoint(context.Background(), store.QueueID{Account: victim, Device: 1}); err != nil || u == "" {
		t.Fatalf("device 1's push endpoint went with device 2: %q %v", u, err)
	}

	// Then the whole account.
	if err := e.srv.PurgeAccount(context.Background(), victim); err != nil {
		t.Fatal(err)
	}
	if left := e.liveRecords(victim[:]); len(left) != 0 {
		t.Fatalf("after PurgeAccount %d records name the account, first key %x value %x", len(left), left[0][0], left[0][1])
	}
	if n := e.blobFilesNaming(victim[:]); n != 0 {
		t.Fatalf("after PurgeAccount %d blob files hold the account's data", n)
	}
	if after := e.liveRecords(control[:]); len(after) != len(controlBefore) {
		t.Fatalf("control account: %d records before, %d after", len(controlBefore), len(after))
	}
	for i, r := range e.liveRecords(control[:]) {
		if !bytes.Equal(r[0], controlBefore[i][0]) || !bytes.Equal(r[1], controlBefore[i][1]) {
			t.Fatalf("control record %x changed", r[0])
		}
	}
	if n := e.blobFilesNaming(control[:]); n != controlBlobs {
		t.Fatalf("control blobs: %d files before, %d after", controlBlobs, n)
	}
	// A sealed send to the purged account is refused even while the
	// directory still lists it (no access key hash is left to match).
	m := msg(store.QueueID{Account: victim, Device: 1}, 0, "late")
	m.Accounts[0].Devices = append(m.Accounts[0].Devices, wire.SendDevice{Device: 2})
	m.Sealed = true
	m.Accounts[0].AccessKey = [32]byte{9, 9, 9}
	if status, body := e.send("", m); status != http.StatusUnauthorized {
		t.Fatalf("sealed send after purge: %d %s", status, body)
	}
	m.Accounts[0].AccessKey = [32]byte{}
	if status, body := e.send("", m); status != http.StatusUnauthorized {
		t.Fatalf("sealed send with a zero key after purge: %d %s", status, body)
	}
}
