//go:build unix

package worker

import (
	"bytes"
	"errors"
	"os"
	"runtime/debug"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tproxy/tproxy"
)

// partialLineWait is how long the stderr filter holds a line that has no
// newline yet, so that a secret split across two writes is still masked,
// before it passes the partial line on as is.
const partialLineWait = 50 * time.Millisecond

// stderrFilter masks the session's secrets in everything written to fds 1
// and 2, from the runtime, drivers, C code and child processes alike: both
// become a pipe that one goroutine copies to the original stderr, masking
// line by line.
//
// A fatal crash (an unrecovered panic, a runtime fatal error) ends the
// process before that goroutine can copy it, so the runtime is also told
// to write crash output to the original stderr directly: a crash report
// is never lost, at the price of not being masked.
type stderrFilter struct {
	masker atomic.Pointer[tproxy.Masker]
	r      *os.File // read end of the pipe now at fd 2
	orig   *os.File // the original stderr
	done   chan struct{}
}

func startStderrFilter() (*stderrFilter, error) {
	origFD, err := unix.FcntlInt(2, unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return nil, err
	}
	orig := os.NewFile(uintptr(origFD), "stderr")
	r, w, err := os.Pipe()
	if err != nil {
		orig.Close()
		return nil, err
	}
	for _, fd := range []int{2, 1} {
		if err := dup2(int(w.Fd()), fd); err != nil {
			dup2(origFD, 2)
			dup2(origFD, 1)
			orig.Close()
			r.Close()
			w.Close()
			return nil, err
		}
	}
	w.Close()
	debug.SetCrashOutput(orig, debug.CrashOptions{})
	f := &stderrFilter{r: r, orig: orig, done: make(chan struct{})}
	go f.copy()
	return f, nil
}

func (f *stderrFilter) setMasker(m *tproxy.Masker) { f.masker.Store(m) }

// copy moves bytes from the pipe to the original stderr, masking whole
// lines. A partial line is held until its newline arrives or
// partialLineWait passes.
func (f *stderrFilter) copy() {
	defer close(f.done)
	buf := make([]byte, 32<<10)
	var pending []byte
	for {
		if len(pending) > 0 {
			f.r.SetReadDeadline(time.Now().Add(partialLineWait))
		} else {
			f.r.SetReadDeadline(time.Time{})
		}
		n, err := f.r.Read(buf)
		pending = append(pending, buf[:n]...)
		if i := bytes.LastIndexByte(pending, '\n'); i >= 0 {
			f.write(pending[:i+1])
			pending = append(pending[:0], pending[i+1:]...)
		}
		if len(pending) >= len(buf) || (err != nil && len(pending) > 0) {
			f.write(pending)
			pending = pending[:0]
		}
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return
		}
	}
}

func (f *stderrFilter) write(b []byte) {
	f.orig.Write(f.masker.Load().Bytes(b))
}

// close points fds 1 and 2 back at the original stderr, which closes this
// process's write ends of the pipe, and waits up to wait for the copier to
// drain what was written. A child process still holding the pipe keeps it
// open; the wait bounds that.
func (f *stderrFilter) close(wait time.Duration) {
	dup2(int(f.orig.Fd()), 2)
	dup2(int(f.orig.Fd()), 1)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-f.done:
	case <-t.C:
	}
}
