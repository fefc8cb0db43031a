package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/wire"
	"github.com/tproxy/tproxy/transport"
)

// Client is the host's connection to one worker: typed calls for the
// protocol's methods, with the worker's notifications written to the sink
// in wire order as they arrive. Methods are safe for concurrent use; the
// worker runs calls one at a time in arrival order.
type Client struct {
	cfg    config
	proc   transport.Process
	conn   *jsonrpc2.Conn
	stream *wire.Stream // conn's
	info   tproxy.PingResult

	nextID    atomic.Uint64
	dropped   atomic.Int64 // notifications that broke the protocol: see dropNotification
	skipped   atomic.Int64 // lines before the protocol began: see skippedLine
	lastBeat  atomic.Int64 // unix nanoseconds
	lastHeard atomic.Int64 // when the last message from the worker arrived: see heard
	wd        watchdog

	mu      sync.Mutex
	readErr error // first frame the worker sent that broke the protocol
	sinkErr error // first failure to persist a notification
	closing bool
	broken  bool // a write outlived its caller's deadline: stdin is closed
	// silenceErr is set when the watchdog killed a silent worker.
	silenceErr *SilenceError

	raw      wire.RawFunc  // the sink's raw-event entry point, if it has one
	rawEvent wire.RawEvent // the read loop's, reused for every event

	bg        sync.WaitGroup // cancel notifications being sent, a silent worker being killed
	closeOnce sync.Once
	closeErr  error
}

// Start starts a worker through t, connects to it, and performs the ping
// handshake. ctx bounds the start and the handshake (DefaultStartTimeout
// if it has no deadline); the worker then lives until Close.
func Start(ctx context.Context, t transport.Transport, opts ...Option) (*Client, error) {
	cfg := config{logger: slog.Default(), startTimeout: DefaultStartTimeout, heartbeatTimeout: DefaultHeartbeatTimeout}
	for _, o := range opts {
		o(&cfg)
	}
	if _, ok := ctx.Deadline(); !ok && cfg.startTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.startTimeout)
		defer cancel()
	}
	proc, err := t.Start(ctx)
	if err != nil {
		return nil, fmt.Errorf("tproxy/host: starting the worker: %w", err)
	}
	if cfg.started != nil {
		cfg.started(proc)
	}
	c := &Client{cfg: cfg, proc: proc}
	c.raw, _ = wire.RawOf(cfg.sink)
	stream := &hostStream{c: c, s: wire.NewStream(proc, cfg.maxFrame)}
	c.stream = stream.s
	c.conn = jsonrpc2.NewConn(context.Background(), stream, handler{c}, jsonrpc2.SetLogger(debugLogger{cfg.logger}))

	res, err := c.Ping(ctx, "handshake")
	if err == nil && res.Protocol != tproxy.ProtocolVersion {
		err = &VersionError{Host: tproxy.ProtocolVersion, Worker: res.Protocol}
	}
	if err != nil {
		if ctx.Err() != nil {
			// The caller's deadline has passed: the ladder's graceful
			// rungs would overrun it by seconds.
			c.kill()
		}
		c.Close()
		return nil, err
	}
	c.info = *res
	if cfg.heartbeatTimeout > 0 {
		c.watch(cfg.heartbeatTimeout)
	}
	return c, nil
}

// Worker returns the worker's answer to the handshake ping: its protocol
// version, name, version and drivers.
func (c *Client) Worker() tproxy.PingResult { return c.info }

// Process returns the running worker, for its exit status and stderr.
func (c *Client) Process() transport.Process { return c.proc }

// Done is closed once the connection to the worker is closed, by Close, by
// the worker's exit, or by a protocol violation.
func (c *Client) Done() <-chan struct{} { return c.conn.DisconnectNotify() }

// LastHeartbeat returns when the last heartbeat arrived, or the zero time.
func (c *Client) LastHeartbeat() time.Time {
	n := c.lastBeat.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// Close ends the connection and the worker: it closes the worker's stdin,
// lets the transport's shutdown ladder end the process, and flushes the
// sink. It is idempotent and returns the same error every time.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closing = true
		c.mu.Unlock()
		c.stopWatch()
		c.conn.Close()
		err := c.proc.Close()
		c.bg.Wait()
		c.closeErr = errors.Join(err, c.flushSink())
	})
	return c.closeErr
}

// breakInput closes the worker's stdin to end a write it does not read.
func (c *Client) breakInput() {
	c.mu.Lock()
	c.broken = true
	c.mu.Unlock()
	c.cfg.logger.Warn("tproxy/host: the worker stopped reading its input; closing it")
	c.proc.CloseWrite()
}

func (c *Client) inputBroken() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.broken
}

// kill ends the worker at once if its transport can.
func (c *Client) kill() {
	if k, ok := c.proc.(transport.Killer); ok {
		k.Kill()
	}
}

// flushAfter flushes the sink after a call and reports a persistence
// failure, which outranks the call's own success.
func (c *Client) flushAfter(callErr error) error {
	err := c.flushSink()
	if err == nil {
		return callErr
	}
	return errors.Join(callErr, err)
}

func (c *Client) flushSink() error {
	c.mu.Lock()
	sinkErr := c.sinkErr
	c.mu.Unlock()
	if sinkErr != nil {
		return &SinkError{Op: "persisting the worker's events", Err: sinkErr}
	}
	if c.cfg.sink == nil {
		return nil
	}
	if err := c.cfg.sink.Flush(); err != nil {
		return &SinkError{Op: "flushing the sink", Err: err}
	}
	return nil
}

// noteSinkErr keeps the first failure to persist a notification, which
// the next call reports.
func (c *Client) noteSinkErr(err error) {
	if err == nil {
		return
	}
	c.mu.Lock()
	if c.sinkErr == nil {
		c.sinkErr = err
	}
	c.mu.Unlock()
}
