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

	"github.com/tproxy/tproxy/internal/mask"
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
// fds 1 and 2 too, however the writes are split or spaced, from prepare
// on: stderr then goes through a pipe that the worker copies to the real
// stderr, holding back only what could begin a secret. A fatal crash report
// bypasses the pipe, unmasked, rather than risk losing it. Sessions
// without secrets write to stderr directly.
//
// The session stops, as for Serve, at the end of stdin, at a failed write
// to stdout (the host is gone: SIGPIPE does not kill the process, whose
// writes fail with EPIPE instead, stderr's too), when ctx ends, and on
// SIGTERM: the step in flight is cancelled and answered (step_failed,
// then -32800) if the host can still read it, the session's directory is
// removed, and ServeStdio returns, within Worker.StopGrace. On Linux the
// worker also stops when its parent dies: transport.Subprocess has the
// kernel send it SIGTERM then, and when nothing asked for a parent-death
// signal, ServeStdio asks for SIGHUP and takes it for the host's death if
// its parent process is indeed gone.
//
// Before it returns, ServeStdio kills (SIGKILL) the processes its
// drivers left running, so that none outlives a host that died: its own
// children and, when it leads its process group (as transport.Subprocess
// starts it), the rest of the group. A group leader whose parent is alive
// leaves that to its host, which kills the group once the worker has
// exited (transport.Subprocess does). ServeStdio may be called once per
// process.
func (w *Worker) ServeStdio(ctx context.Context) error {
	in, out, err := takeStdio()
	if err != nil {
		return fmt.Errorf("tproxy/worker: taking over stdio: %w", err)
	}
	// Notified, SIGPIPE no longer kills the process on a write to a
	// closed fd 1 or 2: the writes fail with EPIPE, and the session ends
	// the way it should. The channel is never read; the signal is kept
	// notified for the rest of the process, whose exit path writes to
	// stderr too.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	ppid := os.Getppid()
	ctx, stop := w.watchSignals(ctx, ppid)
	defer stop()
	defer endChildren(w.logger(), ppid)
	s := newServer(w, &stdio{in: in, out: out})
	var filter *stderrFilter
	s.onMasker = func(m *mask.Masker) {
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
// the connection or after SIGTERM, 1 after an error (printed to stderr),
// such as a failed write to a host that is gone. It is the whole main
// function of a typical worker binary.
func Main(w *Worker) {
	if err := w.ServeStdio(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// stopSignal is why a worker process stopped: a signal.
type stopSignal struct{ why string }

func (e *stopSignal) Error() string { return e.why }

// watchSignals returns ctx, cancelled on SIGTERM and, where the runtime
// armed a parent-death signal of its own (armParentDeath), on that signal
// when the parent process is gone, and a function that stops watching.
func (w *Worker) watchSignals(ctx context.Context, ppid int) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	sigs := []os.Signal{syscall.SIGTERM}
	if armParentDeath() {
		sigs = append(sigs, parentDeathSignal)
	}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, sigs...)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case sig := <-ch:
				switch {
				case sig == syscall.SIGTERM:
					cancel(&stopSignal{"the worker received SIGTERM"})
				case os.Getppid() != ppid:
					cancel(&stopSignal{"the worker's parent process died"})
				default:
					// The thread that started this process exited; the
					// process that owns it lives on, and so does the
					// session.
					w.logger().Warn("tproxy/worker: parent-death signal with the parent alive; ignored", "signal", sig)
				}
			case <-done:
				return
			}
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		cancel(nil)
	}
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
	// Both are non-blocking, so that they go through the runtime's
	// poller: closing them interrupts a read the host never completes and
	// a write the host does not read.
	for _, fd := range []int{inFD, outFD} {
		if err := unix.SetNonblock(fd, true); err != nil {
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
