package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tproxy/tproxy/internal/ladder"
	"github.com/tproxy/tproxy/internal/stderrcap"
)

// stderrGrace bounds the wait for stderr to reach EOF after the worker has
// exited (and, on unix systems, its process group is gone): a process that
// left the group (setsid, a daemon), or on Windows any process the worker
// started, may still hold the pipe, and must not delay Done for long. A
// variable for the tests.
var stderrGrace = time.Second

// Subprocess is a [Transport] that runs the worker as a local child process
// and talks to it over its stdin and stdout.
//
// On unix systems the worker runs in its own process group. When the
// worker exits, for whatever reason, the whole group is killed, so
// processes it spawned do not outlive it. On Linux the worker also gets
// SIGTERM if the host dies without closing it (a parent-death signal): a
// tproxy worker then cancels its step, removes its session directory, ends
// the processes its drivers started and exits, instead of running on as an
// orphan.
//
// Its stderr is always drained, until the worker exits: the last TailSize
// bytes are kept for [Process.StderrTail], and everything is copied to
// Stderr and Logger if set.
//
// Close runs the shutdown ladder: it stops reading the worker's stdout
// (a worker still writing gets EPIPE), closes its stdin, waits
// CloseTimeout, sends SIGTERM to the group, waits TermTimeout, sends
// SIGKILL to the group and waits for the exit.
//
// Windows, like any system that is not unix, has neither process groups
// nor SIGTERM: there the worker alone is ended, with [os.Process.Kill],
// and processes it started may outlive it. The ladder has no SIGTERM rung:
// Close kills the worker once CloseTimeout has passed, and TermTimeout is
// not used.
//
// The zero value is not usable: Path must be set. A Subprocess may start
// any number of workers and may be used from several goroutines.
//
// The Process that Start returns also has a method Pid() int, reachable
// with a type assertion to interface{ Pid() int }; on unix systems the pid
// is also the process group id.
type Subprocess struct {
	// Path is the worker binary. A name without a slash is looked up in
	// PATH, as by [exec.Command].
	Path string
	// Args are the arguments after the program name.
	Args []string
	// Env is added to the worker's environment, as "KEY=value" entries
	// that override the base's. The base is a minimal environment, so
	// that the host's credentials (cloud keys, tokens) reach the worker
	// only when named here: the host's PATH, HOME, USER, LOGNAME, SHELL,
	// LANG, LANGUAGE, LC_*, TZ, TMPDIR, TERM and GOCOVERDIR (and on
	// Windows SYSTEMROOT, SYSTEMDRIVE, WINDIR, COMSPEC, PATHEXT, TEMP,
	// TMP, USERPROFILE, APPDATA, LOCALAPPDATA, PROGRAMDATA,
	// NUMBER_OF_PROCESSORS and PROCESSOR_ARCHITECTURE), those it has.
	Env []string
	// InheritEnv makes the base the host's whole environment
	// (os.Environ) instead of the minimal one: every variable of the
	// host, secrets included, reaches the worker. [Command] sets it,
	// because ssh, kubectl and docker need the host's (SSH_AUTH_SOCK,
	// KUBECONFIG, DOCKER_HOST) and pass none of it to a remote worker
	// unless told to.
	InheritEnv bool
	// Dir is the worker's working directory; empty means the host's.
	Dir string

	// Stderr, if not nil, receives every byte the worker writes to its
	// stderr. It is written from one goroutine; if a write fails, Stderr is
	// no longer written to, but stderr is still drained.
	Stderr io.Writer
	// Logger, if not nil, receives each line of the worker's stderr as a
	// record at Info level, with a "pid" attribute. From a line starting
	// with "panic:" or "fatal error:" on, lines are logged at Error level.
	Logger *slog.Logger
	// TailSize is how many bytes of stderr are kept for StderrTail and
	// error messages. Zero means 16 KiB.
	TailSize int

	// CloseTimeout is how long Close waits for the worker to exit after
	// closing its stdin before it sends SIGTERM (on Windows, before it
	// kills the worker). Zero means 5s.
	CloseTimeout time.Duration
	// TermTimeout is how long Close waits after SIGTERM before it sends
	// SIGKILL. Zero means 3s. Not used on Windows, which has no SIGTERM.
	TermTimeout time.Duration

	// ExitCodeSignals says that Path is an intermediary (a shell, docker
	// exec, kubectl exec) that reports a worker killed by signal N as exit
	// status 128+N: Exit then reports such a status as Signal N, with a
	// Reason saying so. [Command] sets it; see there for the trade-off.
	ExitCodeSignals bool
}

