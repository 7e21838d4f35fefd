package recovering

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Reregisterer returns a registerer that registers with reg and, when a
// collector with the same description is already registered (by the store
// a recovery replaced), unregisters that one first. Give it to the store's
// Open so that each reopened store's metrics replace the failed one's.
func Reregisterer(reg prometheus.Registerer) prometheus.Registerer {
	if reg == nil {
		return nil
	}
	return reregisterer{reg}
}

type reregisterer struct{ prometheus.Registerer }

func (r reregisterer) Register(c prometheus.Collector) error {
	err := r.Registerer.Register(c)
	var are prometheus.AlreadyRegisteredError
	if !errors.As(err, &are) {
		return err
	}
	r.Registerer.Unregister(are.ExistingCollector)
	return r.Registerer.Register(c)
}

func (r reregisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}
