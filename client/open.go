package client

import (
	"errors"
	"fmt"

	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/client/store/pebblestore"
)

// openStore returns the app's store, or opens (create: creates) the
// default encrypted store in opts.Dir.
func openStore(opts Options, create bool) (store.Store, error) {
	if opts.Store != nil {
		return opts.Store, nil
	}
	if len(opts.Passphrase) == 0 {
		return nil, errors.New("client: Options.Passphrase is required with Options.Dir")
	}
	var (
		db  *pebblestore.DB
		err error
	)
	if create {
		db, err = pebblestore.Create(opts.Dir, opts.Passphrase, opts.PebbleOptions)
	} else {
		db, err = pebblestore.Open(opts.Dir, opts.Passphrase, opts.PebbleOptions)
	}
	if err != nil {
		return nil, fmt.Errorf("client: open store: %w", err)
	}
	return db, nil
}

// ChangePassphrase changes the passphrase of the default encrypted store
// (only the wrapped store key is rewritten). old must be the current
// passphrase. It fails for an app-provided store.
func (c *Client) ChangePassphrase(old, new []byte) error {
	db, ok := c.st.(*pebblestore.DB)
	if !ok {
		return errors.New("client: ChangePassphrase needs the default encrypted store")
	}
	return wrap("change passphrase", db.ChangePassphrase(old, new))
}
