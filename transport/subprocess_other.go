//go:build !unix

package transport

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// sysProcAttr returns nil: there are no process groups to set up.
func sysProcAttr() *syscall.SysProcAttr { return nil }

// reap waits for the worker to exit, reaps it and records its status.
// Without process groups, nothing the worker started is killed.
func (p *subprocess) reap() {
	err := p.cmd.Wait()
	p.mu.Lock()
	p.setStatus(err)
	p.mu.Unlock()
}

// terminateRung returns nil: without SIGTERM, the ladder skips that rung
// and its wait, and kills the worker once CloseTimeout has passed.
func (p *subprocess) terminateRung() func() error { return nil }

// kill ends the worker process (TerminateProcess on Windows). os.Process
// knows when the worker has been reaped, so a late kill is harmless.
func (p *subprocess) kill() error {
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("transport: kill worker process %d: %w", p.pid, err)
	}
	return nil
}

// newStderrReader returns the reader the stderr drainer reads f through.
func newStderrReader(f *os.File) io.Reader { return f }

// stopStderr closes the pipe, which ends a read in progress (on Windows,
// by cancelling it); what was still buffered in the pipe is lost.
func (p *subprocess) stopStderr() { p.stderr.Close() }
