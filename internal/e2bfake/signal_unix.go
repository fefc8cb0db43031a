//go:build unix

package e2bfake

import (
	"errors"
	"os"
	"syscall"
)

// sysProcAttr starts a process in a process group of its own, as envd
// does.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// signalGroup sends sig to the process group that p leads.
func signalGroup(p *os.Process, sig syscall.Signal) error {
	if err := syscall.Kill(-p.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
}

// The signals Vanish freezes a sandbox's processes with and endProcs
// thaws them with.
const sigStop, sigCont = syscall.SIGSTOP, syscall.SIGCONT
