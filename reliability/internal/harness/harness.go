// Package harness builds the real sottod binary, runs it as a process on a
// data directory and a port that survive restarts, and kills it; and drives
// it with the client library. It is shared by the reliability test packages
// and the soak command, and is for tests only.
package harness

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sotto-im/sotto/crypto"
)

// TB is the part of testing.TB the harness needs (the soak command passes
// its own).
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	Cleanup(func())
}

var (
	buildMu  sync.Mutex
	binPaths = map[string]string{}
)

// Binary builds cmd/sottod (once per process and set of build flags) into a
// temporary directory and returns its path.
func Binary(flags ...string) (string, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	key := strings.Join(flags, " ")
	if p, ok := binPaths[key]; ok {
		return p, nil
	}
	dir, err := os.MkdirTemp("", "sotto-reliability-bin-")
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, "sottod")
	args := append([]string{"build", "-o", p}, flags...)
	args = append(args, "github.com/sotto-im/sotto/cmd/sottod")
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("harness: go build sottod: %v\n%s", err, out)
	}
	binPaths[key] = p
	return p, nil
}

// FreeAddr returns a loopback address whose port was free a moment ago.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// Proc is a sottod process.
type Proc struct {
	Bin   string
	Mode  string // "" (both), "keyserver" or "relay"
	Addr  string
	Data  string
	Args  []string // extra arguments
	Env   []string // extra environment
	Log   io.Writer
	URL   string
	Trust crypto.TrustRoot

	cmd  *exec.Cmd
	done chan error
}

// Start runs the binary on p.Addr and p.Data and waits until /readyz
// answers 200.
func (p *Proc) Start() error {
	var args []string
	if p.Mode != "" {
		args = append(args, p.Mode)
	}
	args = append(append(args, "--listen", p.Addr, "--data", p.Data), p.Args...)
	cmd := exec.Command(p.Bin, args...)
	cmd.Env = append(os.Environ(), p.Env...)
	if p.Log != nil {
		cmd.Stderr = p.Log
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("harness: start sottod: %w", err)
	}
	p.cmd, p.done = cmd, make(chan error, 1)
	lines := bufio.NewScanner(out)
	timer := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
	for lines.Scan() {
		line := lines.Text()
		if _, after, ok := strings.Cut(line, " at "); ok && strings.HasPrefix(line, "sottod ") {
			p.URL = after
		}
		if v, ok := strings.CutPrefix(line, "sender-certificate trust root: "); ok {
			if p.Trust, err = crypto.ParseTrustRoot(v); err != nil {
				return err
			}
		}
		// The relay alone prints no trust root: its URL line is the last.
		if strings.HasPrefix(line, "trust root fingerprint") || (p.Mode == "relay" && p.URL != "") {
			break
		}
	}
	timer.Stop()
	go io.Copy(io.Discard, out)
	go func() { p.done <- cmd.Wait() }()
	if p.URL == "" {
		p.Kill()
		return fmt.Errorf("harness: sottod did not print its URL")
	}
	return p.WaitReady(60 * time.Second)
}

// WaitReady polls /readyz.
func (p *Proc) WaitReady(limit time.Duration) error {
	for start := time.Now(); time.Since(start) < limit; time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get(p.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
	}
	return fmt.Errorf("harness: sottod not ready after %v", limit)
}

// Kill sends SIGKILL and waits for the process to end.
func (p *Proc) Kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.cmd = nil
}

// Stop sends SIGTERM and waits up to limit for exit status 0.
func (p *Proc) Stop(limit time.Duration) error {
	if p.cmd == nil {
		return nil
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.cmd = nil
		return err
	case <-time.After(limit):
		p.Kill()
		return fmt.Errorf("harness: sottod did not stop within %v", limit)
	}
}

// Pid is the process ID, or 0.
func (p *Proc) Pid() int {
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Running reports whether the process has not exited.
func (p *Proc) Running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case err := <-p.done:
		p.done <- err
		return false
	default:
		return true
	}
}

// StartT starts a sottod for a test on a fresh data directory and port and
// kills it at cleanup.
func StartT(t TB, dataDir string, args ...string) *Proc {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatalf("%v", err)
	}
	addr, err := FreeAddr()
	if err != nil {
		t.Fatalf("%v", err)
	}
	p := &Proc{Bin: bin, Addr: addr, Data: dataDir, Args: args, Log: logWriter{t}}
	if err := p.Start(); err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(p.Kill)
	return p
}

type logWriter struct{ t TB }

func (w logWriter) Write(b []byte) (int, error) {
	w.t.Logf("sottod: %s", strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// Ctx returns a context with a timeout, for brevity in tests.
func Ctx(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
