//go:build unix

package transport_test

import (
	"os/exec"
	"syscall"
)

// leaveGroup makes cmd start a session, and so a process group, of its
// own: a grandchild the worker's process group does not hold.
func leaveGroup(cmd *exec.Cmd) { cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} }
