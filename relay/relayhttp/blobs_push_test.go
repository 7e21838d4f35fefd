package relayhttp_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sotto-im/sotto/relay/relayhttp"
	"github.com/sotto-im/sotto/relay/server"
	"github.com/sotto-im/sotto/relay/store"
)

func TestBlobs(t *testing.T) {
	e := newEnv(t, envOptions{blobs: 64 << 10, quota: 100 << 10})
	bob := store.QueueID{Account: e.account(1), Device: 1}
	tok := e.token(bob)
	data := bytes.Repeat([]byte("0123456789"), 5000) // 50,000 bytes

	if status, body := e.do("POST", "/v1/blobs", "", data); status != http.StatusUnauthorized || errCode(t, body) != server.CodeUnauthorized {
		t.Fatalf("upload without token: %d %s", status, body)
	}
	status, body := e.do("POST", "/v1/blobs", tok, data)
	if status != http.StatusCreated {
		t.Fatalf("upload: %d %s", status, body)
	}
	var created struct{ ID string }
	if err := json.Unmarshal(body, &created); err != nil || len(created.ID) != 22 {
		t.Fatalf("upload answer %s", body)
	}
	path := "/v1/blobs/" + created.ID

	// Download, whole and by Range; no token needed (the ID is the capability).
	status, got := e.do("GET", path, "", nil)
	if status != http.StatusOK || !bytes.Equal(got, data) {
		t.Fatalf("download: %d, %d bytes", status, len(got))
	}
	status, got = e.do("GET", path, "", nil, "Range", "bytes=10-19")
	if status != http.StatusPartialContent || string(got) != "0123456789" {
		t.Fatalf("range: %d %q", status, got)
	}
	status, got = e.do("GET", path, "", nil, "Range", "bytes=-5")
	if status != http.StatusPartialContent || string(got) != "56789" {
		t.Fatalf("suffix range: %d %q", status, got)
	}
	// Invalid ranges.
	for _, r := range []string{"bytes=60000-70000", "bytes=50000-"} {
		status, body := e.do("GET", path, "", nil, "Range", r)
		if status != http.StatusRequestedRangeNotSatisfiable || errCode(t, body) != "bad_range" {
			t.Fatalf("range %s: %d %s", r, status, body)
		}
	}
	// Unknown and malformed IDs.
	for _, p := range []string{"/v1/blobs/AAAAAAAAAAAAAAAAAAAAAA", "/v1/blobs/short", "/v1/blobs/" + strings.Repeat("A", 21) + "B"} {
		if status, body := e.do("GET", p, "", nil); status != http.StatusNotFound || errCode(t, body) != "not_found" {
			t.Fatalf("GET %s: %d %s", p, status, body)
		}
	}
	// Size limit.
	if status, body := e.do("POST", "/v1/blobs", tok, make([]byte, 64<<10+1)); status != http.StatusRequestEntityTooLarge || errCode(t, body) != "too_large" {
		t.Fatalf("oversize: %d %s", status, body)
	}
	// Quota: 50,000 used of 100 KiB; another 50,000 fits, a third does not.
	if status, body := e.do("POST", "/v1/blobs", tok, data); status != http.StatusCreated {
		t.Fatalf("second upload: %d %s", status, body)
	}
	if status, body := e.do("POST", "/v1/blobs", tok, data); status != http.StatusInsufficientStorage || errCode(t, body) != "quota_exceeded" {
		t.Fatalf("over quota: %d %s", status, body)
	}
	// A body shorter than its declared length keeps nothing.
	req, _ := http.NewRequest("POST", e.url("/v1/blobs"), strings.NewReader("short"))
	req.ContentLength = 100
	req.Header.Set("Authorization", "Bearer "+tok)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode < 400 || resp.StatusCode >= 500 {
			t.Fatalf("short body: %d", resp.StatusCode)
		}
	}
	// Expiry.
	e.clock.Advance(server.DefaultBlobTTL + time.Hour)
	e.srv.Sweep(context.Background())
	if status, _ := e.do("GET", path, "", nil); status != http.StatusNotFound {
		t.Fatalf("expired blob: %d", status)
	}
}

func TestBlobIDText(t *testing.T) {
	var id store.BlobID
	for i := range id {
		id[i] = byte(i * 17)
	}
	back, err := relayhttp.ParseBlobID(relayhttp.BlobIDText(id))
	if err != nil || back != id {
		t.Fatalf("round trip: %v", err)
	}
}

