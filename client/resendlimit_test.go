package client

import (
	"testing"
	"time"

	"github.com/sotto-im/sotto/crypto"
)

func TestResendLimits(t *testing.T) {
	var r resendLimits
	now := time.Unix(1_800_000_000, 0)
	hostile := crypto.Address{Account: crypto.AccountID{1}, Device: 1}
	other := crypto.Address{Account: crypto.AccountID{2}, Device: 1}
	for i := range resendBurst {
		if !r.allow(hostile, now) {
			t.Fatalf("request %d of a burst refused", i)
		}
	}
	if r.allow(hostile, now) {
		t.Fatal("a request beyond the burst was answered")
	}
	if !r.allow(other, now) {
		t.Fatal("another device's request was refused")
	}
	// The allowance comes back at resendRate a second.
	later := now.Add(time.Second)
	for i := range resendRate {
		if !r.allow(hostile, later) {
			t.Fatalf("request %d a second later refused", i)
		}
	}
	if r.allow(hostile, later) {
		t.Fatal("more than resendRate requests answered a second later")
	}
}
