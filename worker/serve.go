package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/mask"
	"github.com/tproxy/tproxy/internal/wire"
)

// server is one connection's runtime. jsonrpc2's Conn reads the host's
// messages and writes the responses; server.readObject, under it, frames
// the input and answers what is not a request (docs/protocol.md section
// 12) without handing it on. The handler (server.Handle) answers ping and
// $/cancelRequest at once and queues every other request; an executor
// goroutine runs the queue in arrival order, so session state is touched
// by one goroutine at a time, cleanup never overlaps a step still winding
// down, and a cancel is never stuck behind the step it cancels. The
// executor runs only while there is work. Notifications take the fast
// lane (lane), straight to the Stream, which keeps them in order with the
// responses Conn writes through it.
//
// A session ends in two stages. halt ends the work: whatever stopped the
// session (the end of the host's input, a failed write to the host, the
// end of Serve's ctx, which is SIGTERM in a worker process), the request
// running is cancelled and those queued are answered as cancelled without
// running. close then ends the connection, once every request has been
// answered or the worker's stop grace has passed, whichever is first.
type server struct {
	w      *Worker
	rwc    io.ReadWriteCloser
	stream *wire.Stream
	log    *slog.Logger
	ctx    context.Context // the connection's; ends when Serve ends
	cancel context.CancelFunc
	work   context.Context // the requests' parent; ends when the session stops
	stop   context.CancelFunc
	conn   *jsonrpc2.Conn
	lane   *lane
	ready  chan struct{} // closed once conn is set
	done   chan struct{} // closed by close

	mu        sync.Mutex
	queue     []*job
	running   bool          // an executor goroutine is running
	stopped   bool          // serve is ending: start no executor
	execDone  chan struct{} // closed by the executor when it ends once stopped
	inflight  map[jsonrpc2.ID]context.CancelFunc
	busy      int   // jobs queued or running
	stopCause error // why the session stopped; nil while it runs
	stopBy    time.Time
	drained   chan struct{} // closed once stopped with nothing left to answer
	readErr   error
	writeErr  error    // the first failed write to the host
	dir       string   // the session directory, for shut when the executor is stuck
	dirLock   *os.File // the directory's owner file, locked while it is in use

	closeOnce   sync.Once
	closeIOOnce sync.Once
	stopClose   func() bool // stops ctx's end from closing the connection

	sess session // the executor's

	onMasker func(*mask.Masker)     // told the session's masker; may be nil
	beatStep atomic.Pointer[string] // the step a heartbeat names, if any
}

func (s *server) setMasker(m *mask.Masker) {
	if s.onMasker != nil {
		s.onMasker(m)
	}
}

type job struct {
	ctx    context.Context
	cancel context.CancelFunc
	req    *jsonrpc2.Request
}

func newServer(w *Worker, rwc io.ReadWriteCloser) *server {
	s := &server{
		w:        w,
		rwc:      rwc,
		log:      w.logger(),
		inflight: map[jsonrpc2.ID]context.CancelFunc{},
		drained:  make(chan struct{}),
		ready:    make(chan struct{}),
		done:     make(chan struct{}),
	}
	s.stream = wire.NewStream(watchedWrites{rwc, s.writeFailed}, w.MaxFrameSize)
	s.lane = &lane{stream: s.stream, async: w.AsyncNotify, done: s.done}
	return s
}

// watchedWrites reports the connection's failed writes to onErr.
type watchedWrites struct {
	io.ReadWriteCloser
	onErr func(error)
}

func (c watchedWrites) Write(p []byte) (int, error) {
	n, err := c.ReadWriteCloser.Write(p)
	if err != nil {
		c.onErr(err)
	}
	return n, err
}

// errHostClosed is why a session stops when the host closes its end.
var errHostClosed = errors.New("the host closed the worker's input")

// errServeEnded is why a session stops when nothing else stopped it first.
var errServeEnded = errors.New("the worker is shutting down")

// writeFailed stops the session on a failed write to the host (EPIPE: the
// host is gone, or closed its end of the worker's output). Nothing more
// can reach the host, so the connection is closed at once.
func (s *server) writeFailed(err error) {
	if s.closed() {
		return // our own close interrupted the write
	}
	s.mu.Lock()
	if s.writeErr == nil {
		s.writeErr = err
	}
	s.mu.Unlock()
	s.log.Warn("tproxy/worker: writing to the host failed; stopping", "err", err)
	s.halt(fmt.Errorf("writing to the host failed: %w", err))
	s.close()
}

