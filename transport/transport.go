package transport

import (
	"context"
	"fmt"
	"io"
	"strings"
	"syscall"
)

// Transport starts workers. Implementations are plain structs whose
// fields configure how the worker is reached.
type Transport interface {
	// Start launches one worker and returns the running Process. ctx bounds
	// the start only; the worker's lifetime is ended by Process.Close.
	Start(ctx context.Context) (Process, error)
}

// Process is a running worker: a byte stream to it and its lifecycle.
//
// Read returns the worker's stdout, the protocol bytes, io.EOF once the
// worker closed it (usually because it exited), and an error once Close
// has stopped reading it. Write writes to the
// worker's stdin. Read and Write may be called concurrently with each
// other and with Close.
type Process interface {
	io.Reader
	io.Writer

	// CloseWrite closes the worker's stdin. A well-behaved worker cancels
	// the call in flight, answers it as cancelled and exits
	// (docs/protocol.md section 8).
	CloseWrite() error

	// Close ends the worker with the shutdown ladder: it stops reading
	// the worker's stdout and closes its stdin, waits, then asks the
	// worker to terminate, waits, then kills it, and returns once the
	// worker has exited and everything is released. Output not read
	// before Close is discarded, and a worker still writing gets a broken
	// pipe rather than blocking until it is killed; a host that wants a
	// worker's last words calls CloseWrite and reads until EOF (or waits
	// for Done) first. Stderr is drained to the end either way. Close is
	// idempotent and safe to call from several goroutines; every call
	// returns the same error.
	Close() error

	// Done is closed once the worker has exited and its stderr has been
	// drained, whether it exited on its own or through Close.
	Done() <-chan struct{}

	// Exit reports how the worker exited. It is meaningful once Done is
	// closed.
	Exit() ExitStatus

	// StderrTail returns the last bytes the worker wrote to stderr, at
	// most the transport's tail size, cut at a line or UTF-8 boundary.
	StderrTail() string
}

// ExitStatus is how a worker ended.
type ExitStatus struct {
	// Code is the exit code, or -1 when the worker was ended by a signal or
	// the code is unknown.
	Code int `json:"code"`
	// Signal is the signal that ended the worker, or 0.
	Signal syscall.Signal `json:"signal,omitempty"`
	// Reason is a transport-specific description, such as an in-memory
	// worker's returned error or a sandbox's error message. May be empty.
	Reason string `json:"reason,omitempty"`
}

// Success reports whether the worker exited with code 0.
func (s ExitStatus) Success() bool { return s.Code == 0 && s.Signal == 0 }

// String describes the status the way os/exec does: "exit status 3",
// "signal: killed".
func (s ExitStatus) String() string {
	var b strings.Builder
	if s.Signal != 0 {
		fmt.Fprintf(&b, "signal: %v", s.Signal)
	} else {
		fmt.Fprintf(&b, "exit status %d", s.Code)
	}
	if s.Reason != "" {
		fmt.Fprintf(&b, " (%s)", s.Reason)
	}
	return b.String()
}

// ExitError reports that the worker exited while the connection was in use.
// Hosts return it (wrapped) from every call the exit interrupted.
type ExitError struct {
	Status ExitStatus
	// Stderr is the tail of the worker's stderr at exit.
	Stderr string
}

// Error describes the exit and quotes the stderr tail.
func (e *ExitError) Error() string {
	if e.Stderr == "" {
		return "worker exited: " + e.Status.String()
	}
	return "worker exited: " + e.Status.String() + "; stderr tail:\n" + e.Stderr
}

// NewExitError builds the ExitError of a Process that is Done.
func NewExitError(p Process) *ExitError {
	return &ExitError{Status: p.Exit(), Stderr: p.StderrTail()}
}
