// Package testbin builds the project's commands for tests, once per test
// process, and runs them as child processes: started, waited on until they
// print a given line, stopped with SIGTERM or killed. It also knows what
// sottod prints when it starts (its URL and trust root) and polls its
// /readyz.
//
// It is shared by the tests of cmd/sotto and cmd/sottod and by
// reliability/internal/harness, which all run the real binaries. It is for
// tests only.
package testbin

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// builds caches what Build made. It is package state on purpose: a test
// process builds each binary once, whichever of its tests asks first.
var builds struct {
	mu   sync.Mutex
	bins map[string]string // package and flags -> binary
	dirs []string
}

// Build compiles the main package pkg (an import path such as
// "github.com/sotto-im/sotto/cmd/sottod") with the given go build flags,
// once per process for each package and set of flags, into a temporary
// directory, and returns the binary's path.
func Build(pkg string, flags ...string) (string, error) {
	builds.mu.Lock()
	defer builds.mu.Unlock()
	key := strings.Join(append([]string{pkg}, flags...), " ")
	if bin, ok := builds.bins[key]; ok {
		return bin, nil
	}
	dir, err := os.MkdirTemp("", "sotto-testbin-")
	if err != nil {
		return "", fmt.Errorf("testbin: %w", err)
	}
	bin := filepath.Join(dir, path.Base(pkg))
	args := append(append([]string{"build", "-o", bin}, flags...), pkg)
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("testbin: go build %s: %v\n%s", pkg, err, out)
	}
	if builds.bins == nil {
		builds.bins = map[string]string{}
	}
	builds.bins[key] = bin
	builds.dirs = append(builds.dirs, dir)
	return bin, nil
}

// RemoveAll removes every binary Build made; a TestMain calls it after
// m.Run. A later Build builds afresh.
func RemoveAll() {
	builds.mu.Lock()
	defer builds.mu.Unlock()
	for _, dir := range builds.dirs {
		os.RemoveAll(dir)
	}
	builds.bins, builds.dirs = nil, nil
}

// Proc is a started child process.
type Proc struct {
	Cmd *exec.Cmd

	done chan struct{} // closed when Wait has returned
	err  error         // Wait's result, set before done is closed
}

// Start starts cmd, whose Stdout must be nil, and hands each line it
// prints to ready until ready returns true; the lines after that are
// discarded. If ready returns an error, if the process exits first, or if
// ready has not returned true within limit, the process is killed and
// Start returns an error.
func Start(cmd *exec.Cmd, limit time.Duration, ready func(line string) (bool, error)) (*Proc, error) {
	name := filepath.Base(cmd.Path)
	lw := &lineWriter{ready: ready, readyc: make(chan error, 1)}
	cmd.Stdout = lw
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("testbin: start %s: %w", name, err)
	}
	p := &Proc{Cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	timer := time.NewTimer(limit)
	defer timer.Stop()
	select {
	case err := <-lw.readyc:
		if err == nil {
			return p, nil
		}
		p.Kill()
		return nil, fmt.Errorf("testbin: %s: %w", name, err)
	case <-p.done:
		// Wait returns only after the last line was written, so a ready
		// line would have been seen.
		select {
		case err := <-lw.readyc:
			if err == nil {
				return p, nil
			}
			return nil, fmt.Errorf("testbin: %s: %w", name, err)
		default:
		}
		return nil, fmt.Errorf("testbin: %s exited before it was ready: %v", name, p.err)
	case <-timer.C:
		p.Kill()
		return nil, fmt.Errorf("testbin: %s not ready within %v", name, limit)
	}
}

// lineWriter is a child's stdout: it splits what the child prints into
// lines for ready, then discards the rest.
type lineWriter struct {
	ready  func(string) (bool, error)
	readyc chan error // receives once: nil when ready, or ready's error
	buf    []byte
	over   bool // ready returned true or an error
}

func (w *lineWriter) Write(b []byte) (int, error) {
	if w.over {
		return len(b), nil
	}
	w.buf = append(w.buf, b...)
	for !w.over {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		line := strings.TrimRight(string(w.buf[:i]), "\r")
		w.buf = w.buf[i+1:]
		ok, err := w.ready(line)
		if ok || err != nil {
			w.over, w.buf = true, nil
			w.readyc <- err
		}
	}
	return len(b), nil
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Pid is the process ID.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Kill sends SIGKILL, unless the process has ended, and waits for it to
// end.
func (p *Proc) Kill() {
	if !p.Exited() {
		p.Cmd.Process.Kill()
	}
	<-p.done
}

// Wait waits up to limit for the process to end by itself and returns
// its exit error (nil for status 0). A process still running after limit
// is killed, and Wait says so.
func (p *Proc) Wait(limit time.Duration) error {
	return p.wait(limit, "still running")
}

// Stop sends SIGTERM and waits up to limit for the process to end; it
// returns the exit error (nil for status 0). A process that does not end
// in time is killed, and Stop says so.
func (p *Proc) Stop(limit time.Duration) error {
	if p.Exited() {
		return p.err
	}
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("testbin: %w", err)
	}
	return p.wait(limit, "did not stop on SIGTERM")
}

// wait waits up to limit for the process to end, then kills it and says
// it was late.
func (p *Proc) wait(limit time.Duration, late string) error {
	timer := time.NewTimer(limit)
	defer timer.Stop()
	select {
	case <-p.done:
		return p.err
	case <-timer.C:
		p.Kill()
		return fmt.Errorf("testbin: %s %s after %v", filepath.Base(p.Cmd.Path), late, limit)
	}
}
