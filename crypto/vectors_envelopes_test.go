package crypto

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// envVectorCases reads a vector file as another implementation would: a
// list of cases, each a map from name to value. It fails the test if the
// file has no case, so that seed corpora can never be silently empty.
func envVectorCases(t testing.TB, name string) []map[string]string {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "vectors", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cases []map[string]string
	cur := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "#"):
		case line == "":
			if len(cur) > 0 {
				cases = append(cases, cur)
				cur = map[string]string{}
			}
		default:
			k, v, ok := strings.Cut(line, ": ")
			if !ok {
				t.Fatalf("%s: bad line %q", name, line)
			}
			cur[k] = v
		}
	}
	if len(cur) > 0 {
		cases = append(cases, cur)
	}
	if len(cases) == 0 {
		t.Fatalf("%s: no cases", name)
	}
	return cases
}

// envVectorHex returns the hex values stored under key in a vector file.
func envVectorHex(t testing.TB, name, key string) [][]byte {
	t.Helper()
	var out [][]byte
	for _, c := range envVectorCases(t, name) {
		if v, ok := c[key]; ok {
			b, err := hex.DecodeString(v)
			if err != nil {
				t.Fatalf("%s: %s: %v", name, key, err)
			}
			out = append(out, b)
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s: no %q values", name, key)
	}
	return out
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestConsumeEnvelopeVectors opens the committed sealed-sender and
// multi-recipient vectors from their files alone, as an independent
// implementation would, and checks each expectation.
func TestConsumeEnvelopeVectors(t *testing.T) {
	var recipient *IdentityPrivateKey
	var roots []TrustRoot
	var now time.Time
	var body []byte
	setup := func(c map[string]string) {
		if v, ok := c["trust_root"]; ok {
			r, err := NewTrustRoot(mustHex(t, v))
			if err != nil {
				t.Fatal(err)
			}
			roots = []TrustRoot{r}
			n, _ := strconv.ParseInt(c["now"], 10, 64)
			now = time.Unix(n, 0)
		}
		if v, ok := c["recipient_seed"]; ok {
			k, err := NewIdentityPrivateKey(mustHex(t, v))
			if err != nil {
				t.Fatal(err)
			}
			recipient = k
		}
	}
	content := map[string][]byte{}
	for _, c := range envVectorCases(t, "sealed.txt") {
		setup(c)
		if v, ok := c["content"]; ok {
			content["sealed"] = mustHex(t, v)
		}
		_, got, err := Open(recipient, mustHex(t, c["envelope"]), roots, now)
		switch c["expect"] {
		case "success":
			if err != nil || !bytes.Equal(got, content["sealed"]) {
				t.Fatalf("sealed: %v", err)
			}
		case "decrypt failure":
			if !errors.Is(err, ErrDecrypt) {
				t.Fatalf("sealed: %v", err)
			}
		default:
			t.Fatalf("sealed: unknown expectation %q", c["expect"])
		}
	}
	opened := 0
	for _, c := range envVectorCases(t, "multirecipient.txt") {
		setup(c)
		if v, ok := c["body"]; ok {
			body, content["multi"] = mustHex(t, v), mustHex(t, c["content"])
			continue
		}
		if _, got, err := OpenMulti(recipient, mustHex(t, c["header"]), body, roots, now); err != nil || !bytes.Equal(got, content["multi"]) {
			t.Fatalf("multi-recipient %s: %v", c["recipient"], err)
		}
		opened++
	}
	if opened == 0 {
		t.Fatal("no multi-recipient header in the vectors")
	}
	for _, c := range envVectorCases(t, "padding.txt") {
		got, err := Unpad(mustHex(t, c["padded"]))
		if c["expect"] == "success" {
			if err != nil || !bytes.Equal(got, mustHex(t, c["plaintext"])) {
				t.Fatalf("padding: %v", err)
			}
		} else if !errors.Is(err, ErrBadPadding) {
			t.Fatalf("padding: %v", err)
		}
	}
}

// TestConsumeGroupAndStoreVectors replays the sender-key, safety-number,
// attachment and store-key vectors from their files alone.
func TestConsumeGroupAndStoreVectors(t *testing.T) {
	var r *GroupReceiver
	for _, c := range envVectorCases(t, "senderkey.txt") {
		switch {
		case c["distribution"] != "":
			d := mustHex(t, c["distribution"])
			var g GroupID
			copy(g[:], d[1:17])
			r = NewGroupReceiver(g)
			if err := r.Process(d); err != nil {
				t.Fatal(err)
			}
		case c["message"] != "":
			pt, err := r.Decrypt(mustHex(t, c["message"]))
			switch c["expect"] {
			case "success":
				if err != nil || !bytes.Equal(pt, mustHex(t, c["plaintext"])) {
					t.Fatalf("group message %s: %v", c["iteration"], err)
				}
			case "replay":
				if !errors.Is(err, ErrDuplicateMessage) {
					t.Fatalf("group replay: %v", err)
				}
			}
		case c["receiver_state"] != "":
			if got, _ := r.MarshalBinary(); !bytes.Equal(got, mustHex(t, c["receiver_state"])) {
				t.Fatal("receiver state differs")
			}
		}
	}
	for _, c := range envVectorCases(t, "safety.txt") {
		a, err := NewAccountKey(mustHex(t, c["account_key_a"]))
		if err != nil {
			t.Fatal(err)
		}
		b, err := NewAccountKey(mustHex(t, c["account_key_b"]))
		if err != nil {
			t.Fatal(err)
		}
		sn := NewSafetyNumber(a, b)
		if sn.Digits() != c["digits"] || !bytes.Equal(sn.QRPayload(), mustHex(t, c["qr_payload_a"])) || sn.VerifyScanned(mustHex(t, c["qr_payload_b"])) != nil {
			t.Fatal("safety number vector differs")
		}
	}
	for _, c := range envVectorCases(t, "attachment.txt") {
		key, err := ParseAttachmentKey([]byte(c["key"]))
		if err != nil {
			t.Fatal(err)
		}
		var digest [AttachmentDigestSize]byte
		copy(digest[:], mustHex(t, c["digest"]))
		var out bytes.Buffer
		if _, err := DecryptAttachment(&out, bytes.NewReader(mustHex(t, c["ciphertext"])), key, digest); err != nil || !bytes.Equal(out.Bytes(), mustHex(t, c["plaintext"])) {
			t.Fatalf("attachment: %v", err)
		}
	}
	var key *StoreKey
	for _, c := range envVectorCases(t, "storekey.txt") {
		switch {
		case c["wrapped"] != "":
			k, err := UnwrapStoreKey(mustHex(t, c["wrapped"]), c["passphrase"])
			if c["expect"] == "wrong passphrase" {
				if !errors.Is(err, ErrWrongPassphrase) {
					t.Fatalf("store key: %v", err)
				}
				continue
			}
			if err != nil || !bytes.Equal(k.key[:], mustHex(t, c["store_key"])) {
				t.Fatalf("store key: %v", err)
			}
			key = k
		case c["sealed"] != "":
			pt, err := key.Open(mustHex(t, c["ad"]), mustHex(t, c["sealed"]))
			if err != nil || !bytes.Equal(pt, mustHex(t, c["plaintext"])) {
				t.Fatalf("store value: %v", err)
			}
		}
	}
}