// serve serves the connection until it ends. The end of ctx stops the
// session, then closes the connection, which interrupts the read in
// progress.
func (s *server) serve(ctx context.Context) error {
	// The connection outlives ctx by the stop grace, so that the step
	// cancelled by ctx's end can still be answered; its values pass on.
	s.ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.work, s.stop = context.WithCancel(s.ctx)
	s.conn = jsonrpc2.NewConn(s.ctx, objectStream{s}, s, jsonrpc2.SetLogger(debugLogger{s.log}))
	close(s.ready)
	s.stopClose = context.AfterFunc(ctx, func() {
		cause := context.Cause(ctx)
		if cause == context.Canceled {
			cause = errServeEnded
		}
		s.halt(cause)
		s.closeWhenAnswered()
	})
	<-s.conn.DisconnectNotify()
	return s.shut()
}

// shut ends the session once the connection has ended: the calls in
// flight are cancelled and waited for, up to the stop grace, and the
// session's directory is removed.
func (s *server) shut() error {
	s.stopClose()
	s.halt(errServeEnded)
	s.close()
	s.mu.Lock()
	s.stopped = true
	idle := !s.running
	if !idle {
		s.execDone = make(chan struct{})
	}
	execDone, by := s.execDone, s.stopBy
	s.mu.Unlock()
	if !idle && !waitUntil(execDone, by) {
		// A driver ignores its cancelled context. It is abandoned: in a
		// worker process, the process exits under it.
		s.log.Error("tproxy/worker: a request still runs after the stop grace; abandoning it",
			"grace", s.w.stopGrace())
	}
	s.cancel()
	s.stream.Flush() // a queued heartbeat's writer, if any, has ended
	if idle || chanClosed(execDone) {
		s.removeSessionDir()
	} else {
		s.removeDirOf() // the session is still the executor's
	}

	s.mu.Lock()
	rerr, werr := s.readErr, s.writeErr
	s.mu.Unlock()
	if rerr != nil {
		return fmt.Errorf("tproxy/worker: reading from host: %w", rerr)
	}
	if werr != nil {
		return fmt.Errorf("tproxy/worker: writing to host: %w", werr)
	}
	return nil
}

// halt stops the session's work, once, for cause: the request running is
// cancelled and those queued will be answered as cancelled. The stop
// grace starts now.
func (s *server) halt(cause error) {
	s.mu.Lock()
	if s.stopCause != nil {
		s.mu.Unlock()
		return
	}
	s.stopCause = cause
	s.stopBy = time.Now().Add(s.w.stopGrace())
	if s.busy == 0 {
		s.closeDrainedLocked()
	}
	s.mu.Unlock()
	s.stop()
}

// closeWhenAnswered closes the connection once the session has stopped
// and every request received has been answered, or once the stop grace
// has passed.
func (s *server) closeWhenAnswered() {
	s.mu.Lock()
	by := s.stopBy
	s.mu.Unlock()
	timer := time.NewTimer(time.Until(by))
	select {
	case <-s.drained:
	case <-s.done:
	case <-timer.C:
		s.log.Warn("tproxy/worker: closing the connection with a request unanswered after the stop grace",
			"grace", s.w.stopGrace())
	}
	timer.Stop()
	s.close()
}

// waitUntil waits for ch to close until deadline, and reports whether it
// did.
func waitUntil(ch <-chan struct{}, deadline time.Time) bool {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-ch:
		return true
	case <-timer.C:
		return false
	}
}

func chanClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// close closes the connection: nothing more is written, the host reads
// EOF, and the read in progress is interrupted.
func (s *server) close() {
	s.closeOnce.Do(func() {
		close(s.done)
		<-s.ready
		s.conn.Close()
		s.closeIO()
	})
}

func (s *server) closed() bool { return chanClosed(s.done) }

