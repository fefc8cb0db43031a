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
