package blobstore

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/relay/store"
	"github.com/sotto-im/sotto/relay/store/storetest"
)

func TestBlobs(t *testing.T) {
	dirs := map[store.Blobs]string{}
	opts := map[store.Blobs]Options{}
	storetest.RunBlobs(t, storetest.Blobs{
		Open: func(t *testing.T, maxSize, quota int64) store.Blobs {
			dir := t.TempDir()
			o := Options{MaxSize: maxSize, Quota: quota}
			s, err := Open(dir, o)
			if err != nil {
				t.Fatal(err)
			}
			dirs[s], opts[s] = dir, o
			return s
		},
		Reopen: func(t *testing.T, s store.Blobs) store.Blobs {
			if err := s.(*Store).Close(); err != nil {
				t.Fatal(err)
			}
			n, err := Open(dirs[s], opts[s])
			if err != nil {
				t.Fatal(err)
			}
			return n
		},
	})
}

// files lists the regular files under dir.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			out = append(out, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestFailedUploadsLeaveNothing(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{MaxSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var owner crypto.AccountID
	for _, body := range []string{"short", strings.Repeat("x", 101)} {
		if _, err := s.Create(context.Background(), owner, 100, time.Time{}, strings.NewReader(body)); err == nil {
			t.Fatal("bad upload accepted")
		}
	}
	if f := files(t, dir); len(f) != 0 {
		t.Fatalf("failed uploads left %v", f)
	}
	if s.Usage(owner) != 0 || s.Len() != 0 {
		t.Fatalf("usage %d, %d blobs", s.Usage(owner), s.Len())
	}
}

func TestOpenCleansUpAndIgnoresForeignFiles(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var owner crypto.AccountID
	id, err := s.Create(context.Background(), owner, 3, time.Time{}, bytes.NewReader([]byte("abc")))
	if err != nil {
		t.Fatal(err)
	}
	// An upload interrupted by a crash, and files that are not blobs.
	if err := os.WriteFile(filepath.Join(dir, "tmp", "upload-123"), []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "README"), []byte("hi"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "tmp", "upload-123")); !os.IsNotExist(err) {
		t.Fatal("interrupted upload not removed")
	}
	if s.Len() != 1 || s.Usage(owner) != 3 {
		t.Fatalf("%d blobs, usage %d", s.Len(), s.Usage(owner))
	}
	r, n, err := s.Open(context.Background(), id)
	if err != nil || n != 3 {
		t.Fatal(n, err)
	}
	r.Close()
	// The default retention applied to a zero expiry.
	s.mu.Lock()
	exp := s.mu.blobs[id].expires
	s.mu.Unlock()
	if d := time.Until(exp); d < DefaultRetention-time.Minute || d > DefaultRetention {
		t.Fatalf("expiry in %v", d)
	}
}

func TestFilesReadableOnlyByOwner(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(context.Background(), crypto.AccountID{}, 1, time.Time{}, strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	for _, f := range files(t, dir) {
		st, _ := os.Stat(f)
		if st.Mode().Perm()&0o077 != 0 {
			t.Fatalf("%s has mode %v", f, st.Mode())
		}
	}
}

// FuzzParseHeader: a corrupt blob file gives an error, never a panic, and a
// header that parses is one this package writes.
func FuzzParseHeader(f *testing.F) {
	f.Add(meta{owner: crypto.AccountID{1}, size: 10, expires: time.Unix(100, 0)}.header())
	f.Add(make([]byte, headerLen))
	f.Fuzz(func(t *testing.T, h []byte) {
		m, err := parseHeader(h)
		if err != nil {
			return
		}
		if m.size < 0 {
			t.Fatalf("negative size %d", m.size)
		}
		if back := m.header(); !bytes.Equal(back, h) {
			t.Fatalf("header re-encodes to %x, was %x", back, h)
		}
	})
}
