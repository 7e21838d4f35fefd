package crypto

// Test-only accessors into session state, for the lockstep tests of
// session_test.go. They live in a _test.go file so they never reach godoc
// or production builds.

// rootKeyForTest returns the current root key.
func (s *Session) rootKeyForTest() [32]byte { return s.ratchet.root.b }

// sendChainForTest returns the current sending chain key and counter.
func (s *Session) sendChainForTest() ([32]byte, uint32) {
	return s.ratchet.send.b, s.ratchet.sendN
}

// recvChainForTest returns the current receiving chain key and the next
// expected counter; ok is false before any receiving chain exists.
func (s *Session) recvChainForTest() (key [32]byte, next uint32, ok bool) {
	r := s.ratchet
	if len(r.chains) == 0 {
		return key, 0, false
	}
	ch := &r.chains[len(r.chains)-1]
	return ch.key.b, ch.next, true
}

// ratchetKeyForTest returns the current ratchet key pair's private and
// public halves.
func (s *Session) ratchetKeyForTest() (priv, pub [32]byte) {
	return s.ratchet.selfPriv, s.ratchet.selfPub
}

// knowsChainForTest reports whether the session still holds the receiving
// chain that a message's ratchet key names.
func (s *Session) knowsChainForTest(msg []byte) bool {
	m, err := parseMessage(msg)
	if err != nil {
		return false
	}
	for _, ch := range s.ratchet.chains {
		if ch.remote == m.header.dh {
			return true
		}
	}
	return false
}

// skippedForTest returns the total number of stored skipped keys and of
// receiving chains.
func (s *Session) skippedForTest() (keys, chains int) {
	return s.ratchet.nSkipped, len(s.ratchet.chains)
}
