//go:build !unix

package e2bfake

import (
	"errors"
	"os"
	"syscall"
)

// sysProcAttr returns nil: there are no process groups to set up.
func sysProcAttr() *syscall.SysProcAttr { return nil }

// signalGroup kills p, whatever sig is: without process groups and
// signals (Windows), killing the process alone is all there is, so a
// SIGTERM the fake relays ends the process as SIGKILL would.
func signalGroup(p *os.Process, _ syscall.Signal) error {
	if err := p.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

// sigStop and sigCont stand for SIGSTOP and SIGCONT, which this system
// lacks: signalGroup ends the process whatever the signal, so a vanished
// sandbox's processes die instead of freezing.
const sigStop, sigCont = syscall.Signal(19), syscall.Signal(18)
