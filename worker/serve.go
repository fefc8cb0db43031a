package worker

import (
	"context"
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
)

// server is one connection's runtime. The read loop (server.read) answers
// ping and $/cancelRequest at once and queues every other request; an
// executor goroutine runs the queue in arrival order, so session state is
// touched by one goroutine at a time and a cancel is never stuck behind the
// step it cancels. The executor runs only while there is work, and the read
// loop runs on Serve's goroutine when the connection's reads can be
// interrupted (see serve): an idle session then costs no goroutine beyond
// the one that called Serve.
type server struct {
	w      *Worker
	rwc    io.ReadWriteCloser
	stream *tproxy.Stream
	log    *slog.Logger
	ctx    context.Context // the connection's; ends when Serve ends
	cancel context.CancelFunc
	conn   *rpcConn

	mu       sync.Mutex
	queue    []*job
	running  bool // an executor goroutine is running
	stopped  bool // serve is ending: start no executor
	execWG   sync.WaitGroup
	inflight map[jsonrpc2.ID]context.CancelFunc
	busy     int  // jobs queued or running
	eof      bool // the host closed its end
	drained  chan struct{}
	readErr  error

	closeRead func() error // the connection's CloseRead, if reads are on serve's goroutine
	closeOnce sync.Once
	stopClose func() bool // stops ctx's end from closing the connection

	sess session   // the executor's
	tail batchSink // the executor's: notifications to send with the reply

	onMasker func(*tproxy.Masker)   // told the session's masker; may be nil
	beatStep atomic.Pointer[string] // the step a heartbeat names, if any
}

func (s *server) setMasker(m *tproxy.Masker) {
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
	stream := tproxy.NewStream(rwc, w.MaxFrameSize)
	return &server{
		w:        w,
		rwc:      rwc,
		stream:   stream,
		tail:     batchSink{max: stream.MaxFrameSize()},
		log:      w.logger(),
		inflight: map[jsonrpc2.ID]context.CancelFunc{},
		drained:  make(chan struct{}),
	}
}

// serve reads and handles the host's messages until the connection ends.
// A connection with a CloseRead method (transport.InMemory's, a TCP or Unix
// socket) is read on this goroutine: the end of ctx closes the connection
// and interrupts the read with CloseRead. Any other (the process's stdin,
// whose blocking read nothing interrupts) is read on a goroutine of its
// own, so that serve can return when ctx ends; that goroutine ends when its
// read fails.
func (s *server) serve(ctx context.Context) error {
	// The read loop runs under this frame for the whole session, so the
	// work before and after it is in open and shut: an idle session's
	// stack is then small enough for the runtime to shrink (see
	// Stream.ReadFrame).
	if s.open(ctx) {
		s.read()
	} else {
		go s.read()
		<-s.conn.done
	}
	return s.shut()
}

// open sets the connection up and reports whether to read it on serve's
// goroutine.
func (s *server) open(ctx context.Context) (inline bool) {
	s.ctx, s.cancel = context.WithCancel(ctx)
	s.conn = &rpcConn{stream: s.stream, async: s.w.AsyncNotify, done: make(chan struct{})}
	cr, inline := s.rwc.(interface{ CloseRead() error })
	if inline {
		s.closeRead = cr.CloseRead
	}
	s.stopClose = context.AfterFunc(s.ctx, s.close) // as jsonrpc2's Conn does
	return inline
}

// shut ends the session once reading has ended: the connection is closed
// (by the time shut returns, whoever began closing it), the calls in
// flight are cancelled and waited for, the session's directory removed.
func (s *server) shut() error {
	s.stopClose()
	s.close()
	s.cancel()
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	s.execWG.Wait()
	s.stream.Flush() // a queued heartbeat's writer, if any, has ended
	s.sess.removeDir(s.log)

	s.mu.Lock()
	err := s.readErr
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("tproxy/worker: reading from host: %w", err)
	}
	return nil
}

