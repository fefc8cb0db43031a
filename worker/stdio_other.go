//go:build !unix

package worker

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// ServeStdio serves one session over the process's stdin and stdout, the
// way a host's transport reaches a worker process.
//
// Outside Unix it is the plain version of the Unix ServeStdio: the
// protocol keeps the process's stdin and stdout handles, and os.Stdout is
// pointed at os.Stderr, so that what a driver prints through os.Stdout
// (fmt.Println included) shows up in the stderr the host captures. On
// Windows, syscall.Stdout and the process's standard output handle
// (GetStdHandle, which C code and the child processes started without
// explicit handles use) are pointed at stderr too; a copy of the original
// handle taken before ServeStdio still reaches the protocol. Secrets are
// not masked in stderr, the drivers' leftover processes are not killed,
// and there is no parent-death signal: the worker learns of its host's
// death from the end of its stdin.
//
// The session stops, as for Serve, at the end of stdin, at a failed write
// to stdout, when ctx ends, and on os.Interrupt or syscall.SIGTERM (on
// Windows, a console's Ctrl-C, Ctrl-Break, close, logoff or shutdown
// event): the step in flight is cancelled and answered if the host can
// still read it, the session's directory is removed, and ServeStdio
// returns, within Worker.StopGrace. ServeStdio may be called once per
// process.
func (w *Worker) ServeStdio(ctx context.Context) error {
	in, out := os.Stdin, os.Stdout
	repointStdout()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	return newServer(w, &plainStdio{in: in, out: out}).serve(ctx)
}

// Main serves w over stdio and exits the process: 0 once the host closed
// the connection or after an interrupt, 1 after an error (printed to
// stderr), such as a failed write to a host that is gone. It is the whole
// main function of a typical worker binary.
func Main(w *Worker) {
	if err := w.ServeStdio(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// plainStdio is the protocol's stdin and stdout.
type plainStdio struct{ in, out *os.File }

func (s *plainStdio) Read(p []byte) (int, error)  { return s.in.Read(p) }
func (s *plainStdio) Write(p []byte) (int, error) { return s.out.Write(p) }

// Close closes both; the host sees EOF on the worker's stdout. On
// Windows, closing a pipe cancels the read or write in progress on it.
func (s *plainStdio) Close() error {
	err := s.out.Close()
	s.in.Close()
	return err
}
