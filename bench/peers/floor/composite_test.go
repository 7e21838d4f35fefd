package floor

import (
	"bytes"
	"testing"
)

// TestComposites runs each composite once, so a broken floor fails a test, not only a benchmark.
func TestComposites(t *testing.T) {
	ck, ad, pt := random(32), random(16), random(64)
	ct := ratchetMsg(ck, pt, ad, false, nil)
	if got := ratchetMsg(ck, nil, ad, true, ct); !bytes.Equal(got, pt) {
		t.Fatal("ratchet message floor does not round-trip")
	}
	k := newPQXDHKeys()
	for _, big := range []bool{false, true} {
		ek, kct := k.initiator(big)
		k.responder(ek, kct, big)
	}
}
