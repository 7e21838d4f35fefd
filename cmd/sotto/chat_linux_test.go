//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal pair with /dev/ptmx (no dependency
// beyond x/sys).
func openPTY(t *testing.T) (ptmx, tty *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("ptsname: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("opening the tty: %v", err)
	}
	if err := unix.IoctlSetWinsize(int(s.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 30, Col: 100}); err != nil {
		t.Fatalf("window size: %v", err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s
}

// screen collects what the program writes to the terminal.
type screen struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *screen) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

// wait waits until the output since the last repaint contains want.
func (s *screen) wait(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		out := s.buf.String()
		s.mu.Unlock()
		if i := strings.LastIndex(out, "\x1b[2J"); i >= 0 && strings.Contains(out[i:], want) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t.Fatalf("the chat view never showed %q; last output:\n%q", want, tail(s.buf.String(), 2000))
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// testChat runs "sotto chat Bob" for alice in a pseudo-terminal: the view
// shows history, a typed message is sent on Enter (and reaches Bob's
// daemon), Bob's typing indicator and reply appear while it is open, and
// Ctrl-C quits with exit code 0.
func testChat(t *testing.T, alice *home, bob *rpcConn) {
	ptmx, tty := openPTY(t)
	cmd := exec.Command(sottoBin, "chat", "Bob")
	cmd.Env = append(alice.env(), "TERM=xterm")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close()
	var waitErr error
	done := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			cmd.Process.Kill()
			<-done
		}
	})
	scr := &screen{}
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := ptmx.Read(b)
			scr.Write(b[:n])
			if err != nil {
				return
			}
		}
	}()

	scr.wait(t, "sotto chat with Bob")
	scr.wait(t, "to the daemon") // history
	ptmx.Write([]byte("hello from chat"))
	scr.wait(t, "> hello from chat")
	ptmx.Write([]byte("\r"))
	p := bob.waitNote("hello from chat", nil)
	if p["from_handle"] != "alice" {
		t.Errorf("bob got %v", p)
	}
	scr.wait(t, "me: hello from chat ✓")

	if resp, _ := bob.call("typing", map[string]any{"to": "@alice", "typing": true}); resp["error"] != nil {
		t.Fatalf("typing: %v", resp)
	}
	scr.wait(t, "@bob is typing")
	if resp, _ := bob.call("send", map[string]any{"to": "@alice", "text": "reply while chatting"}); resp["error"] != nil {
		t.Fatalf("send: %v", resp)
	}
	scr.wait(t, "Bob: reply while chatting")

	ptmx.Write([]byte{0x03})
	select {
	case <-done:
		if waitErr != nil {
			t.Errorf("chat exit: %v", waitErr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Ctrl-C did not quit the chat view")
	}
}
