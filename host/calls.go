package host

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/check"
	"github.com/tproxy/tproxy/internal/wire"
	"github.com/tproxy/tproxy/transport"
)

// exitGrace is how long a failed call waits for the worker's exit status
// once the connection is gone, so the error can say how the worker ended.
const exitGrace = 500 * time.Millisecond

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
	return c.execStep(ctx, p, nil)
}

// execStep is ExecStep, waiting for the worker's answer to the cancel
// when ctx ends: settle, if not nil, gives the context of that wait. The
// answer says how the step ended (a cancelled step's duration, its
// artifacts); when the wait ends first, the error is errUnsettled.
func (c *Client) execStep(ctx context.Context, p tproxy.ExecStepParams, settle func() (context.Context, context.CancelFunc)) (*tproxy.ExecStepResult, error) {
	var res tproxy.ExecStepResult
	if err := c.flushAfter(c.callSettled(ctx, settle, tproxy.MethodExecStep, p, &res)); err != nil {
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

func (c *Client) call(ctx context.Context, method string, params, result any) error {
	return c.callSettled(ctx, nil, method, params, result)
}

// errUnsettled is the error of a call whose caller gave up and whose
// answer to the cancel did not come while the caller's settle context
// lasted.
var errUnsettled = errors.New("the worker did not answer the cancel in time")

func (c *Client) callSettled(ctx context.Context, settle func() (context.Context, context.CancelFunc), method string, params, result any) error {
	if c.cfg.trace == nil {
		return c.callRaw(ctx, settle, method, params, result)
	}
	done := c.cfg.trace(method, params)
	err := c.callRaw(ctx, settle, method, params, result)
	if done != nil {
		done(result, err)
	}
	return err
}

func (c *Client) callRaw(ctx context.Context, settle func() (context.Context, context.CancelFunc), method string, params, result any) error {
	ctx, cancel := c.withCallTimeout(ctx)
	defer cancel()
	defer c.callStarted()()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("tproxy/host: %s: %w", method, err)
	}
	id := jsonrpc2.ID{Num: c.nextID.Add(1)}
	call, err := c.dispatch(ctx, method, params, id)
	sent := err == nil
	var raw json.RawMessage
	if sent {
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
	case wire.IsEncodeError(err):
		return fmt.Errorf("tproxy/host: %s: encoding params: %w", method, err)
	case errors.As(err, &fe) && fe.Op == "write":
		// Refused before anything was written: the connection is intact.
		return fmt.Errorf("tproxy/host: %s: %w", method, err)
	case errors.As(err, &rpcErr):
		return remoteError(method, rpcErr)
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		if c.inputBroken() {
			return fmt.Errorf("tproxy/host: %s: %w", method, err)
		}
		c.cancel(id)
		if settle == nil || !sent {
			return fmt.Errorf("tproxy/host: %s: %w", method, err)
		}
		return c.settle(settle, call, method, result, err)
	default:
		return fmt.Errorf("tproxy/host: %s: %w", method, c.closedErr(err))
	}
}

// settle waits, within the context settle gives, for the worker's answer
// to a call whose caller gave up (cause) and that was cancelled. An
// answer, a result or an error, is returned as a call's would be; when
// none comes in time the error wraps errUnsettled and cause.
func (c *Client) settle(settle func() (context.Context, context.CancelFunc), call jsonrpc2.Waiter, method string, result any, cause error) error {
	sctx, cancel := settle()
	defer cancel()
	var raw json.RawMessage
	err := call.Wait(sctx, &raw)
	var rpcErr *jsonrpc2.Error
	switch {
	case err == nil:
		if result == nil {
			return nil
		}
		return decodeResult(method, raw, result)
	case errors.As(err, &rpcErr):
		return remoteError(method, rpcErr)
	case sctx.Err() != nil:
		return fmt.Errorf("tproxy/host: %s: %w: %w", method, errUnsettled, cause)
	}
	return fmt.Errorf("tproxy/host: %s: %w", method, c.closedErr(err))
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

func remoteError(method string, e *jsonrpc2.Error) error {
	re := &RemoteError{Method: method, Code: e.Code, Message: e.Message}
	if e.Data != nil {
		re.Data = *e.Data
	}
	if e.Code == tproxy.CodeInvalidConfig {
		return configError(re) // a *tproxy.ManifestError: nothing ran
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
