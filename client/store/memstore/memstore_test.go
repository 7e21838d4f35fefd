package memstore_test

import (
	"testing"

	"github.com/sotto-im/sotto/client/store"
	"github.com/sotto-im/sotto/client/store/memstore"
	"github.com/sotto-im/sotto/client/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(*testing.T) store.Store { return memstore.New() })
}