// Start starts the worker. ctx bounds only the start: cancelling it later
// does not affect the running worker, which is ended by Process.Close.
func (s *Subprocess) Start(ctx context.Context) (Process, error) {
	if s.Path == "" {
		return nil, errors.New("transport: subprocess: Path is empty")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("transport: start worker %q: %w", s.Path, err)
	}

	// The pipes are made here rather than with exec's StdoutPipe, whose
	// read end cmd.Wait closes, maybe before the host has read all of it.
	var files []*os.File // everything to close if Start fails
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	pipe := func() (r, w *os.File, err error) {
		r, w, err = os.Pipe()
		if err == nil {
			files = append(files, r, w)
		}
		return r, w, err
	}
	stdinR, stdinW, err := pipe()
	if err == nil {
		var stdoutR, stdoutW, stderrR, stderrW *os.File
		if stdoutR, stdoutW, err = pipe(); err == nil {
			if stderrR, stderrW, err = pipe(); err == nil {
				cmd := exec.Command(s.Path, s.Args...)
				cmd.Env = s.environ()
				cmd.Dir = s.Dir
				cmd.Stdin = stdinR
				cmd.Stdout = stdoutW
				cmd.Stderr = stderrW
				cmd.SysProcAttr = sysProcAttr()
				var p *subprocess
				if p, err = s.startAndWait(cmd, stdinW, stdoutR, stderrR); err == nil {
					// The child has its own copies; the parent must not
					// hold the child's ends, or EOF would never come.
					stdinR.Close()
					stdoutW.Close()
					stderrW.Close()
					return p, nil
				}
			}
		}
	}
	closeAll()
	return nil, fmt.Errorf("transport: start worker %q: %w", s.Path, err)
}

// startAndWait starts cmd on a goroutine that stays on its OS thread until
// the worker is reaped (see lockStartThread) and waits for it there.
func (s *Subprocess) startAndWait(cmd *exec.Cmd, stdin, stdout, stderr *os.File) (*subprocess, error) {
	started := make(chan error, 1)
	var p *subprocess
	go func() {
		unlock := lockStartThread()
		defer unlock()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		p = s.newProcess(cmd, stdin, stdout, stderr)
		started <- nil
		p.wait()
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}

// newProcess returns the Process of a started cmd and starts draining its
// stderr; the caller runs wait.
func (s *Subprocess) newProcess(cmd *exec.Cmd, stdin, stdout, stderr *os.File) *subprocess {
	p := &subprocess{
		cmd:          cmd,
		pid:          cmd.Process.Pid,
		stdin:        stdin,
		stdout:       stdout,
		stderr:       stderr,
		signalCodes:  s.ExitCodeSignals,
		closeTimeout: s.CloseTimeout,
		termTimeout:  s.TermTimeout,
		stderrGrace:  stderrGrace,
		stderrDone:   make(chan struct{}),
		done:         make(chan struct{}),
	}
	if p.closeTimeout <= 0 {
		p.closeTimeout = ladder.DefaultCloseTimeout
	}
	if p.termTimeout <= 0 {
		p.termTimeout = ladder.DefaultTermTimeout
	}
	p.stderrCap = stderrcap.New(s.TailSize, s.Stderr, s.Logger, slog.Int("pid", p.pid))
	go func() {
		defer close(p.stderrDone)
		stderrcap.Drain(newStderrReader(stderr), p.stderrCap)
	}()
	return p
}

// subprocess is the Process of a Subprocess.
type subprocess struct {
	cmd                       *exec.Cmd
	pid                       int
	stdin, stdout, stderr     *os.File
	stderrCap                 *stderrcap.Capture
	closeTimeout, termTimeout time.Duration
	stderrGrace               time.Duration
	signalCodes               bool // decode 128+N exit statuses as signal N

	stderrDone chan struct{} // closed when the stderr drainer returned
	done       chan struct{} // closed when the worker is reaped and stderr drained

	mu     sync.Mutex // guards reaped and status
	reaped bool       // the pid may be reused: never signal it again (unix)
	status ExitStatus

	closeWriteOnce sync.Once
	closeWriteErr  error
	closeOnce      sync.Once
	closeErr       error
}

// Pid returns the worker's process id; on unix systems it is also its
// process group id.
func (p *subprocess) Pid() int { return p.pid }

func (p *subprocess) Read(b []byte) (int, error)  { return p.stdout.Read(b) }
func (p *subprocess) Write(b []byte) (int, error) { return p.stdin.Write(b) }

func (p *subprocess) CloseWrite() error {
	p.closeWriteOnce.Do(func() { p.closeWriteErr = p.stdin.Close() })
	return p.closeWriteErr
}

func (p *subprocess) Done() <-chan struct{} { return p.done }

func (p *subprocess) Exit() ExitStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status
}

