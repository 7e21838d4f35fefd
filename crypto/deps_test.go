package crypto

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps checks the import graph of the crypto package (not of its
// tests): it imports nothing of the project, no networking, process,
// database or storage package, and not the testing package. DESIGN.md
// requires crypto to perform no I/O; this is the test that fails if a
// dependency sneaks in.
func TestDeps(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not found:", err)
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	const self = "github.com/sotto-im/sotto/crypto"
	forbidden := []string{
		"net", "net/", "crypto/tls", "crypto/x509", "os/exec", "os/signal", "plugin",
		"database/", "github.com/cockroachdb/", "testing",
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("implausible dependency list: %q", deps)
	}
	for _, dep := range deps {
		if dep == self {
			continue
		}
		if strings.HasPrefix(dep, "github.com/sotto-im/sotto") {
			t.Errorf("crypto imports project package %s", dep)
		}
		for _, f := range forbidden {
			if dep == f || (strings.HasSuffix(f, "/") && strings.HasPrefix(dep, f)) || strings.HasPrefix(dep, f+"/") {
				t.Errorf("crypto imports forbidden package %s", dep)
			}
		}
	}
}
