package pebblestore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Every decoder of bytes read from the store directory is fuzzed here: the
// key file parser, the sealed value opener, and the decoders of the opened
// values. None may panic; each fails with ErrCorrupt.

func FuzzParseKeyFile(f *testing.F) {
	f.Add([]byte(keyFileMagic + "age-encryption.org/v1\n-> scrypt c2FsdA 18\n"))
	f.Add([]byte(keyFileMagic))
	f.Add([]byte{})
	f.Add([]byte("sotto-client-store/v2\nx"))
	f.Fuzz(func(t *testing.T, b []byte) {
		wrapped, err := parseKeyFile(b)
		if err != nil {
			if wrapped != nil || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("parseKeyFile = %q, %v", wrapped, err)
			}
			return
		}
		// Parse then marshal reproduces the file.
		if !bytes.Equal(marshalKeyFile(wrapped), b) {
			t.Fatalf("marshal(parse(%q)) differs", b)
		}
	})
}

// FuzzOpenValue feeds arbitrary (key, value) pairs to the value opener of
// a real store. Only the exact pairs the store sealed may open.
func FuzzOpenValue(f *testing.F) {
	d, err := Create("s", testPassphrase, testOptions(vfs.NewMem()))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { d.Close() })
	sealed := map[string]string{}
	for _, kv := range [][2]string{{"\x01", "identity"}, {"\x05key", ""}, {"\x07k", strings.Repeat("m", 100)}} {
		v := d.seal([]byte(kv[0]), []byte(kv[1]))
		sealed[kv[0]+"\x00"+string(v)] = kv[1]
		f.Add([]byte(kv[0]), v)
	}
	f.Fuzz(func(t *testing.T, key, value []byte) {
		pt, err := d.open(key, value)
		want, ok := sealed[string(key)+"\x00"+string(value)]
		switch {
		case ok && (err != nil || string(pt) != want):
			t.Fatalf("open of a sealed value = %q, %v", pt, err)
		case !ok && err == nil:
			t.Fatalf("open accepted a value the store never sealed under this key: %q", pt)
		case !ok && !errors.Is(err, ErrCorrupt):
			t.Fatalf("open error %v is not ErrCorrupt", err)
		}
	})
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(append(binary.AppendUvarint(nil, 3), "keyrecord"...))
	f.Add([]byte{0x80})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add([]byte{0x05, 'a'})
	f.Fuzz(func(t *testing.T, v []byte) {
		key, rec, err := decodeRecord(v)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decodeRecord error %v is not ErrCorrupt", err)
			}
			return
		}
		if len(key)+len(rec) > len(v) || cap(key) != len(key) {
			t.Fatalf("decodeRecord(%q) = %q, %q", v, key, rec)
		}
		if !bytes.HasSuffix(v, append(bytes.Clone(key), rec...)) {
			t.Fatalf("decodeRecord(%q) = %q, %q: not the tail of the value", v, key, rec)
		}
	})
}

func FuzzDecodeMessage(f *testing.F) {
	key := make([]byte, 1+hashSize+timeSize+hashSize)
	key[0] = tMsgIndex
	f.Add(key, make([]byte, msgValueHead+5))
	f.Add(key[:10], []byte{})
	f.Add(key, make([]byte, msgValueHead-1))
	f.Fuzz(func(t *testing.T, key, v []byte) {
		m, err := decodeMessage(key, v)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decodeMessage error %v is not ErrCorrupt", err)
			}
			return
		}
		if !bytes.Equal(m.Conversation[:], v[:convSize]) || !bytes.Equal(m.ID[:], v[convSize:msgValueHead]) || !bytes.Equal(m.Data, v[msgValueHead:]) {
			t.Fatalf("decodeMessage(%x) = %+v", v, m)
		}
		if encodeTime(m.Time) != [8]byte(key[1+hashSize:]) {
			t.Fatalf("decodeMessage time %v does not re-encode to the key's", m.Time)
		}
	})
}

// TestHostileKeyFiles replaces the key file of a store by hostile contents:
// Open must fail with ErrCorrupt (or ErrNoStore), never panic, never open.
func TestHostileKeyFiles(t *testing.T) {
	fs := vfs.NewMem()
	d, err := Create("s", testPassphrase, testOptions(fs))
	if err != nil {
		t.Fatal(err)
	}
	good, err := readKeyFile(fs, "s")
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	cases := map[string][]byte{
		// Bad framing.
		"empty":               {},
		"magic only":          []byte(keyFileMagic),
		"other version":       []byte(strings.Replace(string(marshalKeyFile(good)), "/v1", "/v2", 1)),
		"no magic":            good,
		"oversized":           append([]byte(keyFileMagic), make([]byte, maxKeyFileSize)...),
		"magic without break": append([]byte(strings.TrimSuffix(keyFileMagic, "\n")), good...),
		// Bad age payloads.
		"garbage":          append([]byte(keyFileMagic), "not an age file"...),
		"truncated header": marshalKeyFile(good[:len(good)/3]),
		"truncated body":   marshalKeyFile(good[:len(good)-1]),
		"extended body":    marshalKeyFile(append(bytes.Clone(good), 0)),
		"flipped last":     marshalKeyFile(append(bytes.Clone(good[:len(good)-1]), good[len(good)-1]^1)),
		"work factor 2^30": marshalKeyFile(bytes.Replace(good, []byte(" 10\n"), []byte(" 30\n"), 1)),
	}
	for name, file := range cases {
		f, err := fs.Create("s/"+keyFileName, vfs.WriteCategoryUnspecified)
		if err != nil {
			t.Fatal(err)
		}
		// A copy: in race and invariants builds Pebble's in-memory FS
		// inverts the caller's buffer after Write to catch reuse.
		f.Write(bytes.Clone(file))
		f.Close()
		d, err := Open("s", testPassphrase, testOptions(fs))
		if err == nil {
			d.Close()
			t.Errorf("%s: Open succeeded", name)
			continue
		}
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrWrongPassphrase) {
			t.Errorf("%s: Open = %v, want ErrCorrupt", name, err)
		}
		if strings.Contains(err.Error(), string(testPassphrase)) {
			t.Errorf("%s: error quotes the passphrase", name)
		}
	}
	// The good key file still opens the store: hostile attempts changed
	// nothing in the database.
	if err := writeKeyFile(fs, "s", good); err != nil {
		t.Fatal(err)
	}
	d, err = Open("s", testPassphrase, testOptions(fs))
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
}

// TestHostileValues checks the opener against every truncation and
// extension of a sealed value and against bad versions.
func TestHostileValues(t *testing.T) {
	d, err := Create("s", testPassphrase, testOptions(vfs.NewMem()))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	key := []byte{tIdentity}
	v := d.seal(key, []byte("identity record"))
	for n := range len(v) {
		if _, err := d.open(key, v[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncation to %d bytes: %v", n, err)
		}
	}
	for _, ext := range [][]byte{{0}, {1, 2, 3}, v} {
		if _, err := d.open(key, append(bytes.Clone(v), ext...)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("extension by %d bytes: %v", len(ext), err)
		}
	}
	for _, ver := range []byte{0, 2, 0xff} {
		w := bytes.Clone(v)
		w[0] = ver
		if _, err := d.open(key, w); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("version %d: %v", ver, err)
		}
	}
	if _, err := d.open([]byte{tIdentity, 0}, v); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("value under an extended key: %v", err)
	}
	if pt, err := d.open(key, v); err != nil || string(pt) != "identity record" {
		t.Fatalf("open of the intact value = %q, %v", pt, err)
	}
}
