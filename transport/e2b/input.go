package e2b

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	processpb "github.com/tproxy/tproxy/internal/e2benvd/process"
)

// maxInputChunk bounds the stdin bytes of one input message.
const maxInputChunk = 1 << 20

// probeTimeout bounds the probe of client streams.
const probeTimeout = 30 * time.Second

// errStdinClosed is what Write returns after CloseWrite or Close.
var errStdinClosed = errors.New("e2b: worker stdin closed")

// input is a worker's stdin.
//
// The ordinary route is one StreamInput call for the whole session: each
// write is one message in that request's body, so a JSON-RPC message
// costs no HTTP request of its own and messages stay in order. A client
// stream can be refused or cut by a proxy, though, and bytes written
// into a stream that was refused are lost without a trace. So at the
// start a probe (a StreamInput call that names the process and ends at
// once) tells whether client streams get through; the first write waits
// for its answer (one round trip, begun when the worker started, so
// usually over by then), and nothing is written into a stream that
// might be refused. If the probe fails, or the stream later breaks,
// every write from then on is a SendInput call, one request each,
// answered only once envd wrote the bytes, so the order holds; the write
// whose message the broken stream did not take is sent again that way.
//
// What a cut stream had taken before it broke cannot be known (there is
// no acknowledgement per message); it is delivered when the proxy
// forwarded it, which is the normal case, and lost otherwise.
type input struct {
	p *process

	mu      sync.Mutex // serializes writes, keepalives and the close
	ctx     context.Context
	cancel  context.CancelFunc // interrupts a write in progress: CloseWrite, Close
	probe   chan struct{}      // closed once the probe has answered
	probeOK bool               // set before probe is closed
	stream  *connect.ClientStreamForClient[processpb.StreamInputRequest, processpb.StreamInputResponse]
	cancelS context.CancelFunc // cancels stream
	unary   bool               // client streams do not get through: SendInput only

	closed  atomic.Bool
	writing atomic.Bool
	bg      sync.WaitGroup
}

func newInput(p *process) *input {
	in := &input{p: p, probe: make(chan struct{})}
	in.ctx, in.cancel = context.WithCancel(p.ctx)
	in.bg.Go(in.runProbe)
	return in
}

func (in *input) start() *processpb.StreamInputRequest {
	return &processpb.StreamInputRequest{Event: &processpb.StreamInputRequest_Start{
		Start: &processpb.StreamInputRequest_StartEvent{Process: pidSelector(in.p.pid)}}}
}

// runProbe makes a complete StreamInput call with no input and records
// whether it succeeded.
func (in *input) runProbe() {
	defer close(in.probe)
	ctx, cancel := context.WithTimeout(in.ctx, probeTimeout)
	defer cancel()
	s := in.p.e.proc.StreamInput(ctx)
	err := s.Send(in.start())
	if err == nil {
		_, err = s.CloseAndReceive()
	} else {
		s.CloseAndReceive()
	}
	in.probeOK = err == nil
	if err != nil && in.ctx.Err() == nil && in.p.c.t.Logger != nil {
		in.p.c.t.Logger.Warn("e2b: the sandbox's StreamInput was refused; stdin goes by SendInput, one request per write",
			"sandbox", in.p.sb.ID, "err", in.p.c.secrets.maskErr(envdError("StreamInput", err)))
	}
}

// write sends b, in chunks of at most maxInputChunk.
func (in *input) write(b []byte) (int, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed.Load() {
		return 0, errStdinClosed
	}
	in.writing.Store(true)
	defer in.writing.Store(false)
	n := 0
	for len(b) > 0 {
		chunk := b[:min(len(b), maxInputChunk)]
		if err := in.send(chunk); err != nil {
			if in.ctx.Err() != nil {
				err = fmt.Errorf("%w: %w", errStdinClosed, err)
			}
			return n, fmt.Errorf("e2b: writing to the worker's stdin: %w", err)
		}
		n += len(chunk)
		b = b[len(chunk):]
	}
	return n, nil
}

