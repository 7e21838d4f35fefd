package server

import (
	"testing"

	"github.com/sotto-im/sotto/relay/store"
)

func TestPushAllowList(t *testing.T) {
	s := &Server{cfg: Config{PushHosts: []string{"push.example.org", "up.example.net:8443"}}.withDefaults()}
	p := &pusher{s: s}
	for _, tc := range []struct {
		url  string
		want bool
	}{
		{"https://push.example.org/up/abc", true},
		{"https://push.example.org:444/up", true}, // host entry without a port: any port
		{"https://up.example.net:8443/x", true},
		{"https://up.example.net/x", false}, // entry with a port: that port only
		{"https://up.example.net:8444/x", false},
		{"http://push.example.org/up", false}, // https only unless PushAllowHTTP
		{"https://push.example.org.evil.test/", false},
		{"https://evil.test/?h=push.example.org", false},
		{"https://user:pw@push.example.org/", false},
		{"//push.example.org/x", false},
		{"push.example.org/x", false},
		{"https://", false},
		{"", false},
		{"https://push.example.org/" + string(make([]byte, maxPushURLLen)), false},
	} {
		if got := p.allowed(tc.url); got != tc.want {
			t.Errorf("allowed(%q) = %v, want %v", tc.url, got, tc.want)
		}
	}
	s.cfg.PushAllowHTTP = true
	if !p.allowed("http://push.example.org/up") {
		t.Error("http refused with PushAllowHTTP")
	}
}

type fakeSub struct{ woken, displaced int }

func (f *fakeSub) Wake(*store.Message)     { f.woken++ }
func (f *fakeSub) Ephemeral(b []byte) bool { return true }
func (f *fakeSub) Displace()               { f.displaced++ }

func TestLocalNotifier(t *testing.T) {
	n := NewLocalNotifier()
	q := store.QueueID{Device: 1}
	if n.Wake(q, &store.Message{}) || n.Ephemeral(q, nil) {
		t.Fatal("offline device reported online")
	}
	a, b := &fakeSub{}, &fakeSub{}
	unsubA := n.Subscribe(q, a)
	if !n.Wake(q, &store.Message{Priority: 1}) || a.woken != 1 {
		t.Fatal("wake not delivered")
	}
	unsubB := n.Subscribe(q, b)
	if a.displaced != 1 || b.displaced != 0 {
		t.Fatalf("displacement: a %d, b %d", a.displaced, b.displaced)
	}
	unsubA() // a no longer owns q: must not remove b
	if !n.Wake(q, &store.Message{Priority: 1}) || b.woken != 1 {
		t.Fatal("a's unsubscribe removed b")
	}
	unsubB()
	if n.Wake(q, &store.Message{Priority: 1}) {
		t.Fatal("wake after unsubscribe")
	}
}