// close closes the connection: nothing more is written, the host reads
// EOF, and a read in progress on serve's goroutine is interrupted.
func (s *server) close() {
	s.closeOnce.Do(func() {
		close(s.conn.done)
		s.rwc.Close()
		if s.closeRead != nil {
			s.closeRead()
		}
	})
}

// read reads the host's messages and handles them in arrival order until
// a read fails or the connection is closed, then closes the connection.
// Requests in the common shape (tproxy.ParseRequest) are taken as they
// are; any other frame is decoded by decodeMessage. A frame that is not a
// request is answered as docs/protocol.md section 12 says, and reading
// goes on. When the host closes its end, read closes the connection only
// once every request already received has been answered.
func (s *server) read() {
	for {
		frame, err := s.stream.ReadFrame()
		if err == nil {
			req, ok := tproxy.ParseRequest(frame)
			if !ok {
				var bad *badMessage
				if req, bad = decodeMessage(frame); bad != nil {
					s.refuse(bad, frame)
					continue
				}
			}
			if req != nil && s.handle(req) {
				// This goroutine runs the request it just read,
				// with no hand-off; a new one reads on.
				go s.read()
				s.execute()
				return
			}
			continue
		}
		if errors.Is(err, tproxy.ErrFrameTooLarge) && !s.conn.closed() {
			// The stream skipped the frame without buffering it and
			// can go on.
			var fe *tproxy.FrameError
			errors.As(err, &fe)
			s.refuse(&badMessage{code: tproxy.CodeInvalidRequest, msg: fmt.Sprintf(
				"invalid request: the frame is %d bytes, over this worker's cap of %d", fe.Size, fe.Limit)}, nil)
			continue
		}
		if !s.conn.closed() {
			s.readEnded(err)
		}
		s.close()
		return
	}
}

// refuse answers a frame that is not a request, and logs it.
func (s *server) refuse(bad *badMessage, frame []byte) {
	s.log.Warn("tproxy/worker: refused a message from the host", "code", bad.code, "reason", bad.msg,
		"frame", truncate(frame, 200))
	id := jsonrpc2.ID{}
	if bad.id != nil {
		id = *bad.id
	}
	err := s.conn.replyError(bad.id != nil, id, &jsonrpc2.Error{Code: bad.code, Message: bad.msg})
	if err != nil && !s.conn.closed() {
		s.log.Error("tproxy/worker: sending a response failed", "err", err)
	}
}

func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "..."
}

// readEnded records why reading ended and, at the end of the host's input,
// waits until every request received has been answered.
func (s *server) readEnded(err error) {
	s.mu.Lock()
	s.eof = true
	if !errors.Is(err, io.EOF) {
		s.readErr = err
	}
	if s.busy == 0 {
		s.closeDrainedLocked()
	}
	s.mu.Unlock()
	if !errors.Is(err, io.EOF) {
		s.log.Error("tproxy/worker: protocol error from host; closing the connection", "err", err)
		return
	}
	select {
	case <-s.drained:
	case <-s.ctx.Done():
	}
}

func (s *server) closeDrainedLocked() {
	select {
	case <-s.drained:
	default:
		close(s.drained)
	}
}

