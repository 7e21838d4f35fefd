package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sotto-im/sotto/relay/store"
)

// Blobs describes how to run the blob suite against an implementation.
type Blobs struct {
	// Open returns a new, empty store with the given maximum blob size and
	// per-account quota.
	Open func(t *testing.T, maxSize, quota int64) store.Blobs
	// Reopen, if set, closes s and returns the same store opened again.
	Reopen func(t *testing.T, s store.Blobs) store.Blobs
}

// RunBlobs runs the blob suite.
func RunBlobs(t *testing.T, h Blobs) {
	t.Run("RoundTrip", h.testBlobRoundTrip)
	t.Run("Range", h.testBlobRange)
	t.Run("Limits", h.testBlobLimits)
	t.Run("Quota", h.testBlobQuota)
	t.Run("DeleteAndPurge", h.testBlobDelete)
	t.Run("Expiry", h.testBlobExpiry)
	t.Run("Reopen", h.testBlobReopen)
	t.Run("ConcurrentQuota", h.testBlobConcurrentQuota)
}

func randBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func create(t *testing.T, s store.Blobs, owner byte, data []byte, expires time.Time) store.BlobID {
	t.Helper()
	id, err := s.Create(ctx, Q(owner, 1).Account, int64(len(data)), expires, bytes.NewReader(data))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return id
}

func readBlob(t *testing.T, s store.Blobs, id store.BlobID) []byte {
	t.Helper()
	r, n, err := s.Open(ctx, id)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != n {
		t.Fatalf("read %d bytes, size %d", len(b), n)
	}
	return b
}

func wantGone(t *testing.T, s store.Blobs, id store.BlobID) {
	t.Helper()
	if r, _, err := s.Open(ctx, id); !errors.Is(err, store.ErrNotFound) {
		if r != nil {
			r.Close()
		}
		t.Fatalf("Open of a removed blob: %v, want ErrNotFound", err)
	}
}

func (h Blobs) testBlobRoundTrip(t *testing.T) {
	s := h.Open(t, 1<<20, 4<<20)
	data := randBytes(t, 300<<10)
	id := create(t, s, 1, data, future())
	if id == (store.BlobID{}) {
		t.Fatal("zero ID")
	}
	if !bytes.Equal(readBlob(t, s, id), data) {
		t.Fatal("content differs")
	}
	r, _, err := s.Open(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Seek(1000, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	part := make([]byte, 10)
	if _, err := io.ReadFull(r, part); err != nil || !bytes.Equal(part, data[1000:1010]) {
		t.Fatalf("seek+read: %v", err)
	}
	if end, err := r.Seek(0, io.SeekEnd); err != nil || end != int64(len(data)) {
		t.Fatalf("seek end = %d, %v", end, err)
	}
	// Same content, another ID; an empty blob is fine.
	if id2 := create(t, s, 1, data, future()); id2 == id {
		t.Fatal("IDs repeat")
	}
	if b := readBlob(t, s, create(t, s, 1, nil, future())); len(b) != 0 {
		t.Fatal("empty blob not empty")
	}
	wantGone(t, s, store.BlobID{1, 2, 3})
}

func (h Blobs) testBlobRange(t *testing.T) {
	s := h.Open(t, 1<<20, 4<<20)
	data := randBytes(t, 5000)
	id := create(t, s, 1, data, future())
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rd, _, err := s.Open(r.Context(), id)
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		defer rd.Close()
		http.ServeContent(w, r, "", time.Time{}, rd)
	}))
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	req.Header.Set("Range", "bytes=100-199")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(got, data[100:200]) {
		t.Fatalf("Range: status %d, %d bytes", resp.StatusCode, len(got))
	}
}

