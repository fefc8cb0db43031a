package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/tproxy/tproxy"
)

// DefaultHeartbeatInterval is how often a running step sends a heartbeat
// when Worker.HeartbeatInterval is zero.
const DefaultHeartbeatInterval = 2 * time.Second

// A Handler answers a user-registered method. params is the request's raw
// params (nil when absent). A returned *Error is sent with its code,
// message and data; any other error is sent with tproxy.CodeInternalError
// and its message.
type Handler func(ctx context.Context, params json.RawMessage) (result any, err error)

// Error is the JSON-RPC error a Handler returns to choose the response's
// code and data (docs/protocol.md section 7 lists the protocol's codes;
// a method of one's own may use others).
type Error struct {
	Code    int64
	Message string
	// Data, if not nil, is encoded as the error's data member.
	Data any
}

// Error returns the message and the code.
func (e *Error) Error() string { return fmt.Sprintf("%s (code %d)", e.Message, e.Code) }

// Worker is the worker runtime: the drivers and methods it offers and how
// it serves them. Configure it, register drivers, then call ServeStdio (in
// a worker binary) or Serve (over any byte stream, e.g. in tests). A Worker
// may serve several connections at once; each connection is one session.
type Worker struct {
	// Name and Version describe the worker in the ping result.
	Name, Version string

	// HeartbeatInterval is how often a running step sends a heartbeat
	// notification; DefaultHeartbeatInterval when zero.
	HeartbeatInterval time.Duration

	// MaxFrameSize caps one protocol message in both directions;
	// tproxy.DefaultMaxFrameSize when zero.
	MaxFrameSize int

	// AsyncNotify makes the notifications a step sends (events,
	// metrics, logs, heartbeats) return once queued instead of once
	// written (wire.Stream.QueueNotification): a writer goroutine
	// writes them, several per write while the host keeps up, so a step
	// that emits many events spends less time in write(2). The price: a
	// notification still queued when the worker process ends abruptly (a
	// driver calling os.Exit, a crash outside a driver, SIGKILL) is lost,
	// where by default every notification is in the pipe before the call
	// that sent it returns. A step's response, and Serve's return, still
	// wait for everything queued before them.
	AsyncNotify bool

	// WorkDir is where session directories (tproxy-<session id>-*) are
	// created; os.TempDir() when empty. A session's directory is removed
	// by cleanup, and whenever the session ends otherwise: the end of the
	// host's input, SIGTERM, a failed write to the host, a panic in the
	// runtime. A worker killed outright (SIGKILL, a crash outside the
	// runtime, os.Exit in a driver) cannot remove it; on Unix, the first
	// prepare of a later worker with the same WorkDir (at most once an
	// hour per WorkDir) removes such a directory once it is 24 hours old,
	// if no live process holds its lock (flock). Elsewhere there is no
	// such lock and no sweep: such a directory stays.
	WorkDir string

	// StopGrace bounds how long a stopping session waits. A session stops
	// when the host closes its input, a write to the host fails, or
	// Serve's ctx ends (SIGTERM, for ServeStdio): the request running is
	// cancelled and the session waits up to StopGrace for its driver to
	// return and its answer to be written, then closes the connection and
	// returns, abandoning a driver that ignores its context. Zero means
	// 2s.
	StopGrace time.Duration

	// Logger receives the worker runtime's own diagnostics, such as the
	// stack of a panicking driver. In a worker process it should write to
	// stderr, which the host captures; nil means slog.Default(), which
	// ServeStdio points at stderr.
	Logger *slog.Logger

	drivers   map[string]Driver
	methods   map[string]Handler
	sweepOnce sync.Once // stale session directories are swept once
}

// New returns a Worker with the given name and version.
func New(name, version string) *Worker {
	return &Worker{Name: name, Version: version}
}

// Register makes driver d runnable by exec_step under name. It panics if
// name is empty or already registered, like http.Handle: registration is
// program setup, not input.
func (w *Worker) Register(name string, d Driver) {
	if name == "" || d == nil {
		panic("tproxy/worker: Register needs a name and a driver")
	}
	if _, dup := w.drivers[name]; dup {
		panic(fmt.Sprintf("tproxy/worker: driver %q registered twice", name))
	}
	if w.drivers == nil {
		w.drivers = map[string]Driver{}
	}
	w.drivers[name] = d
}

// RegisterFunc is Register for a plain function.
func (w *Worker) RegisterFunc(name string, f func(ctx context.Context, s *Step) error) {
	w.Register(name, DriverFunc(f))
}

// Handle registers h for a method of the caller's own. It panics if the
// method is one of the protocol's or already registered. Handlers run one at
// a time, in arrival order, like the protocol's own methods.
func (w *Worker) Handle(method string, h Handler) {
	switch method {
	case "", tproxy.MethodPing, tproxy.MethodPrepare, tproxy.MethodExecStep, tproxy.MethodCleanup,
		tproxy.MethodFetchArtifact, tproxy.MethodCancelRequest:
		panic(fmt.Sprintf("tproxy/worker: method %q cannot be registered", method))
	}
	if _, dup := w.methods[method]; dup {
		panic(fmt.Sprintf("tproxy/worker: method %q registered twice", method))
	}
	if w.methods == nil {
		w.methods = map[string]Handler{}
	}
	w.methods[method] = h
}

// Drivers returns the names of the registered drivers, sorted.
func (w *Worker) Drivers() []string {
	names := make([]string, 0, len(w.drivers))
	for n := range w.drivers {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Info returns what ping reports about this worker.
func (w *Worker) Info() tproxy.WorkerInfo {
	return tproxy.WorkerInfo{Name: w.Name, Version: w.Version, Drivers: w.Drivers()}
}

func (w *Worker) logger() *slog.Logger {
	if w.Logger != nil {
		return w.Logger
	}
	return slog.Default()
}

func (w *Worker) heartbeat() time.Duration {
	if w.HeartbeatInterval > 0 {
		return w.HeartbeatInterval
	}
	return DefaultHeartbeatInterval
}

// defaultStopGrace is StopGrace's default: well inside the 5 s a host
// waits after closing the worker's input before it sends SIGTERM.
const defaultStopGrace = 2 * time.Second

func (w *Worker) stopGrace() time.Duration {
	if w.StopGrace > 0 {
		return w.StopGrace
	}
	return defaultStopGrace
}

func (w *Worker) workDir() string {
	if w.WorkDir != "" {
		return w.WorkDir
	}
	return os.TempDir()
}

// Serve serves one session over rwc until the host closes its end, the
// connection fails, or ctx ends. Each of these stops the session: the
// request running is cancelled (an exec_step still sends step_failed,
// error_type "cancelled") and it and those queued are answered with
// -32800; Serve then returns, within Worker.StopGrace, and removes the
// session's directory. It returns nil after the end of the host's input
// or of ctx, and an error when reading or writing the connection failed.
// Serve closes rwc before it returns.
//
// If rwc has a CloseRead method (transport.InMemory's worker end does, and
// so do TCP and Unix connections), Serve reads rwc on the calling goroutine
// and calls CloseRead when ctx ends: an idle session then costs no
// goroutine but the caller's. Otherwise it reads rwc on a goroutine of its
// own, which can outlive Serve until a read of rwc returns.
func (w *Worker) Serve(ctx context.Context, rwc io.ReadWriteCloser) error {
	return newServer(w, rwc).serve(ctx)
}
