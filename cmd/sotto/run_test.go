package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// runIn runs the CLI in-process with stdin that is not a terminal.
func runIn(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb strings.Builder
	code := run(context.Background(), args, env, strings.NewReader(""), &out, &errb)
	return out.String(), errb.String(), code
}

func TestHelp(t *testing.T) {
	out, _, code := runIn(t, nil, "--help")
	if code != exitOK {
		t.Fatalf("--help: exit %d", code)
	}
	for _, want := range []string{"Exit codes:", "Example:", "2  usage error", "3  network error",
		"4  rate limited", "5  untrusted identity change", "6  not found", "SOTTO_PASSPHRASE"} {
		if !strings.Contains(out, want) {
			t.Errorf("usage lacks %q", want)
		}
	}
	for name := range commands {
		out, errs, code := runIn(t, nil, name, "--help")
		if code != exitOK || !strings.Contains(out, "Usage:") || !strings.Contains(out, "Example:") {
			t.Errorf("%s --help: exit %d, stdout %q, stderr %q", name, code, out, errs)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	env := []string{"SOTTO_PASSPHRASE=x", "SOTTO_HOME=" + t.TempDir()}
	for _, args := range [][]string{
		{},
		{"bogus"},
		{"send"},
		{"send", "a", "b", "c"},
		{"send", "@bob", "hi", "--no-such-flag"},
		{"send", "@bob", "--react", "x"},
		{"send", "@bob", "--reply", "nothex", "hi"},
		{"history", "Bob", "--after", "yesterday-ish"},
		{"groups", "frobnicate"},
		{"groups", "create", "nomembers"},
		{"register"},
		{"daemon", "--socket", "a", "--http", "b"},
	} {
		_, errs, code := runIn(t, env, args...)
		if code != exitUsage {
			t.Errorf("%q: exit %d, want %d", args, code, exitUsage)
		}
		if !strings.HasPrefix(errs, "sotto: error: ") && !strings.Contains(errs, "\nsotto: error: ") {
			t.Errorf("%q: stderr %q lacks \"sotto: error: \"", args, errs)
		}
		if !strings.Contains(errs, "sotto: hint: ") {
			t.Errorf("%q: stderr %q lacks a hint", args, errs)
		}
	}
}

// Scripts never hang on a prompt: without SOTTO_PASSPHRASE and with stdin
// not a terminal sotto fails at once with a hint.
func TestNoPromptWithoutTerminal(t *testing.T) {
	_, errs, code := runIn(t, []string{"SOTTO_HOME=" + t.TempDir()}, "register", "--server", "http://127.0.0.1:1")
	if code != exitError || !strings.Contains(errs, "SOTTO_PASSPHRASE") || !strings.Contains(errs, "sotto: hint: ") {
		t.Errorf("exit %d, stderr %q", code, errs)
	}
}

func TestExitCodes(t *testing.T) {
	home := t.TempDir()
	env := []string{"SOTTO_PASSPHRASE=x", "SOTTO_HOME=" + home}
	// Nothing listens on port 1: a network error.
	if _, errs, code := runIn(t, env, "register", "--server", "http://127.0.0.1:1"); code != exitNetwork {
		t.Errorf("unreachable server: exit %d, want %d (%s)", code, exitNetwork, errs)
	}
	// No account yet.
	if _, errs, code := runIn(t, env, "whoami"); code != exitError || !strings.Contains(errs, "sotto register") {
		t.Errorf("whoami without an account: exit %d, stderr %q", code, errs)
	}
	// No account to export, and a backup that does not exist.
	if _, errs, code := runIn(t, env, "export", filepath.Join(home, "backup")); code != exitError || !strings.Contains(errs, "sotto: hint: ") {
		t.Errorf("export without an account: exit %d, stderr %q", code, errs)
	}
	if _, errs, code := runIn(t, env, "import", filepath.Join(home, "missing"), "--server", "http://127.0.0.1:1"); code != exitNotFound {
		t.Errorf("import of a missing file: exit %d, stderr %q", code, errs)
	}
}
