package keyserver

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps guards the dependency direction: the key server depends on
// crypto, internal packages and its store, never on the relay or the
// client, and no non-test code links the testing package.
func TestDeps(t *testing.T) {
	for _, pkg := range []string{".", "./store"} {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", pkg).Output()
		if err != nil {
			t.Skipf("go list unavailable: %v", err)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, bad := range []string{
				"github.com/sotto-im/sotto/relay",
				"github.com/sotto-im/sotto/client",
				"github.com/sotto-im/sotto/cmd",
			} {
				if dep == bad || strings.HasPrefix(dep, bad+"/") {
					t.Errorf("%s imports %s", pkg, dep)
				}
			}
			if dep == "testing" {
				t.Errorf("%s links the testing package", pkg)
			}
		}
	}
}