// closeIO closes the connection's byte stream; jsonrpc2 does it too, on
// close and at the end of reading.
func (s *server) closeIO() error {
	var err error
	s.closeIOOnce.Do(func() {
		err = s.rwc.Close()
		if cr, ok := s.rwc.(interface{ CloseRead() error }); ok {
			// An in-memory pipe's Close ends only its write side.
			cr.CloseRead()
		}
	})
	return err
}

// objectStream is the server's jsonrpc2.ObjectStream.
type objectStream struct{ s *server }

func (o objectStream) ReadObject(v any) error  { return o.s.readObject(v) }
func (o objectStream) WriteObject(v any) error { return o.s.stream.WriteObject(v) }
func (o objectStream) Close() error            { return o.s.closeIO() }

// readObject reads the host's next request for jsonrpc2. A frame that is
// not a request is answered as docs/protocol.md section 12 says, and
// reading goes on; a response is dropped (the worker makes no calls).
// When the host closes its end, the session stops, and readObject returns
// the end of the stream only once every request already received has been
// answered (as cancelled, unless it completed first), or the stop grace
// has passed: jsonrpc2 writes nothing once reading has ended.
func (s *server) readObject(v any) error {
	<-s.ready
	for {
		frame, err := s.stream.ReadFrame()
		if err == nil {
			req, bad := decodeMessage(frame)
			if bad == nil && req != nil {
				if err := json.Unmarshal(frame, v); err != nil {
					bad = &badMessage{code: tproxy.CodeInvalidRequest, msg: "invalid request: " + err.Error(), id: reqID(req)}
				}
			}
			if bad != nil {
				s.refuse(bad, frame)
				continue
			}
			if req == nil {
				continue // a response
			}
			return nil
		}
		if errors.Is(err, tproxy.ErrFrameTooLarge) && !s.closed() {
			// The stream skipped the frame without buffering it and
			// can go on.
			var fe *tproxy.FrameError
			errors.As(err, &fe)
			s.refuse(&badMessage{code: tproxy.CodeInvalidRequest, msg: fmt.Sprintf(
				"invalid request: the frame is %d bytes, over this worker's cap of %d", fe.Size, fe.Limit)}, nil)
			continue
		}
		if !s.closed() {
			s.readEnded(err)
		}
		return err
	}
}

func reqID(req *jsonrpc2.Request) *jsonrpc2.ID {
	if req.Notif {
		return nil
	}
	return &req.ID
}

// refuse answers a frame that is not a request, and logs it.
func (s *server) refuse(bad *badMessage, frame []byte) {
	s.log.Warn("tproxy/worker: refused a message from the host", "code", bad.code, "reason", bad.msg,
		"frame", truncate(frame, 200))
	err := s.lane.replyError(bad.id, &jsonrpc2.Error{Code: bad.code, Message: bad.msg})
	if err != nil && !s.closed() {
		s.log.Error("tproxy/worker: sending a response failed", "err", err)
	}
}

func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "..."
}

// readEnded records why reading ended, stops the session and waits until
// every request received has been answered, up to the stop grace.
func (s *server) readEnded(err error) {
	cause := errHostClosed
	if !errors.Is(err, io.EOF) {
		s.mu.Lock()
		s.readErr = err
		s.mu.Unlock()
		s.log.Error("tproxy/worker: protocol error from host; closing the connection", "err", err)
		cause = fmt.Errorf("reading from the host failed: %w", err)
	}
	s.halt(cause)
	s.closeWhenAnswered()
}

func (s *server) closeDrainedLocked() {
	select {
	case <-s.drained:
	default:
		close(s.drained)
	}
}

// Handle implements jsonrpc2.Handler. It runs in jsonrpc2's read loop:
// ping is answered and $/cancelRequest applied at once, and every other
// request is queued for the executor.
func (s *server) Handle(_ context.Context, _ *jsonrpc2.Conn, req *jsonrpc2.Request) {
	if req.Notif {
		if req.Method == tproxy.MethodCancelRequest {
			s.cancelRequest(req)
		}
		return
	}
	if req.Method == tproxy.MethodPing {
		res, err := s.ping(req.Params)
		s.reply(req.ID, res, err)
		return
	}
	jctx, cancel := context.WithCancel(s.work)
	j := &job{ctx: jctx, cancel: cancel, req: req}
	s.mu.Lock()
	s.inflight[req.ID] = cancel
	s.queue = append(s.queue, j)
	s.busy++
	start := !s.running && !s.stopped
	if start {
		s.running = true
	}
	s.mu.Unlock()
	if start {
		go s.execute()
	}
}