// pushTarget is a push service that counts wakeups.
type pushTarget struct {
	hits atomic.Int32
	srv  *httptest.Server
}

func newPushTarget(t *testing.T) *pushTarget {
	p := &pushTarget{}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var buf bytes.Buffer
		buf.ReadFrom(r.Body)
		if r.Method != "POST" || buf.String() != `{"sotto":"wakeup"}` {
			t.Errorf("wakeup %s with body %q", r.Method, buf.String())
		}
		p.hits.Add(1)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *pushTarget) host() string { return strings.TrimPrefix(p.srv.URL, "http://") }

func TestPushWakeups(t *testing.T) {
	allowed := newPushTarget(t)
	forbidden := newPushTarget(t)
	e := newEnv(t, envOptions{cfg: server.Config{PushHosts: []string{allowed.host()}, PushAllowHTTP: true, PushCoalesce: time.Minute}})
	bob := store.QueueID{Account: e.account(1), Device: 1}
	carol := store.QueueID{Account: e.account(1), Device: 1}
	from := e.token(store.QueueID{Account: e.account(1), Device: 1})

	reg := func(q store.QueueID, url string) (int, []byte) {
		b, _ := json.Marshal(map[string]string{"url": url})
		return e.do("PUT", "/v1/relay/push", e.token(q), b)
	}
	if status, body := reg(bob, allowed.srv.URL+"/up/bob"); status != http.StatusNoContent {
		t.Fatalf("register: %d %s", status, body)
	}
	// A host off the allow-list, or a non-URL, is refused at registration.
	for _, u := range []string{forbidden.srv.URL + "/x", "https://" + allowed.host() + ".evil.example/", "ftp://" + allowed.host() + "/", "not a url", "http://user:pw@" + allowed.host() + "/"} {
		if status, body := reg(carol, u); status != http.StatusBadRequest || errCode(t, body) != "push_not_allowed" {
			t.Fatalf("register %q: %d %s", u, status, body)
		}
	}
	// Even if a disallowed endpoint is in the store (the allow-list
	// changed), it is never contacted.
	if err := e.db.SetPushEndpoint(context.Background(), carol, forbidden.srv.URL+"/x"); err != nil {
		t.Fatal(err)
	}

	for range 3 {
		e.mustSend(from, msg(bob, 0, "wake up"))
		e.mustSend(from, msg(carol, 0, "wake up"))
	}
	waitFor(t, func() bool { return allowed.hits.Load() >= 1 })
	time.Sleep(100 * time.Millisecond)
	if n := allowed.hits.Load(); n != 1 {
		t.Fatalf("%d wakeups in one window, want 1", n)
	}
	// The next window brings one more.
	e.clock.Advance(2 * time.Minute)
	e.mustSend(from, msg(bob, 0, "again"))
	waitFor(t, func() bool { return allowed.hits.Load() == 2 })

	// An online device gets no wakeup.
	e.clock.Advance(2 * time.Minute)
	d := e.dial(bob)
	for range 4 {
		d.deliver()
	}
	d.drained()
	e.mustSend(from, msg(bob, 0, "online"))
	d.deliver()
	time.Sleep(100 * time.Millisecond)
	if n := allowed.hits.Load(); n != 2 {
		t.Fatalf("wakeups = %d after a send to an online device, want 2", n)
	}
	if n := forbidden.hits.Load(); n != 0 {
		t.Fatalf("a disallowed host was contacted %d times", n)
	}
	// DELETE removes the endpoint.
	if status, _ := e.do("DELETE", "/v1/relay/push", e.token(bob), nil); status != http.StatusNoContent {
		t.Fatalf("delete: %d", status)
	}
	if u, _ := e.db.PushEndpoint(context.Background(), bob); u != "" {
		t.Fatalf("endpoint after DELETE: %q", u)
	}
}

func FuzzParseBlobID(f *testing.F) {
	f.Add("AAAAAAAAAAAAAAAAAAAAAA")
	f.Add("AAAAAAAAAAAAAAAAAAAAAB")
	f.Add("../../etc/passwd")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := relayhttp.ParseBlobID(s)
		if err != nil {
			if id != (store.BlobID{}) {
				t.Fatal("non-zero ID with an error")
			}
			return
		}
		if relayhttp.BlobIDText(id) != s {
			t.Fatalf("%q parsed but prints as %q", s, relayhttp.BlobIDText(id))
		}
	})
}