// send sends one chunk by the route the probe and the stream's health
// allow; in.mu is held.
func (in *input) send(chunk []byte) error {
	if in.useStream() {
		if in.stream == nil {
			var sctx context.Context
			sctx, in.cancelS = context.WithCancel(in.ctx)
			in.stream = in.p.e.proc.StreamInput(sctx)
			if err := in.stream.Send(in.start()); err != nil {
				in.broken(err)
				return in.p.e.sendInput(in.ctx, in.p.pid, chunk)
			}
			in.watch(in.stream)
		}
		err := in.stream.Send(&processpb.StreamInputRequest{Event: &processpb.StreamInputRequest_Data{
			Data: &processpb.StreamInputRequest_DataEvent{Input: &processpb.ProcessInput{Input: &processpb.ProcessInput_Stdin{Stdin: chunk}}}}})
		if err == nil {
			return nil
		}
		if in.ctx.Err() != nil {
			return err
		}
		// The stream did not take this message: it goes by SendInput.
		in.broken(err)
	}
	return in.p.e.sendInput(in.ctx, in.p.pid, chunk)
}

// useStream reports whether a write may go into the input stream: the
// probe said client streams pass, and no stream has broken.
func (in *input) useStream() bool {
	if in.unary {
		return false
	}
	select {
	case <-in.probe:
	case <-in.ctx.Done():
		return false // the write fails either way
	}
	if !in.probeOK {
		in.unary = true
		return false
	}
	return true
}

// watch notices a stream the server or a proxy ended while it was idle:
// a healthy input stream gets its answer only when the client ends it,
// so an answer before that means it is gone, and the next write must not
// go into it.
func (in *input) watch(s *connect.ClientStreamForClient[processpb.StreamInputRequest, processpb.StreamInputResponse]) {
	conn, err := s.Conn()
	if err != nil {
		return
	}
	in.bg.Go(func() {
		conn.ResponseHeader() // returns once the answer (or the failure) is in
		in.mu.Lock()
		defer in.mu.Unlock()
		if in.stream == s && !in.closed.Load() && in.ctx.Err() == nil {
			in.broken(errors.New("the input stream was ended by the other side"))
		}
	})
}

// broken gives up on the input stream after a failed Send or an early
// answer, and routes every later write through SendInput. The stream is
// cancelled rather than closed: a stream the other side has given up on
// may never answer a close.
func (in *input) broken(cause error) {
	s, cancel := in.stream, in.cancelS
	in.stream, in.cancelS, in.unary = nil, nil, true
	cancel()
	in.bg.Go(func() { s.CloseAndReceive() }) // returns at once, cancelled; Close waits for it
	if l := in.p.c.t.Logger; l != nil {
		l.Warn("e2b: the worker's input stream broke; stdin goes on by SendInput, one request per write",
			"sandbox", in.p.sb.ID, "err", in.p.c.secrets.maskErr(envdError("StreamInput", cause)))
	}
}

// keepalive sends a keepalive on the input stream, so that proxies do
// not drop it while idle; a write in progress is traffic enough.
func (in *input) keepalive() {
	if !in.mu.TryLock() {
		return
	}
	defer in.mu.Unlock()
	if in.closed.Load() || in.stream == nil {
		return
	}
	err := in.stream.Send(&processpb.StreamInputRequest{Event: &processpb.StreamInputRequest_Keepalive{
		Keepalive: &processpb.StreamInputRequest_KeepAlive{}}})
	if err != nil && in.ctx.Err() == nil {
		in.broken(err)
	}
}

// close ends the input: later writes fail, a write in progress is cut
// short with an error, and the input stream is closed, waiting up to
// timeout for envd to answer that it has written everything (zero: not
// at all). The worker's stdin itself stays open: CloseStdin closes it.
func (in *input) close(timeout time.Duration) {
	in.closed.Store(true)
	if in.writing.Load() || timeout <= 0 {
		in.cancel() // first: it unblocks a stuck write
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.stream == nil {
		return
	}
	s, cancel := in.stream, in.cancelS
	in.stream, in.cancelS = nil, nil
	defer cancel()
	t := time.AfterFunc(timeout, cancel)
	defer t.Stop()
	s.CloseAndReceive()
}

// wait waits for the probe and any stream being closed; Close calls it
// after cancelling the process's context.
func (in *input) wait() {
	in.cancel()
	in.bg.Wait()
}