func (s *server) cancelRequest(req *jsonrpc2.Request) {
	var p struct {
		ID jsonrpc2.ID `json:"id"`
	}
	if req.Params == nil || json.Unmarshal(*req.Params, &p) != nil {
		s.log.Warn("tproxy/worker: malformed $/cancelRequest ignored")
		return
	}
	s.mu.Lock()
	cancel := s.inflight[p.ID]
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// execute runs queued requests one at a time until the queue is empty.
// Once the session has stopped, what is left is answered as cancelled at
// once.
func (s *server) execute() {
	defer s.removeDirOnPanic()
	for {
		s.mu.Lock()
		if len(s.queue) == 0 {
			s.running = false
			if s.execDone != nil {
				close(s.execDone)
			}
			s.mu.Unlock()
			return
		}
		j := s.queue[0]
		s.queue[0] = nil
		s.queue = s.queue[1:]
		s.mu.Unlock()
		// Beat while the request runs, so that the host can tell a slow
		// request from a hung worker. The beats stop, a beat being
		// written included, before the reply is written: none follows
		// the response, which the host may not read (once Close began,
		// a write to it fails).
		stopBeat := s.heartbeats(s.ctx)
		res, err := s.dispatch(j)
		stopBeat()
		s.beatStep.Store(nil)
		s.reply(j.req.ID, res, err)
		j.cancel()
		s.mu.Lock()
		delete(s.inflight, j.req.ID)
		s.busy--
		if s.busy == 0 && s.stopCause != nil {
			s.closeDrainedLocked()
		}
		s.mu.Unlock()
	}
}

func (s *server) dispatch(j *job) (any, error) {
	// A stop cancels every request's context, one after another: the
	// request before this one may have seen it before this one's is
	// cancelled. The stop's cause is set before any is.
	s.mu.Lock()
	stopping := s.stopCause != nil
	s.mu.Unlock()
	if stopping || j.ctx.Err() != nil {
		return nil, s.errCancelled(j.req.Method)
	}
	var params json.RawMessage
	if j.req.Params != nil {
		params = *j.req.Params
	}
	var (
		res any
		err error
	)
	switch j.req.Method {
	case tproxy.MethodPrepare:
		res, err = s.prepare(j.ctx, params)
	case tproxy.MethodExecStep:
		res, err = s.execStep(j.ctx, params)
	case tproxy.MethodCleanup:
		res, err = s.cleanup(j.ctx)
	case tproxy.MethodFetchArtifact:
		res, err = s.fetchArtifact(j.ctx, params)
	default:
		h := s.w.methods[j.req.Method]
		if h == nil {
			return nil, &jsonrpc2.Error{Code: tproxy.CodeMethodNotFound, Message: fmt.Sprintf("method %q not found", j.req.Method)}
		}
		res, err = callHandler(j.ctx, h, params)
	}
	if err != nil && j.ctx.Err() != nil && s.ctx.Err() == nil {
		var rpcErr *jsonrpc2.Error
		if !errors.As(err, &rpcErr) || rpcErr.Code == tproxy.CodeStepFailed && !failedBeforeCancel(rpcErr) {
			e := s.errCancelled(j.req.Method)
			if rpcErr != nil {
				// A cancelled step's failure lists the artifacts it left,
				// which the host still fetches (docs/protocol.md section 7).
				e.Data = rpcErr.Data
			}
			return nil, e
		}
	}
	return res, err
}

func callHandler(ctx context.Context, h Handler, params json.RawMessage) (res any, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &jsonrpc2.Error{Code: tproxy.CodeInternalError, Message: fmt.Sprintf("handler panicked: %v", p)}
		}
	}()
	return h(ctx, params)
}

// failedBeforeCancel reports whether a step failure's error type is not
// cancelled: the step had failed on its own when its cancellation came,
// so its failure stands. A cancelled exec_step's -32800 carries a failure
// of error type cancelled only (docs/protocol.md section 7).
func failedBeforeCancel(e *jsonrpc2.Error) bool {
	if e.Data == nil {
		return false
	}
	var f struct {
		ErrorType string `json:"error_type"`
	}
	return json.Unmarshal(*e.Data, &f) == nil && f.ErrorType != tproxy.ErrorTypeCancelled
}

