package client

import (
	"errors"

	"github.com/sotto-im/sotto/client/store"
)

// openStore returns the app's store, or opens (create: creates) the
// default encrypted store in opts.Dir.
func openStore(opts Options, create bool) (store.Store, error) {
	if opts.Store != nil {
		return opts.Store, nil
	}
	return nil, errors.New("client: the encrypted Pebble store is not available in this build")
}
