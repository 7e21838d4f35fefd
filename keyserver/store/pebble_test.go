package store_test

import (
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/sotto-im/sotto/keyserver/store"
	"github.com/sotto-im/sotto/keyserver/store/storetest"
)

func TestPebbleDir(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		db, err := store.Open(t.TempDir(), store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return db
	})
}

func TestPebbleMem(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		db, err := store.Open("", store.Options{FS: vfs.NewMem()})
		if err != nil {
			t.Fatal(err)
		}
		return db
	})
}

func TestReopenKeepsData(t *testing.T) {
	fs := vfs.NewMem()
	db, err := store.Open("db", store.Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	a := &store.Account{Version: 1, Devices: []store.Device{{ID: 1}}, DeviceList: []byte("l")}
	a.ID[0] = 7
	if err := db.CreateAccount(t.Context(), a, 1, store.DeviceKeys{}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = store.Open("db", store.Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if got, err := db.Account(t.Context(), a.ID); err != nil || got.Version != 1 {
		t.Fatalf("after reopen: %+v, %v", got, err)
	}
}
