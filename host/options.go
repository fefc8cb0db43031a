package host

import (
	"log/slog"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/logsink"
	"github.com/tproxy/tproxy/transport"
)

// DefaultStartTimeout bounds the start and handshake when the context
// given to Start has no deadline.
const DefaultStartTimeout = 30 * time.Second

// An Option configures a Client.
type Option func(*config)

type config struct {
	sink         logsink.Sink
	logger       *slog.Logger
	maxFrame     int
	startTimeout time.Duration
	onHeartbeat  func(tproxy.Heartbeat)
	trace        func(method string, params any) func(result any, err error)

	heartbeatTimeout time.Duration
	callTimeout      time.Duration

	// started, if set, is told the worker's Process as soon as it has
	// started, so that a Run can report how a worker that failed its
	// handshake ended.
	started func(transport.Process)
}

func withStarted(f func(transport.Process)) Option { return func(c *config) { c.started = f } }

// WithSink sets where the worker's events and metrics go, in wire order.
// Without it they are dropped.
func WithSink(s logsink.Sink) Option { return func(c *config) { c.sink = s } }

// WithLogger sets the logger that receives the worker's log records and the
// host's own diagnostics. Default: slog.Default().
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithMaxFrameSize caps one protocol message in both directions.
// Default: tproxy.DefaultMaxFrameSize.
func WithMaxFrameSize(n int) Option { return func(c *config) { c.maxFrame = n } }

// WithStartTimeout bounds starting the worker and the ping handshake when
// Start's context has no deadline. Default: DefaultStartTimeout.
func WithStartTimeout(d time.Duration) Option { return func(c *config) { c.startTimeout = d } }

// WithHeartbeat sets a function called, in the connection's read loop, with
// each heartbeat the worker sends while a step runs. It must not block.
func WithHeartbeat(f func(tproxy.Heartbeat)) Option { return func(c *config) { c.onHeartbeat = f } }

// WithTrace sets a function called before every call the client makes, the
// handshake ping included, with the method and params; the function it
// returns, if not nil, is called when the call ends, with the decoded result
// (a pointer to the result type) and the error. Notifications the call
// caused have all been handled by then. For logging and tracing; it must
// not call the client.
func WithTrace(f func(method string, params any) func(result any, err error)) Option {
	return func(c *config) { c.trace = f }
}

// WithHeartbeatTimeout sets how long a pending call may go without hearing
// anything from the worker before the worker is killed and every pending
// call fails with a *SilenceError. Default: DefaultHeartbeatTimeout; d <= 0
// disables the check. Set it well above the worker's heartbeat interval.
func WithHeartbeatTimeout(d time.Duration) Option {
	return func(c *config) { c.heartbeatTimeout = d }
}

// WithCallTimeout bounds every call, on top of its context. Default: none,
// since a step may legitimately run for hours; the heartbeat timeout
// catches a hung worker, RunSpec.Timeout bounds a whole session.
func WithCallTimeout(d time.Duration) Option {
	return func(c *config) { c.callTimeout = d }
}
