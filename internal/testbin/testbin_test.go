package testbin

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as the child process: with TESTBIN_CHILD set it
// plays the part named there instead of running the tests.
func TestMain(m *testing.M) {
	switch os.Getenv("TESTBIN_CHILD") {
	case "":
		os.Exit(m.Run())
	case "serve": // prints two lines, then exits 0 on SIGTERM
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM)
		fmt.Println("starting")
		fmt.Println("listening at x")
		<-term
		os.Exit(0)
	case "stubborn": // ready, but ignores SIGTERM
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("listening at x")
		time.Sleep(time.Minute)
	case "quit": // exits before it is ready
		fmt.Println("starting")
		os.Exit(3)
	case "silent":
		time.Sleep(time.Minute)
	}
	os.Exit(0)
}

func child(part string) *exec.Cmd {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "TESTBIN_CHILD="+part)
	return cmd
}

func listening(line string) (bool, error) { return strings.HasPrefix(line, "listening at "), nil }

func TestStartAndStop(t *testing.T) {
	var seen []string
	p, err := Start(child("serve"), 30*time.Second, func(line string) (bool, error) {
		seen = append(seen, line)
		return listening(line)
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(seen, "|") != "starting|listening at x" {
		t.Fatalf("ready saw %q", seen)
	}
	if p.Exited() || p.Pid() == 0 {
		t.Fatal("not running after Start")
	}
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if !p.Exited() {
		t.Fatal("running after Stop")
	}
	p.Kill() // a no-op once it has ended
	if err := p.Stop(time.Second); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

func TestStopKillsAStubbornProcess(t *testing.T) {
	p, err := Start(child("stubborn"), 30*time.Second, listening)
	if err != nil {
		t.Fatal(err)
	}
	err = p.Stop(200 * time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "did not stop") {
		t.Fatalf("Stop: %v", err)
	}
	if !p.Exited() {
		t.Fatal("running after Stop timed out")
	}
}

func TestKill(t *testing.T) {
	p, err := Start(child("serve"), 30*time.Second, listening)
	if err != nil {
		t.Fatal(err)
	}
	p.Kill()
	if !p.Exited() {
		t.Fatal("running after Kill")
	}
	var ee *exec.ExitError
	if err := p.Stop(time.Second); !errors.As(err, &ee) {
		t.Fatalf("exit error after SIGKILL: %v", err)
	}
}

func TestWait(t *testing.T) {
	cmd := child("quit")
	// "quit" exits without the line; a ready function that takes its first
	// line lets Wait see the exit.
	p, err := Start(cmd, 30*time.Second, func(string) (bool, error) { return true, nil })
	if err != nil {
		t.Fatal(err)
	}
	var ee *exec.ExitError
	if err := p.Wait(10 * time.Second); !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("Wait: %v, want exit status 3", err)
	}
	p, err = Start(child("serve"), 30*time.Second, listening)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(100 * time.Millisecond); err == nil || !p.Exited() {
		t.Fatalf("Wait on a process that does not end: %v (exited %v)", err, p.Exited())
	}
}

func TestStartFailures(t *testing.T) {
	bad := errors.New("bad line")
	for _, tc := range []struct {
		part  string
		ready func(string) (bool, error)
		want  string
	}{
		{"quit", listening, "exited before it was ready"},
		{"silent", listening, "not ready within"},
		{"serve", func(string) (bool, error) { return false, bad }, "bad line"},
	} {
		start := time.Now()
		p, err := Start(child(tc.part), 500*time.Millisecond, tc.ready)
		if err == nil || !strings.Contains(err.Error(), tc.want) || p != nil {
			t.Errorf("%s: %v, %v; want error %q", tc.part, p, err, tc.want)
		}
		if time.Since(start) > 20*time.Second {
			t.Errorf("%s: Start took %v", tc.part, time.Since(start))
		}
	}
}

func TestStartMissingBinary(t *testing.T) {
	if _, err := Start(exec.Command("/nonexistent/testbin-child"), time.Second, listening); err == nil {
		t.Fatal("started a missing binary")
	}
}

// TestStartSottod builds sottod (once: a second Build returns the same
// binary), runs it, stops it, and removes the binary.
func TestStartSottod(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs sottod")
	}
	bin, err := Build(SottodPkg)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := Build(SottodPkg); err != nil || again != bin {
		t.Fatalf("second Build: %q, %v; want %q", again, err, bin)
	}
	s, err := StartSottod(bin, []string{"--listen", "127.0.0.1:0", "--data", t.TempDir()}, nil, LogWriter(t.Logf, "sottod"), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s.URL, "http://127.0.0.1:") || s.Trust.Fingerprint() == "" {
		t.Fatalf("URL %q, trust root %v", s.URL, s.Trust)
	}
	if err := s.Stop(20 * time.Second); err != nil {
		t.Fatalf("sottod exit after SIGTERM: %v", err)
	}
	if _, err := Build("github.com/sotto-im/sotto/no/such/package"); err == nil {
		t.Fatal("built a package that does not exist")
	}
	RemoveAll()
	if _, err := os.Stat(bin); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("binary left after RemoveAll: %v", err)
	}
}