// errCancelled is the answer to a cancelled request: by $/cancelRequest,
// or by the session's stop, whose cause it names.
func (s *server) errCancelled(method string) *jsonrpc2.Error {
	s.mu.Lock()
	cause := s.stopCause
	s.mu.Unlock()
	if cause != nil {
		return &jsonrpc2.Error{Code: tproxy.CodeRequestCancelled, Message: method + " cancelled: " + cause.Error()}
	}
	return &jsonrpc2.Error{Code: tproxy.CodeRequestCancelled, Message: method + " cancelled by the host"}
}

// reply sends the response to request id, with whatever notifications
// the runtime held to go out with it (see lane.hold). A result that cannot
// be encoded, or is over the frame cap, is answered with an internal error
// instead, so that the host is not left waiting.
func (s *server) reply(id jsonrpc2.ID, res any, err error) {
	if s.closed() {
		return
	}
	var sendErr error
	if err == nil {
		sendErr = s.conn.Reply(s.ctx, id, res)
		var fe *tproxy.FrameError
		switch {
		case wire.IsEncodeError(sendErr):
			err = &jsonrpc2.Error{Code: tproxy.CodeInternalError, Message: fmt.Sprintf("encoding the result: %v", sendErr)}
			sendErr = nil
		case errors.As(sendErr, &fe) && errors.Is(fe, tproxy.ErrFrameTooLarge):
			// Refused before anything was written.
			err = &jsonrpc2.Error{Code: tproxy.CodeInternalError,
				Message: fmt.Sprintf("the result is over the frame cap of %d (the response is %d bytes)", fe.Limit, fe.Size)}
			sendErr = nil
		}
	}
	if err != nil {
		rpcErr := s.rpcError(err)
		sendErr = s.conn.ReplyWithError(s.ctx, id, rpcErr)
		if errors.Is(sendErr, tproxy.ErrFrameTooLarge) {
			// A long message or large data is sent cut short rather
			// than not at all: the request is answered.
			sendErr = s.conn.ReplyWithError(s.ctx, id, &jsonrpc2.Error{Code: rpcErr.Code, Message: truncate([]byte(rpcErr.Message), 100)})
		}
	}
	if sendErr != nil && !errors.Is(sendErr, jsonrpc2.ErrClosed) && !s.closed() {
		s.log.Error("tproxy/worker: sending a response failed", "id", id.String(), "err", sendErr)
	}
}

// rpcError is the JSON-RPC error that answers err.
func (s *server) rpcError(err error) *jsonrpc2.Error {
	var (
		rpcErr *jsonrpc2.Error
		we     *Error
	)
	switch {
	case errors.As(err, &rpcErr):
		return rpcErr
	case errors.As(err, &we):
		rpcErr = &jsonrpc2.Error{Code: we.Code, Message: we.Message}
		if we.Data != nil {
			data, dataErr := json.Marshal(we.Data)
			if dataErr != nil {
				s.log.Error("tproxy/worker: encoding an error's data failed; sent without it", "err", dataErr)
			} else {
				rpcErr.Data = (*json.RawMessage)(&data)
			}
		}
		return rpcErr
	default:
		return &jsonrpc2.Error{Code: tproxy.CodeInternalError, Message: err.Error()}
	}
}

func (s *server) ping(params *json.RawMessage) (*tproxy.PingResult, error) {
	var p tproxy.PingParams
	if params != nil {
		if err := json.Unmarshal(*params, &p); err != nil {
			return nil, invalidParams("ping", err)
		}
	}
	return &tproxy.PingResult{
		Status:    "pong",
		Echo:      p.Data,
		Timestamp: time.Now().UTC(),
		Protocol:  tproxy.ProtocolVersion,
		Worker:    s.w.Info(),
	}, nil
}

func invalidParams(method string, err error) *jsonrpc2.Error {
	return &jsonrpc2.Error{Code: tproxy.CodeInvalidParams, Message: fmt.Sprintf("%s: invalid params: %v", method, err)}
}
