package pebblestore

import (
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/client/store/storetest"
)

// testWorkFactor keeps scrypt cheap in tests; the default (18) takes about
// a second per Create or Open.
const testWorkFactor = 10

var testPassphrase = []byte("correct horse battery staple")

func testOptions(fs vfs.FS) *Options {
	return &Options{FS: fs, ScryptWorkFactor: testWorkFactor}
}

func TestConformanceDisk(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		d, err := Create(t.TempDir(), testPassphrase, testOptions(nil))
		if err != nil {
			t.Fatal(err)
		}
		return d
	})
}

func TestConformanceMem(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		d, err := Create("store", testPassphrase, testOptions(vfs.NewMem()))
		if err != nil {
			t.Fatal(err)
		}
		return d
	})
}
