// Package ladder is the shutdown ladder every transport runs to end a
// worker: stop reading its stdout, close its stdin, wait, ask it to
// terminate, wait, kill it, wait. The transports differ only in what each
// rung does (a signal to a process group, a cancelled context, an RPC to a
// sandbox's daemon), so the order of the rungs and the waits between them
// live here, once.
package ladder

import (
	"errors"
	"time"
)

// Defaults of the waits, for transports whose CloseTimeout or TermTimeout
// is zero.
const (
	DefaultCloseTimeout = 5 * time.Second
	DefaultTermTimeout  = 3 * time.Second
)

// Ladder is the shutdown of one worker. Each rung is a hook, and a nil
// hook is skipped: a nil Terminate or Kill with the wait after it, so that
// a transport that cannot ask a worker to terminate (Windows has no
// SIGTERM) goes from CloseTimeout straight to Kill. Run climbs it once.
type Ladder struct {
	// Done is closed once the worker has exited. It must not be nil.
	Done <-chan struct{}

	// StopReading closes the host's read end of the worker's stdout,
	// discarding what the host has not read. It comes first: a worker
	// blocked writing to a stdout nobody reads any more (the host stopped
	// after a protocol violation, or is closing) gets a broken pipe
	// instead, and can see its stdin close and exit, rather than stay
	// blocked until a signal ends it. It runs even if the worker has
	// exited already.
	StopReading func() error

	// CloseInput closes the worker's stdin, the cue for a well-behaved
	// worker to cancel what it is doing and exit. It runs even if the
	// worker has exited already.
	CloseInput func() error
	// CloseTimeout is how long Run waits for the exit after CloseInput;
	// zero or less only checks whether the worker has exited.
	CloseTimeout time.Duration

	// Terminate asks the worker to stop: SIGTERM, a cancelled context.
	// It runs only if the worker has not exited.
	Terminate func() error
	// TermTimeout is how long Run waits for the exit after Terminate;
	// zero or less only checks whether the worker has exited.
	TermTimeout time.Duration

	// Kill ends the worker without its cooperation: SIGKILL, broken
	// pipes. It runs only if the worker has not exited.
	Kill func() error
	// KillTimeout is how long Run waits for the exit after Kill. Zero or
	// less waits as long as it takes: for a Kill that cannot fail to end
	// the worker, such as SIGKILL to a local process.
	KillTimeout time.Duration
}

// Exit says when Run saw the worker exit.
type Exit int

const (
	// Running: the worker had not exited when Run's last wait ended. Only
	// a Ladder with a KillTimeout, or without a Kill, returns it.
	Running Exit = iota
	// Closed: the worker exited before Terminate was due, whether because
	// its stdin or stdout was closed or on its own.
	Closed
	// Terminated: the worker exited after Terminate, before Kill was due.
	Terminated
	// Killed: the worker exited after Kill.
	Killed
)

// String names the exit for messages and test failures.
func (e Exit) String() string {
	switch e {
	case Running:
		return "still running"
	case Closed:
		return "exited after its input was closed"
	case Terminated:
		return "exited after being asked to terminate"
	case Killed:
		return "exited after being killed"
	}
	return "unknown exit"
}

// Run climbs the ladder: StopReading, CloseInput, wait up to CloseTimeout,
// Terminate, wait up to TermTimeout, Kill, wait up to KillTimeout (or for
// good). It returns as soon as Done is closed, once the first two rungs
// have run. It reports when the worker exited and the rungs' errors,
// joined in rung order; a failed rung does not stop the climb.
func (l *Ladder) Run() (Exit, error) {
	var errs []error
	run := func(hook func() error) {
		if hook != nil {
			if err := hook(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	run(l.StopReading)
	run(l.CloseInput)
	if l.wait(l.CloseTimeout) {
		return Closed, errors.Join(errs...)
	}
	if l.Terminate != nil {
		run(l.Terminate)
		if l.wait(l.TermTimeout) {
			return Terminated, errors.Join(errs...)
		}
	}
	if l.Kill != nil {
		run(l.Kill)
		if l.KillTimeout <= 0 {
			<-l.Done
			return Killed, errors.Join(errs...)
		}
		if l.wait(l.KillTimeout) {
			return Killed, errors.Join(errs...)
		}
	}
	return Running, errors.Join(errs...)
}

// wait reports whether Done is closed within d; a d of zero or less
// checks without waiting.
func (l *Ladder) wait(d time.Duration) bool {
	if d <= 0 {
		select {
		case <-l.Done:
			return true
		default:
			return false
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-l.Done:
		return true
	case <-t.C:
		return false
	}
}