// handle handles one request. It runs in the read loop, and reports
// whether the read loop's goroutine is to run the executor.
func (s *server) handle(req *jsonrpc2.Request) (runExecutor bool) {
	if req.Notif {
		if req.Method == tproxy.MethodCancelRequest {
			s.cancelRequest(req)
		}
		return false
	}
	if req.Method == tproxy.MethodPing {
		res, err := s.ping(req.Params)
		s.reply(req.ID, res, err, nil)
		return false
	}
	jctx, cancel := context.WithCancel(s.ctx)
	j := &job{ctx: jctx, cancel: cancel, req: req}
	s.mu.Lock()
	s.inflight[req.ID] = cancel
	s.queue = append(s.queue, j)
	s.busy++
	start := !s.running && !s.stopped
	if start {
		s.running = true
		s.execWG.Add(1)
	}
	s.mu.Unlock()
	if !start {
		return false
	}
	if s.closeRead == nil {
		// Reading is on a goroutine of its own: that goroutine runs the
		// executor and starts another to read (read does both), so the
		// request starts at once on the thread that read it, and the
		// new goroutine's start-up is off the request's path. Serve's
		// own goroutine, when it reads, stays the reader.
		return true
	}
	go s.execute()
	return false
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
// Once the connection's ctx has ended, what is left is answered as
// cancelled at once.
func (s *server) execute() {
	defer s.execWG.Done()
	for {
		s.mu.Lock()
		if len(s.queue) == 0 {
			s.running = false
			s.mu.Unlock()
			return
		}
		j := s.queue[0]
		s.queue[0] = nil
		s.queue = s.queue[1:]
		s.mu.Unlock()
		// Beat from the start of the request to the end of its reply, so
		// that the host can tell a slow request (a big step, a big
		// result to encode) from a hung worker.
		stopBeat := s.heartbeats(s.ctx)
		res, err := s.dispatch(j)
		s.reply(j.req.ID, res, err, s.tail.take())
		stopBeat()
		s.beatStep.Store(nil)
		j.cancel()
		s.mu.Lock()
		delete(s.inflight, j.req.ID)
		s.busy--
		if s.busy == 0 && s.eof {
			s.closeDrainedLocked()
		}
		s.mu.Unlock()
	}
}

func (s *server) dispatch(j *job) (any, error) {
	if err := j.ctx.Err(); err != nil {
		return nil, errCancelled(j.req.Method)
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
		if !errors.As(err, &rpcErr) || rpcErr.Code == tproxy.CodeStepFailed {
			return nil, errCancelled(j.req.Method)
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

func errCancelled(method string) *jsonrpc2.Error {
	return &jsonrpc2.Error{Code: tproxy.CodeRequestCancelled, Message: method + " cancelled by the host"}
}

// reply sends the response to request id, after tail: notifications
// already encoded, which go out in the same write as a successful
// response. A result that cannot be encoded, or is over the frame cap, is
// answered with an internal error instead, so that the host is not left
// waiting.
func (s *server) reply(id jsonrpc2.ID, res any, err error, tail []byte) {
	if s.conn.closed() {
		return
	}
	var sendErr error
	if err == nil {
		n := len(tail)
		buf, encErr := tproxy.AppendResponse(tail, id, res)
		switch {
		case encErr != nil:
			err = &jsonrpc2.Error{Code: tproxy.CodeInternalError, Message: fmt.Sprintf("encoding the result: %v", encErr)}
		case len(buf)-n-1 > s.stream.MaxFrameSize():
			err = &jsonrpc2.Error{Code: tproxy.CodeInternalError,
				Message: fmt.Sprintf("the result is %d bytes, over the frame cap of %d", len(buf)-n-1, s.stream.MaxFrameSize())}
			tail = buf[:n]
		default:
			// What conn.Reply writes, without its re-encoding of the result.
			sendErr = s.stream.WriteFrames(buf)
		}
	}
	if err != nil {
		if len(tail) > 0 {
			sendErr = s.stream.WriteFrames(tail)
		}
		var rpcErr *jsonrpc2.Error
		if !errors.As(err, &rpcErr) {
			rpcErr = &jsonrpc2.Error{Code: tproxy.CodeInternalError, Message: err.Error()}
		}
		sendErr = errors.Join(sendErr, s.conn.ReplyWithError(s.ctx, id, rpcErr))
	}
	if sendErr != nil && !errors.Is(sendErr, jsonrpc2.ErrClosed) && !s.conn.closed() {
		s.log.Error("tproxy/worker: sending a response failed", "id", id.String(), "err", sendErr)
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