func (p *subprocess) StderrTail() string { return p.stderrCap.Tail() }

// wait runs for the life of the worker and closes done.
func (p *subprocess) wait() {
	defer close(p.done)
	p.reap()

	timer := time.NewTimer(p.stderrGrace)
	select {
	case <-p.stderrDone:
	case <-timer.C:
		// Something outside the worker holds the pipe: stop the drainer.
		p.stopStderr()
	}
	timer.Stop()
	<-p.stderrDone
	p.stderr.Close()
}

// setStatus records how the worker exited, given cmd.Wait's error; p.mu
// must be held.
func (p *subprocess) setStatus(err error) {
	p.status = exitStatus(p.cmd.ProcessState, err)
	if p.signalCodes {
		p.status = decodeSignalExit(p.status, p.cmd.Path)
	}
}

func exitStatus(ps *os.ProcessState, err error) ExitStatus {
	if ps == nil {
		s := ExitStatus{Code: -1}
		if err != nil {
			s.Reason = err.Error()
		}
		return s
	}
	// syscall.WaitStatus, where the platform has one and the worker can
	// be ended by a signal.
	type signaled interface {
		Signaled() bool
		Signal() syscall.Signal
	}
	if ws, ok := ps.Sys().(signaled); ok && ws.Signaled() {
		return ExitStatus{Code: -1, Signal: ws.Signal()}
	}
	return ExitStatus{Code: ps.ExitCode()}
}

// Close runs the shutdown ladder (see Subprocess). It returns nil
// whatever the worker's exit status, which Exit reports; an error means
// the ladder itself failed.
func (p *subprocess) Close() error {
	p.closeOnce.Do(func() {
		l := ladder.Ladder{
			Done: p.done,
			StopReading: func() error {
				if err := p.stdout.Close(); err != nil {
					return fmt.Errorf("transport: close worker stdout: %w", err)
				}
				return nil
			},
			CloseInput: func() error {
				if err := p.CloseWrite(); err != nil && !errors.Is(err, os.ErrClosed) {
					return fmt.Errorf("transport: close worker stdin: %w", err)
				}
				return nil
			},
			CloseTimeout: p.closeTimeout,
			Terminate:    p.terminateRung(),
			TermTimeout:  p.termTimeout,
			Kill:         p.kill,
		}
		_, p.closeErr = l.Run()
	})
	return p.closeErr
}

// baseEnv names the variables of the host's environment that a
// Subprocess passes to its worker unless InheritEnv is set: what programs
// need to find their tools, locale, home and temporary directory, and
// nothing that usually carries a credential. GOCOVERDIR is there so that a
// coverage-instrumented Go worker can write its profile. Names are matched
// exactly, but for a trailing "*", which matches a prefix; on Windows,
// whose variable names are case-insensitive, case is ignored.
var baseEnv = []string{
	"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "LC_*", "TZ", "TMPDIR", "TERM",
	"GOCOVERDIR",
	// Windows.
	"SYSTEMROOT", "SYSTEMDRIVE", "WINDIR", "COMSPEC", "PATHEXT", "TEMP", "TMP",
	"USERPROFILE", "APPDATA", "LOCALAPPDATA", "PROGRAMDATA", "NUMBER_OF_PROCESSORS", "PROCESSOR_ARCHITECTURE",
}

// environ is the worker's environment: the base (baseEnv's variables, or
// all with InheritEnv) then Env, a later entry overriding an earlier one
// of the same name.
func (s *Subprocess) environ() []string {
	host := os.Environ()
	env := make([]string, 0, len(s.Env)+len(baseEnv))
	for _, kv := range host {
		name, _, _ := strings.Cut(kv, "=")
		if s.InheritEnv || slices.ContainsFunc(baseEnv, func(pat string) bool { return envMatch(pat, name) }) {
			env = append(env, kv)
		}
	}
	// exec.Cmd keeps the last of duplicate names (and on Windows compares
	// them without case), so appending is overriding.
	return append(env, s.Env...)
}

// envMatch reports whether the variable name matches pattern, a name or a
// prefix ending in "*".
func envMatch(pattern, name string) bool {
	eq := func(a, b string) bool { return a == b }
	if runtime.GOOS == "windows" {
		eq = strings.EqualFold
	}
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
		return len(name) >= len(prefix) && eq(name[:len(prefix)], prefix)
	}
	return eq(pattern, name)
}
