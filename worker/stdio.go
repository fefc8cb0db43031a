//go:build unix

package worker

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tproxy/tproxy"
)

// ServeStdio serves one session over the process's stdin and stdout, the
// way a host's transport reaches a worker process.
//
// Before anything else runs it moves the protocol to private copies of fd 0
// and fd 1 (close-on-exec, so drivers' child processes do not inherit them),
// points fd 1 — and with it os.Stdout, fmt.Println and any C library's
// writes — at stderr, and points fd 0 at /dev/null. Nothing a driver prints
// can corrupt the protocol; it shows up in the stderr the host captures.
//
// When the session has secrets, they are masked in everything written to
// fds 1 and 2 too, line by line, from prepare on: stderr then goes through
// a pipe that the worker copies to the real stderr. A fatal crash report
// bypasses the pipe, unmasked, rather than risk losing it. Sessions
// without secrets write to stderr directly.
//
// SIGTERM cancels ctx: the step in flight is cancelled and answered, then
// ServeStdio returns. ServeStdio may be called once per process.
func (w *Worker) ServeStdio(ctx context.Context) error {
	in, out, err := takeStdio()
	if err != nil {
		return fmt.Errorf("tproxy/worker: taking over stdio: %w", err)
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM)
	defer stop()
	s := newServer(w, &stdio{in: in, out: out})
	var filter *stderrFilter
	s.onMasker = func(m *tproxy.Masker) {
		if filter == nil && m.HasValues() {
			var err error
			if filter, err = startStderrFilter(); err != nil {
				s.log.Error("tproxy/worker: cannot mask secrets in stderr", "err", err)
				return
			}
		}
		if filter != nil {
			filter.setMasker(m)
		}
	}
	err = s.serve(ctx)
	if filter != nil {
		filter.close(time.Second)
	}
	return err
}

// Main serves w over stdio and exits the process: 0 once the host closed
// the connection, 1 after an error (printed to stderr). It is the whole
// main function of a typical worker binary.
func Main(w *Worker) {
	if err := w.ServeStdio(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// takeStdio duplicates fds 0 and 1 for the protocol and repoints the
// originals at /dev/null and stderr.
func takeStdio() (in, out *os.File, err error) {
	inFD, err := unix.FcntlInt(0, unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return nil, nil, fmt.Errorf("dup stdin: %w", err)
	}
	outFD, err := unix.FcntlInt(1, unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		unix.Close(inFD)
		return nil, nil, fmt.Errorf("dup stdout: %w", err)
	}
	// The input is read with plain blocking reads, as a simple line
	// reader would: a round trip then costs one thread wake-up instead of
	// the runtime poller's several (BenchmarkPing: ~92 → ~70 µs). Closing
	// it does not wait for a pending read, and the process exits after
	// ServeStdio. The output is non-blocking, so that closing it does
	// interrupt a write the host is not reading.
	for fd, nonblock := range map[int]bool{inFD: false, outFD: true} {
		if err := unix.SetNonblock(fd, nonblock); err != nil {
			unix.Close(inFD)
			unix.Close(outFD)
			return nil, nil, fmt.Errorf("set non-blocking: %w", err)
		}
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		unix.Close(inFD)
		unix.Close(outFD)
		return nil, nil, err
	}
	defer null.Close()
	if err := dup2(int(null.Fd()), 0); err != nil {
		return nil, nil, fmt.Errorf("repoint stdin: %w", err)
	}
	if err := dup2(2, 1); err != nil {
		return nil, nil, fmt.Errorf("repoint stdout at stderr: %w", err)
	}
	return os.NewFile(uintptr(inFD), "tproxy-protocol-in"), os.NewFile(uintptr(outFD), "tproxy-protocol-out"), nil
}

// stdio is the protocol's private stdin and stdout.
type stdio struct{ in, out *os.File }

func (s *stdio) Read(p []byte) (int, error)  { return s.in.Read(p) }
func (s *stdio) Write(p []byte) (int, error) { return s.out.Write(p) }

// Close closes both; the host sees EOF on the worker's stdout.
func (s *stdio) Close() error {
	err := s.out.Close()
	s.in.Close()
	return err
}
