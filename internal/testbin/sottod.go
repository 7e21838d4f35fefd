package testbin

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/sotto-im/sotto/crypto"
)

// SottodPkg is sottod's import path, for Build.
const SottodPkg = "github.com/sotto-im/sotto/cmd/sottod"

// Sottod is a running sottod and what it printed when it started.
type Sottod struct {
	*Proc
	URL   string
	Trust crypto.TrustRoot // zero for a relay alone, which prints none
}

// StartSottod runs the sottod binary bin with args, env added to the
// environment, and its standard error to stderr (nil: discarded). It reads
// the URL and trust root sottod prints when it starts and then waits for
// /readyz to answer 200, each for up to limit.
func StartSottod(bin string, args, env []string, stderr io.Writer, limit time.Duration) (*Sottod, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = stderr
	s := &Sottod{}
	relay := len(args) > 0 && args[0] == "relay"
	p, err := Start(cmd, limit, func(line string) (bool, error) {
		if _, after, ok := strings.Cut(line, " at "); ok && strings.HasPrefix(line, "sottod ") {
			s.URL = after
		}
		if v, ok := strings.CutPrefix(line, "sender-certificate trust root: "); ok {
			var err error
			if s.Trust, err = crypto.ParseTrustRoot(v); err != nil {
				return false, err
			}
		}
		// The relay alone prints no trust root: its URL line is the last.
		return strings.HasPrefix(line, "trust root fingerprint") || (relay && s.URL != ""), nil
	})
	if err != nil {
		return nil, err
	}
	s.Proc = p
	if s.URL == "" {
		p.Kill()
		return nil, fmt.Errorf("testbin: sottod did not print its URL")
	}
	if err := WaitReady(s.URL, limit); err != nil {
		p.Kill()
		return nil, err
	}
	return s, nil
}

// FreeAddr returns a loopback address whose port was free a moment ago, so
// that a restarted server can come back on the same URL.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("testbin: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// WaitReady polls url's /readyz until it answers 200. It does not check
// the server's certificate, so that a test's self-signed one will do.
func WaitReady(url string, limit time.Duration) error {
	hc := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
	}
	defer hc.CloseIdleConnections()
	for start := time.Now(); time.Since(start) < limit; time.Sleep(20 * time.Millisecond) {
		resp, err := hc.Get(url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
	}
	return fmt.Errorf("testbin: %s not ready after %v", url, limit)
}

// LogWriter returns a writer, for a child's standard error, that passes
// each write to logf (a test's Logf) prefixed with name.
func LogWriter(logf func(format string, args ...any), name string) io.Writer {
	return logWriter{logf, name}
}

type logWriter struct {
	logf func(format string, args ...any)
	name string
}

func (w logWriter) Write(b []byte) (int, error) {
	w.logf("%s: %s", w.name, strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
