// Package harness runs the real sottod binary (built and started by
// internal/testbin) as a process on a data directory and a port that
// survive restarts, and kills it; and drives it with the client library.
// It is shared by the reliability test packages and the soak command, and
// is for tests only.
package harness

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/internal/testbin"
)

// TB is the part of testing.TB the harness needs (the soak command passes
// its own).
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	Cleanup(func())
}

// Binary builds cmd/sottod (once per process and set of build flags) into a
// temporary directory and returns its path.
func Binary(flags ...string) (string, error) {
	return testbin.Build(testbin.SottodPkg, flags...)
}

// FreeAddr returns a loopback address whose port was free a moment ago.
func FreeAddr() (string, error) { return testbin.FreeAddr() }

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

	proc *testbin.Proc // nil when not started or ended by Kill or Stop
}

// Start runs the binary on p.Addr and p.Data and waits until /readyz
// answers 200.
func (p *Proc) Start() error {
	var args []string
	if p.Mode != "" {
		args = append(args, p.Mode)
	}
	args = append(append(args, "--listen", p.Addr, "--data", p.Data), p.Args...)
	s, err := testbin.StartSottod(p.Bin, args, p.Env, p.Log, 60*time.Second)
	if err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	p.proc, p.URL, p.Trust = s.Proc, s.URL, s.Trust
	return nil
}

// WaitReady polls /readyz.
func (p *Proc) WaitReady(limit time.Duration) error {
	return testbin.WaitReady(p.URL, limit)
}

// Kill sends SIGKILL and waits for the process to end.
func (p *Proc) Kill() {
	if p.proc == nil {
		return
	}
	p.proc.Kill()
	p.proc = nil
}

// Stop sends SIGTERM and waits up to limit for exit status 0.
func (p *Proc) Stop(limit time.Duration) error {
	if p.proc == nil {
		return nil
	}
	err := p.proc.Stop(limit)
	p.proc = nil
	return err
}

// Pid is the process ID, or 0.
func (p *Proc) Pid() int {
	if p.proc == nil {
		return 0
	}
	return p.proc.Pid()
}

// Running reports whether the process has not exited.
func (p *Proc) Running() bool {
	return p.proc != nil && !p.proc.Exited()
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
	p := &Proc{Bin: bin, Addr: addr, Data: dataDir, Args: args, Log: testbin.LogWriter(t.Logf, "sottod")}
	if err := p.Start(); err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(p.Kill)
	return p
}

// Ctx returns a context with a timeout, for brevity in tests.
func Ctx(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
