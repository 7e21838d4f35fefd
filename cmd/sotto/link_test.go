package main

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sotto-im/sotto/internal/testbin"
)

// TestLinkedDeviceNumber links a second device to Alice's account with
// "link" and "link --accept", sends from it, and checks that the JSON
// output names the sending device: 2 in Bob's receive, and 2 in the
// history of Alice's first device, which learns of the message as her own.
func TestLinkedDeviceNumber(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binaries")
	}
	t.Parallel() // beside TestCLI: both mostly wait on the network
	url := startServer(t)
	alice, bob, alice2 := newHome(t, "alice"), newHome(t, "bob"), newHome(t, "alice2")
	parallel(
		func() { alice.ok("register", "--server", url, "--handle", "alice") },
		func() { bob.ok("register", "--server", url, "--handle", "bob") },
	)
	parallel(
		func() { alice.ok("contacts", "add", "@bob", "--name", "Bob") },
		func() { bob.ok("contacts", "add", "@alice") },
	)

	// The new device shows its code and waits; the first one accepts it.
	cmd := exec.Command(sottoBin, "--json", "link", "--server", url)
	cmd.Env = alice2.env()
	var errb bytes.Buffer
	cmd.Stderr = &errb
	var code string
	link, err := testbin.Start(cmd, 90*time.Second, func(line string) (bool, error) {
		var m map[string]string
		if json.Unmarshal([]byte(line), &m) == nil && m["link_code"] != "" {
			code = m["link_code"]
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("link: %v; stderr %s", err, errb.String())
	}
	t.Cleanup(link.Kill)
	if out := alice.ok("--json", "link", "--accept", code); !strings.Contains(out, `"device":2`) {
		t.Fatalf("link --accept: %s", out)
	}
	if err := link.Wait(90 * time.Second); err != nil {
		t.Fatalf("link on the new device: %v; stderr %s", err, errb.String())
	}

	alice2.ok("send", "@bob", "from the second device")
	m := findMessage(t, jsonLines(t, bob.ok("--json", "receive", "--timeout", "3s")), "from the second device")
	wantDevice(t, "bob's receive", m, 2)
	alice.ok("receive", "--timeout", "3s")
	m = findMessage(t, jsonLines(t, alice.ok("--json", "history", "Bob")), "from the second device")
	wantDevice(t, "history on alice's first device", m, 2)
}