func (h Blobs) testBlobLimits(t *testing.T) {
	const max = 64 << 10
	s := h.Open(t, max, 1<<20)
	owner := Q(1, 1).Account
	data := randBytes(t, max+1)
	tests := []struct {
		name     string
		declared int64
		body     io.Reader
		want     error
	}{
		{"declared over max", max + 1, bytes.NewReader(data), store.ErrTooLarge},
		{"body longer than declared", 100, bytes.NewReader(data[:101]), store.ErrTooLarge},
		{"body shorter than declared", 100, bytes.NewReader(data[:99]), nil},
		{"negative", -1, bytes.NewReader(nil), nil},
		{"reader fails", 100, io.MultiReader(bytes.NewReader(data[:50]), errReader{}), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := s.Create(ctx, owner, tt.declared, future(), tt.body)
			if err == nil {
				t.Fatalf("accepted (%x)", id)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
		})
	}
	c, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Create(c, owner, 10, future(), bytes.NewReader(data[:10])); err == nil {
		t.Fatal("cancelled Create accepted")
	}
	// Nothing of the failures is kept or counted: the whole quota is free.
	for range 16 {
		create(t, s, 1, data[:max], future())
	}
	if _, err := s.Create(ctx, owner, 1, future(), bytes.NewReader(data[:1])); !errors.Is(err, store.ErrQuotaExceeded) {
		t.Fatalf("over quota: %v", err)
	}
	create(t, s, 2, data[:max], future()) // another account is not affected
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

func (h Blobs) testBlobQuota(t *testing.T) {
	s := h.Open(t, 100<<10, 200<<10)
	data := randBytes(t, 100<<10)
	a := create(t, s, 1, data, future())
	create(t, s, 1, data, future())
	if _, err := s.Create(ctx, Q(1, 1).Account, 1, future(), strings.NewReader("x")); !errors.Is(err, store.ErrQuotaExceeded) {
		t.Fatalf("over quota: %v", err)
	}
	create(t, s, 2, data, future()) // another account has its own quota
	if err := s.Delete(ctx, a); err != nil {
		t.Fatal(err)
	}
	create(t, s, 1, data, future()) // room again
}

func (h Blobs) testBlobDelete(t *testing.T) {
	s := h.Open(t, 1<<20, 4<<20)
	a1 := create(t, s, 1, []byte("a1"), future())
	a2 := create(t, s, 1, []byte("a2"), future())
	b := create(t, s, 2, []byte("b"), future())
	if err := s.Delete(ctx, a1); err != nil {
		t.Fatal(err)
	}
	wantGone(t, s, a1)
	if err := s.Delete(ctx, a1); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
	if err := s.PurgeAccount(ctx, Q(1, 1).Account); err != nil {
		t.Fatal(err)
	}
	wantGone(t, s, a2)
	if string(readBlob(t, s, b)) != "b" {
		t.Fatal("purge took another account's blob")
	}
}

func (h Blobs) testBlobExpiry(t *testing.T) {
	s := h.Open(t, 1<<20, 4<<20)
	now := time.Now()
	old := create(t, s, 1, []byte("old"), now.Add(-time.Minute))
	soon := create(t, s, 1, []byte("soon"), now.Add(time.Hour))
	later := create(t, s, 1, []byte("later"), now.Add(3*time.Hour))
	wantGone(t, s, old) // expired: not served even before the sweep
	if n, err := s.Sweep(ctx, now); err != nil || n != 1 {
		t.Fatalf("Sweep(now) = %d, %v", n, err)
	}
	if n, err := s.Sweep(ctx, now.Add(2*time.Hour)); err != nil || n != 1 {
		t.Fatalf("Sweep(+2h) = %d, %v", n, err)
	}
	wantGone(t, s, soon)
	if string(readBlob(t, s, later)) != "later" {
		t.Fatal("unexpired blob swept")
	}
}

func (h Blobs) testBlobReopen(t *testing.T) {
	if h.Reopen == nil {
		t.Skip("no Reopen")
	}
	s := h.Open(t, 100<<10, 200<<10)
	data := randBytes(t, 100<<10)
	a := create(t, s, 1, data, future())
	create(t, s, 1, data, future())
	s = h.Reopen(t, s)
	if !bytes.Equal(readBlob(t, s, a), data) {
		t.Fatal("blob changed across reopen")
	}
	if _, err := s.Create(ctx, Q(1, 1).Account, 1, future(), strings.NewReader("x")); !errors.Is(err, store.ErrQuotaExceeded) {
		t.Fatalf("quota forgotten across reopen: %v", err)
	}
}

func (h Blobs) testBlobConcurrentQuota(t *testing.T) {
	const size, quota = 10 << 10, 55 << 10
	s := h.Open(t, size, quota)
	data := randBytes(t, size)
	var (
		wg sync.WaitGroup
		ok atomic.Int32
	)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Create(ctx, Q(1, 1).Account, size, future(), bytes.NewReader(data))
			switch {
			case err == nil:
				ok.Add(1)
			case !errors.Is(err, store.ErrQuotaExceeded):
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != quota/size {
		t.Fatalf("%d uploads accepted, want %d", ok.Load(), quota/size)
	}
}
