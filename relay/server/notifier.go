package server

import (
	"sync"

	"github.com/sotto-im/sotto/relay/store"
)

// LiveNotifier routes the relay's live events to the connection of a
// device, wherever that connection is. The in-process [LocalNotifier]
// serves one relay; a clustered relay replaces it with one that routes
// between relays (for example over NATS subjects keyed by queue).
type LiveNotifier interface {
	// Subscribe makes sub the device's live connection. A subscriber that
	// was there before is displaced (its Displace method is called). The
	// returned function removes sub, if it is still the subscriber.
	Subscribe(q store.QueueID, sub Subscriber) (unsubscribe func())
	// Wake tells the device's connection that m, now durable, landed in
	// its queue. The connection may deliver m as it is instead of reading
	// it back, or treat it as a hint to read its queue (all a notifier that
	// passes on only m.Priority allows). It reports whether a connection
	// was there to be told.
	Wake(q store.QueueID, m *store.Message) (online bool)
	// Ephemeral hands an ephemeral frame to the device's connection; it
	// reports whether one took it. Ephemeral frames are never stored.
	Ephemeral(q store.QueueID, frame []byte) (delivered bool)
}

// Subscriber is a device's live connection as the notifier sees it. Its
// methods must not block.
type Subscriber interface {
	// Wake reports a durable message of the subscriber's queue; m must not
	// be modified by anyone afterwards.
	Wake(m *store.Message)
	Ephemeral(frame []byte) bool
	Displace()
}

// LocalNotifier is the in-process LiveNotifier.
type LocalNotifier struct {
	mu   sync.RWMutex
	subs map[store.QueueID]Subscriber
}

// NewLocalNotifier returns an empty LocalNotifier.
func NewLocalNotifier() *LocalNotifier {
	return &LocalNotifier{subs: make(map[store.QueueID]Subscriber)}
}

// Subscribe implements LiveNotifier.
func (n *LocalNotifier) Subscribe(q store.QueueID, sub Subscriber) func() {
	n.mu.Lock()
	old := n.subs[q]
	n.subs[q] = sub
	n.mu.Unlock()
	if old != nil && old != sub {
		old.Displace()
	}
	return func() {
		n.mu.Lock()
		if n.subs[q] == sub {
			delete(n.subs, q)
		}
		n.mu.Unlock()
	}
}

func (n *LocalNotifier) get(q store.QueueID) Subscriber {
	n.mu.RLock()
	s := n.subs[q]
	n.mu.RUnlock()
	return s
}

// Wake implements LiveNotifier.
func (n *LocalNotifier) Wake(q store.QueueID, m *store.Message) bool {
	s := n.get(q)
	if s == nil {
		return false
	}
	s.Wake(m)
	return true
}

// Ephemeral implements LiveNotifier.
func (n *LocalNotifier) Ephemeral(q store.QueueID, frame []byte) bool {
	s := n.get(q)
	return s != nil && s.Ephemeral(frame)
}
