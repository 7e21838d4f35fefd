package pebblestore

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/relay/store"
	"github.com/sotto-im/sotto/relay/store/storetest"
)

// checkInvariants scans the whole database and checks that the records
// agree with each other: counters with entries, reference counts with
// entries, the idempotency and expiry indexes with each other.
func checkInvariants(t *testing.T, d *DB) {
	t.Helper()
	kv := map[string][]byte{}
	var keys [][]byte
	if err := d.scan(nil, nil, func(k, v []byte) (bool, error) {
		kv[string(k)] = v
		keys = append(keys, k)
		return true, nil
	}); err != nil {
		t.Fatal(err)
	}
	type qc struct {
		n      int64
		b      int64
		maxSeq uint64
	}
	perQueue := map[store.QueueID]*qc{}
	refs := map[uint64]uint32{}
	for _, k := range keys {
		v := kv[string(k)]
		switch k[0] {
		case tQueue:
			q := parseQueueID(k[1:])
			var cur store.Cursor
			copy(cur[:], k[1+queueIDLen:])
			e, err := decodeEntry(v)
			if err != nil {
				t.Fatal(err)
			}
			c := perQueue[q]
			if c == nil {
				c = &qc{}
				perQueue[q] = c
			}
			c.n++
			c.b += e.size()
			c.maxSeq = max(c.maxSeq, binary.BigEndian.Uint64(cur[1:]))
			if e.bodyID == 0 {
				if len(e.inline) != int(e.bodyLen) {
					t.Fatalf("entry %x: inline body of %d bytes, %d recorded", k, len(e.inline), e.bodyLen)
				}
			} else {
				refs[e.bodyID]++
				if _, ok := kv[string(bodyKey(tBody, e.bodyID))]; !ok {
					t.Fatalf("entry %x: body %d missing", k, e.bodyID)
				}
			}
			iv, ok := kv[string(idemKey(q, e.id))]
			if !ok {
				t.Fatalf("entry %x has no idempotency record", k)
			}
			idm, _ := decodeIdem(iv)
			if idm.cursor != cur || idm.etime != e.expires {
				t.Fatalf("entry %x: idempotency record %+v", k, idm)
			}
			if ev, ok := kv[string(expiryKey(e.expires, q, cur))]; !ok || !bytes.Equal(ev, e.id[:]) {
				t.Fatalf("entry %x has no expiry record", k)
			}
		case tIdem:
			q := parseQueueID(k[1:])
			idm, err := decodeIdem(v)
			if err != nil {
				t.Fatal(err)
			}
			var id [16]byte
			copy(id[:], k[1+queueIDLen:])
			if ev, ok := kv[string(expiryKey(idm.etime, q, idm.cursor))]; !ok || !bytes.Equal(ev, id[:]) {
				t.Fatalf("idempotency record %x has no expiry record", k)
			}
		case tExpiry:
			q := parseQueueID(k[9:])
			var id [16]byte
			copy(id[:], v)
			iv, ok := kv[string(idemKey(q, id))]
			if !ok {
				t.Fatalf("expiry record %x has no idempotency record", k)
			}
			idm, _ := decodeIdem(iv)
			if idm.etime != binary.BigEndian.Uint64(k[1:]) {
				t.Fatalf("expiry record %x disagrees with %+v", k, idm)
			}
		}
	}
	for _, k := range keys {
		v := kv[string(k)]
		switch k[0] {
		case tCounter:
			q := parseQueueID(k[1:])
			c, err := decodeCounters(v)
			if err != nil {
				t.Fatal(err)
			}
			want := perQueue[q]
			if want == nil {
				want = &qc{}
			}
			if c.messages != want.n || c.bytes != want.b || c.lastSeq < want.maxSeq {
				t.Fatalf("queue %v counters %+v, entries say %+v", q, c, *want)
			}
			delete(perQueue, q)
		case tRefs:
			id := binary.BigEndian.Uint64(k[1:])
			if n := binary.BigEndian.Uint32(v); n != refs[id] {
				t.Fatalf("body %d: reference count %d, %d entries", id, n, refs[id])
			}
			delete(refs, id)
		case tBody:
			if _, ok := kv[string(bodyKey(tRefs, binary.BigEndian.Uint64(k[1:])))]; !ok {
				t.Fatalf("body %x without reference count", k)
			}
		}
	}
	if len(perQueue) != 0 {
		t.Fatalf("queues with entries but no counters: %v", perQueue)
	}
	if len(refs) != 0 {
		t.Fatalf("bodies referenced without reference count: %v", refs)
	}
}

