//go:build unix

package transport

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"
)

// sysProcAttr puts the worker in a process group of its own, whose id is
// its pid, and asks for a parent-death signal where there is one.
func sysProcAttr() *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Setpgid: true}
	setParentDeath(attr)
	return attr
}

// reap waits for the worker to exit, kills what is left of its process
// group, reaps it and records its status.
func (p *subprocess) reap() {
	// Wait for the leader to exit without reaping it: while it is a zombie
	// its pid, and so its process group id, cannot be reused, so the group
	// can be killed safely; the lock keeps Close from signalling between
	// the reap and the reaped mark.
	var err error
	if waitExitedNoReap(p.pid) {
		p.mu.Lock()
		killGroup(p.pid, syscall.SIGKILL) // nothing to report a failure to
		err = p.cmd.Wait()                // returns at once: the leader has exited
		p.reaped = true
	} else {
		// Fallback where a zombie cannot be waited for: reap first, then
		// kill what is left of the group. The group id stays reserved
		// while the group has members, so only an empty group's id can
		// have been reused; a small race, accepted off Linux.
		err = p.cmd.Wait()
		p.mu.Lock()
		p.reaped = true
		killGroup(p.pid, syscall.SIGKILL)
	}
	p.setStatus(err)
	p.mu.Unlock()
}

// terminateRung returns the ladder's SIGTERM rung.
func (p *subprocess) terminateRung() func() error {
	return func() error { return p.signal(syscall.SIGTERM) }
}

// kill sends SIGKILL to the worker's process group.
func (p *subprocess) kill() error { return p.signal(syscall.SIGKILL) }

// signal sends sig to the worker's process group unless the worker has
// been reaped already.
func (p *subprocess) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reaped {
		return nil
	}
	return killGroup(p.pid, sig)
}

func killGroup(pgid int, sig syscall.Signal) error {
	if err := syscall.Kill(-pgid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("transport: send %v to worker process group %d: %w", sig, pgid, err)
	}
	return nil
}

// newStderrReader returns the reader the stderr drainer reads f through.
func newStderrReader(f *os.File) io.Reader { return &stderrReader{f: f} }

// stopStderr makes the stderr drainer take what is buffered in the pipe
// and stop. Closing the pipe instead, the fallback, would lose the
// worker's last words if the drainer lags behind.
func (p *subprocess) stopStderr() {
	if err := p.stderr.SetReadDeadline(time.Now()); err != nil {
		p.stderr.Close()
	}
}

// maxFinalStderr bounds what stderrReader reads once EOF was given up on,
// in case whoever holds the pipe keeps writing.
const maxFinalStderr = 1 << 20

// stderrReader reads the worker's stderr. When the worker is gone but the
// pipe is still held open, the waiter sets a past read deadline; from then
// on stderrReader returns only what is already buffered in the pipe,
// without blocking, and then io.EOF.
type stderrReader struct {
	f     *os.File
	final bool
	left  int // bytes still allowed once final
}

func (r *stderrReader) Read(b []byte) (int, error) {
	if !r.final {
		n, err := r.f.Read(b)
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return n, err
		}
		r.final, r.left = true, maxFinalStderr
		// A pipe with a deadline is in the poller, so it is non-blocking
		// and the raw reads below cannot hang.
		if err := r.f.SetReadDeadline(time.Time{}); err != nil {
			return n, io.EOF
		}
		if n > 0 {
			return n, nil
		}
	}
	if r.left <= 0 {
		return 0, io.EOF
	}
	if len(b) > r.left {
		b = b[:r.left]
	}
	rc, err := r.f.SyscallConn()
	if err != nil {
		return 0, io.EOF
	}
	var n int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		n, rerr = syscall.Read(int(fd), b)
		return true // never wait for more
	})
	if err != nil || rerr != nil || n <= 0 {
		return 0, io.EOF
	}
	r.left -= n
	return n, nil
}
