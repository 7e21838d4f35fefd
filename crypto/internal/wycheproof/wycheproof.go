// Package wycheproof loads the vendored Project Wycheproof test vectors in
// crypto/testdata/wycheproof and decides, for each case, whether an
// implementation must accept it. Its tests run the vectors against the
// primitives Sotto uses: X25519 (crypto/ecdh here; the crypto package runs
// the same file against its CIRCL-backed x25519), Ed25519 (crypto/ed25519),
// AES-GCM (crypto/cipher), HKDF-SHA256 (crypto/hkdf) and
// XChaCha20-Poly1305 (golang.org/x/crypto/chacha20poly1305).
//
// The provenance of the vectors (upstream repository, commit and the cases
// kept) is in crypto/testdata/wycheproof/README.md.
package wycheproof

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Dir is the directory of the vendored files, relative to this package.
const Dir = "../../testdata/wycheproof"

// TB is the part of testing.TB the helpers need; it keeps this non-test
// file free of the testing package.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// File is the common top level of a Wycheproof file; TestGroups is decoded
// by the caller into its own schema.
type File struct {
	Algorithm     string          `json:"algorithm"`
	NumberOfTests int             `json:"numberOfTests"`
	Notes         map[string]any  `json:"notes"`
	TestGroups    json.RawMessage `json:"testGroups"`
}

// Case holds the fields every test case has.
type Case struct {
	TcID    int      `json:"tcId"`
	Comment string   `json:"comment"`
	Flags   []string `json:"flags"`
	Result  string   `json:"result"`
}

// Load reads the named file and decodes its test groups into groups. It
// fails the test if the file is missing or malformed.
func Load(t TB, name string, groups any) *File {
	t.Helper()
	return loadFrom(t, Dir, name, groups)
}

// loadFrom is Load from the vendored directory at dir (X25519Cases serves
// tests of other packages, whose working directory differs).
func loadFrom(t TB, dir, name string, groups any) *File {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatalf("wycheproof: %v", err)
	}
	var f File
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("wycheproof: %s: %v", name, err)
	}
	if err := json.Unmarshal(f.TestGroups, groups); err != nil {
		t.Fatalf("wycheproof: %s: test groups: %v", name, err)
	}
	return &f
}

// CheckCount fails the test unless the file declares exactly n tests, so
// that a truncated or partly edited file cannot pass silently.
func CheckCount(t TB, f *File, n int) {
	t.Helper()
	if n == 0 || f.NumberOfTests != n {
		t.Fatalf("wycheproof: %s: %d cases found, numberOfTests says %d", f.Algorithm, n, f.NumberOfTests)
	}
}

// ShouldPass reports whether an implementation must accept a case:
// "valid" cases must pass and "invalid" ones must fail. An "acceptable"
// case passes or fails depending on its flags: every flag must be listed
// in acceptable, whose value says whether Sotto's primitive accepts cases
// with that flag; a flag not listed fails the test, so that a new kind of
// acceptable case is looked at by a person before it is relied on. If the
// listed flags disagree, the case must fail.
func ShouldPass(t TB, c Case, acceptable map[string]bool) bool {
	t.Helper()
	switch c.Result {
	case "valid":
		return true
	case "invalid":
		return false
	case "acceptable":
		pass := true
		for _, f := range c.Flags {
			ok, known := acceptable[f]
			if !known {
				t.Fatalf("wycheproof: tcId %d: unknown acceptable flag %q", c.TcID, f)
			}
			pass = pass && ok
		}
		return pass
	default:
		t.Fatalf("wycheproof: tcId %d: unknown result %q", c.TcID, c.Result)
		return false
	}
}

// Hex decodes a hex field, failing the test on bad input.
func Hex(t TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("wycheproof: bad hex %q: %v", s, err)
	}
	return b
}

// Name formats a subtest name for a case.
func Name(c Case) string { return fmt.Sprintf("tcId=%d", c.TcID) }

// X25519Case is one case of the X25519 vectors with the verdict Sotto
// requires of it.
type X25519Case struct {
	Case
	Private, Public, Shared []byte
	// Accept says whether the shared secret must be computed: Sotto
	// rejects an all-zero shared secret (PROTOCOL.md §2.2), and accepts
	// points on the twist and non-canonical encodings as RFC 7748 says.
	Accept bool
}

// X25519Cases loads x25519_test.json from the vendored directory dir and
// returns its cases. The crypto/ecdh test of this package and the crypto
// package's own X25519 run the same cases.
func X25519Cases(t TB, dir string) []X25519Case {
	t.Helper()
	var groups []struct {
		Tests []struct {
			Case
			Public  string `json:"public"`
			Private string `json:"private"`
			Shared  string `json:"shared"`
		} `json:"tests"`
	}
	f := loadFrom(t, dir, "x25519_test.json", &groups)
	acceptable := map[string]bool{
		"Twist":              true,
		"SpecialPublicKey":   true,
		"NonCanonicalPublic": true,
		"SmallPublicKey":     false,
		"LowOrderPublic":     false,
		"ZeroSharedSecret":   false,
	}
	var cases []X25519Case
	for _, g := range groups {
		for _, tc := range g.Tests {
			cases = append(cases, X25519Case{Case: tc.Case, Private: Hex(t, tc.Private), Public: Hex(t, tc.Public),
				Shared: Hex(t, tc.Shared), Accept: ShouldPass(t, tc.Case, acceptable)})
		}
	}
	CheckCount(t, f, len(cases))
	return cases
}
