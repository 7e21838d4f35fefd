package main

import (
	"context"
	"os/exec"
	"syscall"
	"time"
)

// command is exec.CommandContext with the child in its own process group, so that a timeout ends
// the child and everything it started (sotto-load runs the relay as its own child) and nothing
// else.
func command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	return cmd
}
