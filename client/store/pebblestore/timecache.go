package pebblestore

import "sync"

// timeCache remembers the time entry (tMsgByID) of messages recently
// written. PutMessage must know a message's stored time to replace its
// index entry; a client writes each of its messages several times (sent,
// then delivered, then read), and without the cache each of those writes
// starts with a Pebble lookup. Entries are set after the batch that wrote
// them committed and dropped by any delete or failed write, under the
// message's stripe lock, so a cached time is the stored one.
type timeCache struct {
	mu sync.Mutex
	m  map[string][timeSize]byte
}

// maxCachedTimes bounds the cache; when full an arbitrary entry makes room.
const maxCachedTimes = 4096

func (c *timeCache) get(byID []byte) ([timeSize]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.m[string(byID)]
	return t, ok
}

func (c *timeCache) put(byID []byte, t [timeSize]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string][timeSize]byte)
	}
	if _, ok := c.m[string(byID)]; !ok && len(c.m) >= maxCachedTimes {
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[string(byID)] = t
}

func (c *timeCache) forget(byID []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, string(byID))
}
