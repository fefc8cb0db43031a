package host

import (
	"log/slog"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/logsink"
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
}

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