// TestCrash runs writers and ackers, simulates a crash at a random moment
// (keeping only what was synced, or that plus some of the rest), and checks
// that every Put answered before the crash survived and that the records
// are consistent.
func TestCrash(t *testing.T) {
	for round := range 4 {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			fs := vfs.NewCrashableMem()
			d, err := Open("db", Options{FS: fs, Logf: t.Logf})
			if err != nil {
				t.Fatal(err)
			}
			var (
				mu       sync.Mutex
				accepted = map[[16]byte][]store.QueueID{}
				stop     = make(chan struct{})
				wg       sync.WaitGroup
			)
			for w := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						id := storetest.MsgID(w*1_000_000 + i)
						entries := []store.Entry{{Queue: storetest.Q(byte(w%3), 1), ID: id, Priority: uint8(i % 2), Expires: time.Now().Add(time.Hour)}}
						if i%4 == 0 {
							entries = append(entries, store.Entry{Queue: storetest.Q(9, crypto.DeviceID(1+i%3)), ID: id, Expires: time.Now().Add(time.Hour)})
						}
						if _, err := d.Put(ctx, []byte(fmt.Sprint("body", w, i)), entries); err != nil {
							return // closed
						}
						qs := make([]store.QueueID, len(entries))
						for j, e := range entries {
							qs[j] = e.Queue
						}
						mu.Lock()
						accepted[id] = qs
						mu.Unlock()
					}
				}()
			}
			for qi := range 3 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					q := storetest.Q(byte(qi), 1)
					for {
						select {
						case <-stop:
							return
						default:
						}
						msgs, err := d.Fetch(ctx, q, store.Cursor{}, 8)
						if err != nil {
							return
						}
						for _, m := range msgs[:len(msgs)/2] {
							if d.Ack(ctx, q, m.Key) != nil {
								return
							}
						}
					}
				}()
			}
			time.Sleep(time.Duration(50+rand.IntN(150)) * time.Millisecond)
			mu.Lock()
			before := make(map[[16]byte][]store.QueueID, len(accepted))
			for k, v := range accepted {
				before[k] = v
			}
			mu.Unlock()
			cfg := vfs.CrashCloneCfg{}
			if round%2 == 1 {
				cfg = vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rand.New(rand.NewPCG(uint64(round), 1))}
			}
			crashed := fs.CrashClone(cfg)
			close(stop)
			wg.Wait()
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}

			d2, err := Open("db", Options{FS: crashed, Logf: t.Logf})
			if err != nil {
				t.Fatal(err)
			}
			defer d2.Close()
			checkInvariants(t, d2)
			// Every accepted Put is there, unless acknowledged (acks are
			// not synced, so an acknowledged message may also come back).
			present := map[store.QueueID]map[[16]byte]bool{}
			for id, qs := range before {
				for _, q := range qs {
					if present[q] == nil {
						present[q] = map[[16]byte]bool{}
						msgs, err := d2.Fetch(ctx, q, store.Cursor{}, 1<<20)
						if err != nil {
							t.Fatal(err)
						}
						for _, m := range msgs {
							present[q][m.ID] = true
						}
					}
					if !present[q][id] {
						// Acknowledged ones leave an idempotency record
						// behind if their ack survived.
						if v, _, _ := d2.get(ctx, idemKey(q, id)); v == nil {
							t.Fatalf("accepted message %q for %v lost in the crash", id, q)
						}
					}
				}
			}
			t.Logf("%d Puts accepted before the crash", len(before))
		})
	}
}
