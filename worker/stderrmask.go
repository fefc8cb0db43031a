//go:build unix

package worker

import (
	"io"
	"os"
	"runtime/debug"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tproxy/tproxy/internal/mask"
)

// stderrFilter masks the session's secrets in everything written to fds 1
// and 2, from the runtime, drivers, C code and child processes alike: both
// become a pipe that one goroutine copies to the original stderr, masking
// as it goes (maskCopy). A secret split across writes is masked however
// far apart the writes come, and so is one in a line of any length.
//
// A fatal crash (an unrecovered panic, a runtime fatal error) ends the
// process before that goroutine can copy it, so the runtime is also told
// to write crash output to the original stderr directly: a crash report
// is never lost, at the price of not being masked.
type stderrFilter struct {
	masker atomic.Pointer[mask.Masker]
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

func (f *stderrFilter) setMasker(m *mask.Masker) { f.masker.Store(m) }

// copy moves bytes from the pipe to the original stderr, masked.
func (f *stderrFilter) copy() {
	defer close(f.done)
	maskCopy(f.orig, f.r, f.masker.Load)
}

// maskReadSize is how much maskCopy reads at a time.
const maskReadSize = 32 << 10

// maskCopy copies src to dst until src ends, masking the secrets of the
// masker that masker returns at each read (nil masks nothing). It holds
// back only what could be the beginning of a secret, whatever the time
// until the next read (mask.Masker.MaskPrefix): fewer bytes than the
// longest form of a secret, on top of one read. Whatever it holds when src
// ends (EOF or an error) is written, masked. Errors writing to dst are
// ignored: stderr has nowhere else to report them.
func maskCopy(dst io.Writer, src io.Reader, masker func() *mask.Masker) {
	buf := make([]byte, maskReadSize)
	var pending []byte
	for {
		n, err := src.Read(buf)
		pending = append(pending, buf[:n]...)
		out, done := masker().MaskPrefix(pending, err != nil)
		if len(out) > 0 {
			dst.Write(out)
		}
		// Keep the held bytes at the front; the buffer keeps its size.
		pending = append(pending[:0], pending[done:]...)
		if err != nil {
			return
		}
	}
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
