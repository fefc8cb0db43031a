package host

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/check"
	"github.com/tproxy/tproxy/internal/wire"
	"github.com/tproxy/tproxy/logsink"
	"github.com/tproxy/tproxy/transport"
)

// exitGrace is how long a failed call waits for the worker's exit status
// once the connection is gone, so the error can say how the worker ended.
const exitGrace = 500 * time.Millisecond

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

	rawEvent wire.RawEvent // the read loop's, reused for every event
	metric   tproxy.Metric // the read loop's, reused for every metric

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
	c := &Client{cfg: cfg, proc: proc}
	stream := &hostStream{c: c, s: wire.NewStream(proc, cfg.maxFrame)}
	stream.raw, _ = cfg.sink.(logsink.RawEventSink)
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

// Ping asks the worker to echo data.
func (c *Client) Ping(ctx context.Context, data string) (*tproxy.PingResult, error) {
	var res tproxy.PingResult
	if err := c.call(ctx, tproxy.MethodPing, tproxy.PingParams{Data: data, Protocol: tproxy.ProtocolVersion}, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// Prepare opens the session in the worker.
func (c *Client) Prepare(ctx context.Context, p tproxy.PrepareParams) (*tproxy.PrepareResult, error) {
	var res tproxy.PrepareResult
	if err := c.flushAfter(c.call(ctx, tproxy.MethodPrepare, p, &res)); err != nil {
		return nil, err
	}
	if res.SessionID != p.SessionID {
		return nil, mismatch(tproxy.MethodPrepare, "session_id", res.SessionID, p.SessionID)
	}
	return &res, nil
}

// ExecStep runs one step in the worker. When it returns, every event and
// metric the step emitted has been written to the sink and flushed. A step
// that failed in the worker is a *StepError.
func (c *Client) ExecStep(ctx context.Context, p tproxy.ExecStepParams) (*tproxy.ExecStepResult, error) {
	var res tproxy.ExecStepResult
	if err := c.flushAfter(c.call(ctx, tproxy.MethodExecStep, p, &res)); err != nil {
		var se *StepError
		if errors.As(err, &se) && se.StepID == "" {
			se.StepID = p.StepID // the worker's failure data did not name it
		}
		return nil, err
	}
	if res.StepID != p.StepID {
		return nil, mismatch(tproxy.MethodExecStep, "step_id", res.StepID, p.StepID)
	}
	return &res, nil
}

// Cleanup ends the session in the worker.
func (c *Client) Cleanup(ctx context.Context) (*tproxy.CleanupResult, error) {
	var res tproxy.CleanupResult
	if err := c.flushAfter(c.call(ctx, tproxy.MethodCleanup, struct{}{}, &res)); err != nil {
		return nil, err
	}
	return &res, nil
}

// FetchArtifact copies artifact a of step stepID from the worker to w, in
// chunks of tproxy.DefaultArtifactChunk over the connection, so it works
// over every transport. It refuses a path that is not a clean relative
// path, and checks that the bytes match a.Size and a.SHA256; a mismatch is
// an *ArtifactError (w has then received bytes that must be discarded).
func (c *Client) FetchArtifact(ctx context.Context, stepID string, a tproxy.Artifact, w io.Writer) error {
	if err := check.ArtifactPath(a.Path); err != nil {
		return &ArtifactError{StepID: stepID, Path: a.Path, Reason: err.Error()}
	}
	h := sha256.New()
	var n int64
	for {
		var res tproxy.FetchArtifactResult
		p := tproxy.FetchArtifactParams{StepID: stepID, Path: a.Path, Offset: n, Length: tproxy.DefaultArtifactChunk}
		if err := c.call(ctx, tproxy.MethodFetchArtifact, p, &res); err != nil {
			return err
		}
		n += int64(len(res.Data))
		if n > a.Size {
			return &ArtifactError{StepID: stepID, Path: a.Path,
				Reason: fmt.Sprintf("the worker sent more than the %d bytes it listed", a.Size)}
		}
		h.Write(res.Data)
		if _, err := w.Write(res.Data); err != nil {
			return fmt.Errorf("tproxy/host: artifact %q of step %q: %w", a.Path, stepID, err)
		}
		if res.EOF {
			break
		}
		if len(res.Data) == 0 {
			return &ArtifactError{StepID: stepID, Path: a.Path, Reason: "the worker sent an empty chunk before the end"}
		}
	}
	if n != a.Size {
		return &ArtifactError{StepID: stepID, Path: a.Path, Reason: fmt.Sprintf("got %d bytes, the worker listed %d", n, a.Size)}
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != a.SHA256 {
		return &ArtifactError{StepID: stepID, Path: a.Path, Reason: fmt.Sprintf("sha256 %s does not match the listed %s", got, a.SHA256)}
	}
	return nil
}

// Call calls a method the worker registered with worker.Handle, decoding
// the result into result (a pointer, or nil to discard it).
func (c *Client) Call(ctx context.Context, method string, params, result any) error {
	return c.flushAfter(c.call(ctx, method, params, result))
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

func (c *Client) call(ctx context.Context, method string, params, result any) error {
	if c.cfg.trace == nil {
		return c.callRaw(ctx, method, params, result)
	}
	done := c.cfg.trace(method, params)
	err := c.callRaw(ctx, method, params, result)
	if done != nil {
		done(result, err)
	}
	return err
}

func (c *Client) callRaw(ctx context.Context, method string, params, result any) error {
	ctx, cancel := c.withCallTimeout(ctx)
	defer cancel()
	defer c.callStarted()()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("tproxy/host: %s: %w", method, err)
	}
	id := jsonrpc2.ID{Num: c.nextID.Add(1)}
	call, err := c.dispatch(ctx, method, params, id)
	var raw json.RawMessage
	if err == nil {
		// The silence clock starts once the request is written: writing
		// a big one takes as long as the worker takes to read it.
		c.heard()
		err = call.Wait(ctx, &raw)
	}
	if err == nil {
		if result == nil {
			return nil
		}
		return decodeResult(method, raw, result)
	}
	var (
		rpcErr *jsonrpc2.Error
		fe     *tproxy.FrameError
	)
	switch {
	case isEncodeError(err):
		return fmt.Errorf("tproxy/host: %s: encoding params: %w", method, err)
	case errors.As(err, &fe) && fe.Op == "write":
		// Refused before anything was written: the connection is intact.
		return fmt.Errorf("tproxy/host: %s: %w", method, err)
	case errors.As(err, &rpcErr):
		return remoteError(method, rpcErr)
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		if !c.inputBroken() {
			c.cancel(id)
		}
		return fmt.Errorf("tproxy/host: %s: %w", method, err)
	default:
		return fmt.Errorf("tproxy/host: %s: %w", method, c.closedErr(err))
	}
}

// isEncodeError reports whether err is encoding/json's refusal to encode
// a value: jsonrpc2 returns it before writing anything.
func isEncodeError(err error) bool {
	var (
		ute *json.UnsupportedTypeError
		uve *json.UnsupportedValueError
		me  *json.MarshalerError
	)
	return errors.As(err, &ute) || errors.As(err, &uve) || errors.As(err, &me)
}

// dispatch writes the request, bounded by ctx. A worker that stops reading
// its stdin (or ssh, or E2B's input stream, that stops passing it on)
// would otherwise hold the call in write(2) for ever, heartbeats and all.
// When ctx ends and the write is still blocked writeGrace later, the
// worker's stdin is closed, which fails the write: the connection is then
// unusable (a frame was cut short) and the shutdown ladder, run by Close,
// ends the worker. The grace keeps a write that was about to complete
// (the worker is reading) from costing the connection.
func (c *Client) dispatch(ctx context.Context, method string, params any, id jsonrpc2.ID) (jsonrpc2.Waiter, error) {
	written, decided := make(chan struct{}), make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(decided)
		t := time.NewTimer(writeGrace)
		defer t.Stop()
		select {
		case <-written:
		case <-t.C:
			c.breakInput()
		}
	})
	call, err := c.conn.DispatchCall(ctx, method, params, jsonrpc2.PickID(id))
	close(written)
	if !stop() {
		<-decided
		if c.inputBroken() {
			return call, fmt.Errorf("the worker did not read the request before the deadline; its input is closed: %w", ctx.Err())
		}
	}
	return call, err
}

// writeGrace is how long a write may stay blocked after its caller's
// deadline before the worker's input is closed to end it.
const writeGrace = 100 * time.Millisecond

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

func remoteError(method string, e *jsonrpc2.Error) error {
	re := &RemoteError{Method: method, Code: e.Code, Message: e.Message}
	if e.Data != nil {
		re.Data = *e.Data
	}
	if e.Code == tproxy.CodeStepFailed {
		// The code alone says the step failed (docs/protocol.md section
		// 7); the data adds what the worker sent of the details.
		var f tproxy.StepFailure
		json.Unmarshal(re.Data, &f) // what decodes is kept
		se := &StepError{StepID: f.StepID, ErrorType: f.ErrorType, Message: f.Message, Remote: re}
		if se.ErrorType == "" {
			se.ErrorType = "unknown"
		}
		if se.Message == "" {
			se.Message = e.Message
		}
		return se
	}
	return re
}

// cancel tells the worker the caller gave up on request id. It does not
// wait: the worker may not be reading.
func (c *Client) cancel(id jsonrpc2.ID) {
	c.bg.Add(1)
	go func() {
		defer c.bg.Done()
		err := c.conn.Notify(context.Background(), tproxy.MethodCancelRequest, struct {
			ID jsonrpc2.ID `json:"id"`
		}{id})
		if err != nil {
			c.cfg.logger.Debug("tproxy/host: sending $/cancelRequest failed", "id", id.String(), "err", err)
		}
	}()
}

// closedErr explains why the connection is gone.
func (c *Client) closedErr(cause error) error {
	c.mu.Lock()
	readErr, closing, silence := c.readErr, c.closing, c.silenceErr
	c.mu.Unlock()
	if silence != nil {
		t := time.NewTimer(exitGrace)
		defer t.Stop()
		select {
		case <-c.proc.Done(): // the watchdog killed it
			return fmt.Errorf("%w: %w (%w)", ErrClosed, silence, transport.NewExitError(c.proc))
		case <-t.C:
			return fmt.Errorf("%w: %w", ErrClosed, silence)
		}
	}
	if readErr != nil {
		return fmt.Errorf("%w: %w", ErrClosed, &ProtocolError{Err: readErr})
	}
	if closing {
		return ErrClosed
	}
	t := time.NewTimer(exitGrace)
	defer t.Stop()
	select {
	case <-c.proc.Done():
		return fmt.Errorf("%w: %w", ErrClosed, transport.NewExitError(c.proc))
	case <-t.C:
	}
	if errors.Is(cause, jsonrpc2.ErrClosed) {
		return ErrClosed
	}
	return fmt.Errorf("%w: %w", ErrClosed, cause)
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

// handler is the client's jsonrpc2.Handler: it runs in the connection's
// read loop, so notifications are handled one at a time in wire order, and
// all of a call's notifications before the call's response. The streaming
// notifications in their common shape never get here (see
// hostStream.ReadObject).
type handler struct{ c *Client }

func (h handler) Handle(ctx context.Context, conn *jsonrpc2.Conn, req *jsonrpc2.Request) {
	if !req.Notif {
		conn.ReplyWithError(ctx, req.ID, &jsonrpc2.Error{Code: tproxy.CodeMethodNotFound,
			Message: fmt.Sprintf("the host serves no methods (got %q)", req.Method)})
		return
	}
	var params json.RawMessage
	if req.Params != nil {
		params = *req.Params
	}
	h.c.notification(ctx, req.Method, params)
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

func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "..."
}

// hostStream records the first frame error, so calls can report a protocol
// violation rather than a bare closed connection, and closes only the
// worker's stdin when jsonrpc2 closes it: ending the worker is Close's job.
type hostStream struct {
	c *Client
	s *wire.Stream

	raw logsink.RawEventSink // the sink, if it takes events as parsed from the wire

	// Read loop only: whether a valid message arrived, and the banner
	// skipped before it.
	started                  bool
	bannerLines, bannerBytes int
}

// ReadObject reads the next message for jsonrpc2. The streaming
// notifications (event, metric, log, heartbeat) in their common shape
// never reach jsonrpc2, whose decoding builds maps: they are handled here,
// in the read loop and in wire order like every message, and ReadObject
// goes on to the next frame. A response is only returned after every
// notification the worker sent before it has been handled.
func (h *hostStream) ReadObject(v any) error {
	for {
		frame, err := h.s.ReadFrame()
		if err == nil {
			h.c.heard()
			// The fast paths only take well-formed protocol messages.
			if h.raw != nil && wire.ParseEventNotification(frame, &h.c.rawEvent) {
				h.started = true
				h.c.eventRaw(context.Background(), h.raw, frame)
				continue
			}
			if method, params, ok := wire.ParseNotification(frame); ok {
				h.started = true
				h.c.notification(context.Background(), method, params)
				continue
			}
			if unsentID(frame) {
				h.started = true
				h.c.cfg.logger.Debug("tproxy/host: dropped a response to an id this host never sends", "frame", truncate(frame, 200))
				continue
			}
			err = wire.DecodeFrame(frame, v)
			if h.banner(frame, err) {
				continue
			}
		}
		return h.readErr(err)
	}
}

// unsentID reports whether frame is a response whose id is a number this
// host never sends (negative, fractional, beyond uint64): valid JSON-RPC
// that answers no call, dropped like a response to an unknown id, where
// jsonrpc2 would refuse to decode it and end the session.
func unsentID(frame []byte) bool {
	var m struct {
		ID     json.RawMessage `json:"id"`
		Method json.RawMessage `json:"method"`
		Result json.RawMessage `json:"result"`
		Error  json.RawMessage `json:"error"`
	}
	if json.Unmarshal(frame, &m) != nil || m.Method != nil || m.Result == nil && m.Error == nil || len(m.ID) == 0 {
		return false
	}
	if c := m.ID[0]; c != '-' && (c < '0' || c > '9') {
		return false // a string or null: jsonrpc2 takes those
	}
	var id jsonrpc2.ID
	return json.Unmarshal(m.ID, &id) != nil
}

// Limits of the output a worker may write before its first protocol
// message (a shell's banner, a login message) that is skipped.
const (
	maxBannerLines = 100
	maxBannerBytes = 64 << 10
)

// banner reports whether frame, which decoded with err, is to be skipped
// as output before the protocol started: until the worker's first valid
// message, lines that are not JSON-RPC are logged and skipped, within
// maxBannerLines and maxBannerBytes. After it, every such line is a
// protocol violation.
func (h *hostStream) banner(frame []byte, err error) bool {
	if h.started {
		return false
	}
	if err == nil {
		h.started = true
		return false
	}
	var fe *tproxy.FrameError
	if !errors.As(err, &fe) {
		return false
	}
	h.bannerLines++
	h.bannerBytes += len(frame)
	if h.bannerLines > maxBannerLines || h.bannerBytes > maxBannerBytes {
		return false
	}
	h.c.skippedLine(frame, fe.Reason)
	return true
}

// readErr records the first frame error and turns a read error from a
// dying worker into the end of the stream.
func (h *hostStream) readErr(err error) error {
	var fe *tproxy.FrameError
	if err != nil && errors.As(err, &fe) {
		h.c.mu.Lock()
		if h.c.readErr == nil {
			h.c.readErr = err
		}
		h.c.mu.Unlock()
	}
	if err != nil && !errors.Is(err, io.EOF) && fe == nil {
		// A read error from a dying worker is the end of the stream.
		return io.EOF
	}
	return err
}

// WriteObject writes what jsonrpc2 sends: requests, and error replies to
// requests from the worker, which the host does not serve.
func (h *hostStream) WriteObject(v any) error { return h.s.WriteObject(v) }

func (h *hostStream) Close() error { return h.c.proc.CloseWrite() }

// debugLogger routes jsonrpc2's own messages to the logger at debug level.
type debugLogger struct{ l *slog.Logger }

func (d debugLogger) Printf(format string, v ...any) {
	d.l.Debug(fmt.Sprintf(format, v...))
}
