package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBadConfigurationExitsTwo(t *testing.T) {
	dir := t.TempDir()
	readOnly := filepath.Join(dir, "ro")
	if err := os.Mkdir(readOnly, 0o500); err != nil {
		t.Fatal(err)
	}
	// A data directory that cannot be created or written even by root:
	// its parent is a regular file.
	notADir := filepath.Join(dir, "file")
	if err := os.WriteFile(notADir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"unknown flag", []string{"--no-such-flag"}, nil, "flag provided but not defined"},
		{"unreadable TLS file", []string{"--tls-cert", filepath.Join(dir, "missing.pem"), "--tls-key", filepath.Join(dir, "missing.key")}, nil, "cannot read TLS file"},
		{"TLS cert without key", []string{"--tls-cert", "x.pem"}, nil, "must be given together"},
		{"invalid address", []string{"--listen", "not an address"}, nil, "--listen"},
		{"invalid admin address", []string{"--admin-listen", "nowhere"}, nil, "--admin-listen"},
		{"bad log format", []string{"--log-format", "xml"}, nil, "--log-format"},
		{"bad env duration", nil, map[string]string{"SOTTO_RETENTION": "forever"}, "SOTTO_RETENTION"},
		{"retention out of range", []string{"--retention", "1s"}, nil, "--retention"},
		{"extra argument", []string{"serve"}, nil, "unexpected argument"},
		{"relay without key server", []string{"relay"}, nil, "--keyserver-url"},
		{"keyserver without relay", []string{"keyserver"}, nil, "--relay-url"},
		{"plain HTTP on a public address", []string{"--listen", ":7340"}, nil, "refusing plain HTTP"},
		{"data directory under a file", []string{"--data", filepath.Join(notADir, "data")}, nil, "data directory"},
		{"bad trusted proxy", []string{"--trusted-proxies", "10.0.0.0/99"}, nil, "CIDR"},
	}
	if os.Geteuid() != 0 { // root writes anywhere
		cases = append(cases, struct {
			name string
			args []string
			env  map[string]string
			want string
		}{"data directory not writable", []string{"--data", readOnly}, nil, "not writable"})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"SOTTO_DATA": filepath.Join(dir, "data")}
			for k, v := range tc.env {
				env[k] = v
			}
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tc.args, func(k string) string { return env[k] }, &stdout, &stderr)
			if code != exitConfig {
				t.Fatalf("exit code %d, want %d; stderr: %s", code, exitConfig, stderr.String())
			}
			first, _, _ := strings.Cut(stderr.String(), "\n")
			if !strings.HasPrefix(first, "sottod: error: ") || !strings.Contains(first, tc.want) {
				t.Fatalf("first line %q does not explain %q", first, tc.want)
			}
		})
	}
}

func TestHelpListsEverySetting(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"--help"}, func(string) string { return "" }, &stdout, &stderr); code != exitOK {
		t.Fatalf("exit code %d", code)
	}
	for _, want := range []string{"--listen", "SOTTO_LISTEN", "--data", "SOTTO_DATA", "--tls-cert", "--admin-listen", "--retention", "--push-allow-hosts", "Example:"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("--help does not mention %s", want)
		}
	}
}

func TestEnvironmentAndFlags(t *testing.T) {
	env := map[string]string{"SOTTO_LISTEN": "127.0.0.1:9999", "SOTTO_LOG_FORMAT": "json", "SOTTO_DATA": t.TempDir()}
	cfg, err := parseConfig("all", []string{"--log-format", "text"}, func(k string) string { return env[k] }, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:9999" || cfg.LogFormat != "text" {
		t.Fatalf("environment or flag precedence wrong: %+v", cfg)
	}
	if cfg.PublicURL != "http://127.0.0.1:9999" {
		t.Fatalf("public URL %q", cfg.PublicURL)
	}
}
