package e2b

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tproxy/tproxy/internal/ladder"
	"github.com/tproxy/tproxy/internal/stderrcap"
	"github.com/tproxy/tproxy/transport"
)

// lostCheckTimeout bounds the control-plane lookup that explains a lost
// stream (host.Client waits 500ms for the exit status of a failed call).
const lostCheckTimeout = 400 * time.Millisecond

// maxInputChunk bounds the stdin bytes of one StreamInput envelope.
const maxInputChunk = 1 << 20

// errStdinClosed is what Write returns after CloseWrite or Close.
var errStdinClosed = errors.New("e2b: worker stdin closed")

// Process is a worker running in an E2B sandbox: the [transport.Process]
// an E2B's Start returns. Use a type assertion on the host's Process to
// reach SandboxID, Pid and Timings.
//
// Its stdout is the data events of envd's Start stream, in order, with no
// regard for line boundaries (the host's framing reassembles lines). Its
// stdin is one long-lived StreamInput call: each Write is one envelope in
// that request body, so a JSON-RPC message costs no HTTP request of its
// own and messages stay in order.
type Process struct {
	c      *client
	sb     *sandbox
	pid    uint32
	timing Timings
	stream *eventStream

	ctx    context.Context // lives until Close; bounds every call
	cancel context.CancelFunc

	stdoutR *io.PipeReader
	stdoutW *io.PipeWriter
	stderr  *stderrcap.Capture

	// stdin: envelopes written to inW are the StreamInput request body.
	// wmu serializes writers; closing inW needs no lock and unblocks a
	// writer stuck on a stalled request.
	wmu         sync.Mutex
	inW         *io.PipeWriter
	stdinClosed atomic.Bool
	writing     atomic.Bool   // a Write is under way
	inDone      chan struct{} // the StreamInput call returned

	done    chan struct{} // the end event (or the stream's loss) was handled
	mu      sync.Mutex
	status  transport.ExitStatus
	dropped bool // Close dropped the stream: a lost stream is no surprise

	killed atomic.Bool // Kill was called: Close must be quick too

	closeTimeout, termTimeout, killTimeout time.Duration

	bg             sync.WaitGroup
	closeWriteOnce sync.Once
	closeWriteErr  error
	closeOnce      sync.Once
	closeErr       error
}

var (
	_ transport.Process = (*Process)(nil)
	_ transport.Killer  = (*Process)(nil)
)

// startWorker does everything after the sandbox exists.
func (c *client) startWorker(ctx context.Context, sb *sandbox, sum string, env map[string]string, tm *Timings) (*Process, error) {
	t0 := time.Now()
	uploaded, err := c.ensureWorker(ctx, sb, sum)
	if err != nil {
		return nil, err
	}
	tm.Upload, tm.Uploaded = time.Since(t0), uploaded
	return c.launch(ctx, sb, env, tm)
}

// launch starts the worker, already in place, in sb.
func (c *client) launch(ctx context.Context, sb *sandbox, env map[string]string, tm *Timings) (*Process, error) {
	t0 := time.Now()
	// The stream outlives ctx, which bounds only the start.
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stopStart := context.AfterFunc(ctx, cancel)
	fail := func(err error) (*Process, error) {
		cancel()
		return nil, err
	}
	stream, err := c.startProcess(pctx, sb, startRequest{Process: processConfig{
		Cmd: firstNonEmpty(c.t.RemotePath, DefaultRemotePath), Args: c.t.Args, Envs: env}})
	if err != nil {
		return fail(err)
	}
	ev, err := stream.next()
	for err == nil && ev.Keepalive != nil {
		ev, err = stream.next()
	}
	switch {
	case err != nil:
		stream.Close()
		if err == io.EOF {
			err = errors.New("the stream ended before the process started")
		}
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return fail(fmt.Errorf("e2b: starting the worker: %w", err))
	case ev.Start == nil:
		stream.Close()
		return fail(fmt.Errorf("e2b: starting the worker: the first event is not start: %+v", ev))
	}
	if !stopStart() {
		stream.Close()
		return fail(fmt.Errorf("e2b: starting the worker: %w", ctx.Err()))
	}
	tm.Start = time.Since(t0)

	p := &Process{
		c: c, sb: sb, pid: ev.Start.Pid, timing: *tm, stream: stream,
		ctx: pctx, cancel: cancel,
		stderr:       stderrcap.New(c.t.TailSize, c.t.Stderr, c.t.Logger, slog.String("sandbox", sb.ID)),
		inDone:       make(chan struct{}),
		done:         make(chan struct{}),
		closeTimeout: orDefault(c.t.CloseTimeout, ladder.DefaultCloseTimeout),
		termTimeout:  orDefault(c.t.TermTimeout, ladder.DefaultTermTimeout),
		killTimeout:  orDefault(c.t.KillTimeout, defaultKillTimeout),
	}
	p.stdoutR, p.stdoutW = io.Pipe()
	inR, inW := io.Pipe()
	p.inW = inW
	p.bg.Add(3)
	go p.readEvents()
	go p.streamInput(inR)
	go p.keepAlive()
	return p, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// SandboxID returns the id of the sandbox the worker runs in.
func (p *Process) SandboxID() string { return p.sb.ID }

// Pid returns the worker's process id inside the sandbox.
func (p *Process) Pid() int { return int(p.pid) }

// Timings returns how long the phases of the start took.
func (p *Process) Timings() Timings { return p.timing }

// Read returns the worker's stdout.
func (p *Process) Read(b []byte) (int, error) { return p.stdoutR.Read(b) }

// Write sends b to the worker's stdin as one StreamInput envelope (or a
// few, for a write over 1 MiB). A Write blocked because the worker, or
// envd, stopped reading returns at once with an error when CloseWrite or
// Close is called.
func (p *Process) Write(b []byte) (int, error) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if p.stdinClosed.Load() {
		return 0, errStdinClosed
	}
	p.writing.Store(true)
	defer p.writing.Store(false)
	n := 0
	for len(b) > 0 {
		chunk := b[:min(len(b), maxInputChunk)]
		var msg streamInputRequest
		msg.Data = &struct {
			Input processInput `json:"input"`
		}{processInput{Stdin: chunk}}
		if err := p.writeEnvelope(msg); err != nil {
			return n, p.c.secrets.maskErr(err)
		}
		n += len(chunk)
		b = b[len(chunk):]
	}
	return n, nil
}

// writeEnvelope writes one StreamInput message; wmu must be held.
func (p *Process) writeEnvelope(msg streamInputRequest) error {
	payload, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	if _, err := p.inW.Write(appendEnvelope(nil, 0, payload)); err != nil {
		return fmt.Errorf("e2b: writing to the worker's stdin: %w", err)
	}
	return nil
}

// streamInput runs the StreamInput call for the life of stdin: its
// request body is everything written to inW, starting with the message
// that names the process.
func (p *Process) streamInput(inR *io.PipeReader) {
	defer p.bg.Done()
	defer close(p.inDone)
	var first streamInputRequest
	first.Start = &struct {
		Process processSelector `json:"process"`
	}{processSelector{Pid: p.pid}}
	head, _ := json.Marshal(first)
	body := io.MultiReader(newBytesReader(appendEnvelope(nil, 0, head)), inR)
	h := p.c.envdHeader(p.sb)
	h.Set("Connect-Protocol-Version", "1")
	resp, err := p.c.do(p.ctx, request{op: "envd StreamInput", method: http.MethodPost,
		url: p.c.envdBase(p.sb) + "/process.Process/StreamInput", header: h, ok: []int{http.StatusOK},
		body: func() (io.Reader, string, error) { return body, "application/connect+json", nil }})
	if err == nil {
		er := newEnvelopeReader(resp.Body, false)
		for {
			flags, payload, rerr := er.Next()
			if rerr != nil {
				if rerr != io.EOF {
					err = rerr
				}
				break
			}
			if flags&flagEndStream != 0 {
				err = parseEndStream(payload)
				break
			}
		}
		drain(resp)
	}
	if err == nil {
		err = errStdinClosed
	}
	inR.CloseWithError(err) // pending and later Writes fail
}

// keepAlive refreshes the sandbox's timeout and sends keepalives on the
// input stream until Close.
func (p *Process) keepAlive() {
	defer p.bg.Done()
	refresh := p.c.t.RefreshInterval
	if refresh <= 0 {
		refresh = time.Duration(p.c.t.timeoutSeconds()) * time.Second / 3
	}
	rt := time.NewTicker(refresh)
	defer rt.Stop()
	kt := time.NewTicker(time.Duration(p.c.keepaliveSeconds()) * time.Second)
	defer kt.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-rt.C:
			ctx, cancel := context.WithTimeout(p.ctx, refresh)
			err := p.c.setTimeout(ctx, p.sb.ID, p.c.t.timeoutSeconds())
			cancel()
			if err != nil && p.ctx.Err() == nil && p.c.t.Logger != nil {
				p.c.t.Logger.Warn("e2b: refreshing the sandbox timeout failed", "sandbox", p.sb.ID, "err", err)
			}
		case <-kt.C:
			p.wmu.Lock()
			if !p.stdinClosed.Load() {
				p.writeEnvelope(streamInputRequest{Keepalive: &struct{}{}})
			}
			p.wmu.Unlock()
		}
	}
}

// readEvents turns the Start stream into stdout bytes, stderr capture and,
// at the end, the exit status.
func (p *Process) readEvents() {
	defer p.bg.Done()
	var status transport.ExitStatus
	ended := false
	for !ended {
		ev, err := p.stream.next()
		if err != nil {
			status = p.lost(err)
			break
		}
		switch {
		case ev.Data != nil:
			if len(ev.Data.Stdout) > 0 {
				// Fails only once Close closed the read side: drop.
				p.stdoutW.Write(ev.Data.Stdout)
			}
			if len(ev.Data.Stderr) > 0 {
				p.stderr.Write(ev.Data.Stderr)
			}
		case ev.End != nil:
			status = ev.End.exitStatus()
			ended = true
		}
	}
	p.stderr.Flush()
	status.Reason = p.c.secrets.mask(status.Reason)
	p.mu.Lock()
	p.status = status
	p.mu.Unlock()
	close(p.done)
	p.stdoutW.Close()
	if ended {
		// Consume the end-of-stream envelope that follows the end event,
		// so the connection can be reused; Close's cancel bounds the wait.
		p.stream.next()
	}
	p.stream.Close()
}

// lost explains a stream that ended without an end event.
func (p *Process) lost(err error) transport.ExitStatus {
	p.mu.Lock()
	dropped := p.dropped
	p.mu.Unlock()
	if dropped {
		return transport.ExitStatus{Code: -1, Reason: "e2b: the process stream was dropped by Close before the worker's end was reported"}
	}
	if err == io.EOF {
		err = errors.New("the stream ended without an end event")
	}
	// One quick look, not retried: hosts wait only briefly for Done to
	// explain a failed call.
	ctx, cancel := context.WithTimeout(p.ctx, lostCheckTimeout)
	defer cancel()
	if alive, xerr := p.c.exists(ctx, p.sb.ID); xerr == nil && !alive {
		return transport.ExitStatus{Code: -1, Reason: fmt.Sprintf("e2b: sandbox %s no longer exists (killed or expired); the process stream ended: %v", p.sb.ID, p.c.secrets.maskErr(err))}
	}
	return transport.ExitStatus{Code: -1, Reason: fmt.Sprintf("e2b: lost the worker's output stream: %v", p.c.secrets.maskErr(err))}
}

// Done is closed once the worker's end was reported (or its stream lost)
// and all its output handled.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exit reports how the worker ended, once Done is closed: the end event's
// exit code or signal, as the subprocess transport reports them, or Code
// -1 with a Reason when the stream was lost.
func (p *Process) Exit() transport.ExitStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status
}

// StderrTail returns the last bytes of the worker's stderr.
func (p *Process) StderrTail() string { return p.stderr.Tail() }

// CloseWrite ends the input stream, so every byte written so far reaches
// the worker (waiting up to CloseTimeout for it), then closes the worker's
// stdin with CloseStdin (waiting up to CloseTimeout more). A Write in
// progress returns at once, with an error; as its bytes are cut short
// anyway, CloseWrite then does not wait for the input stream, which a
// worker that stopped reading holds, and goes straight to CloseStdin.
func (p *Process) CloseWrite() error {
	p.closeWriteOnce.Do(func() {
		p.stdinClosed.Store(true)
		interrupted := p.writing.Load()
		p.inW.Close() // first: it unblocks a stuck Write
		if !interrupted {
			t := time.NewTimer(p.closeTimeout)
			defer t.Stop()
			select {
			case <-p.inDone:
			case <-t.C:
			case <-p.done:
			}
		}
		if p.isDone() {
			return // the worker has ended: its stdin is gone
		}
		ctx, cancel := context.WithTimeout(p.ctx, p.closeTimeout)
		defer cancel()
		err := p.c.rpc(ctx, p.sb, "CloseStdin", processRequest{Process: processSelector{Pid: p.pid}}, nil, true)
		if err != nil && !p.isDone() {
			p.closeWriteErr = p.c.secrets.maskErr(err)
		}
	})
	return p.closeWriteErr
}

func (p *Process) isDone() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *Process) waitDone(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
		return true
	case <-t.C:
		return false
	}
}

func (p *Process) signal(sig string) error {
	if p.isDone() {
		return nil
	}
	ctx, cancel := context.WithTimeout(p.ctx, p.termTimeout)
	defer cancel()
	err := p.c.rpc(ctx, p.sb, "SendSignal", processRequest{Process: processSelector{Pid: p.pid}, Signal: sig}, nil, true)
	if err != nil && !p.isDone() {
		return err
	}
	return nil
}

// Close runs the shutdown ladder (stop reading stdout, close stdin, wait
// CloseTimeout, SIGTERM, wait TermTimeout, SIGKILL, wait KillTimeout, drop
// the stream) and then kills the sandbox, waiting at most 30s for the
// control plane, or at most E2B.CleanupGrace after Kill: a host kills a worker when it cannot wait
// (its deadline has passed, the worker went silent), and Close must not
// make it wait 30s more. Output the host has not read when Close starts
// is discarded. It returns nil whatever the worker's exit status; an error
// means the ladder or the sandbox kill failed (the sandbox then expires
// by its timeout, no longer refreshed, or Sweep finds it).
func (p *Process) Close() error {
	p.closeOnce.Do(func() {
		var errs []error
		l := ladder.Ladder{
			Done: p.done,
			StopReading: func() error {
				// Nobody reads any more; a blocked delivery must not
				// stall the end event.
				p.stdoutR.CloseWithError(io.ErrClosedPipe)
				return nil
			},
			CloseInput:   p.CloseWrite,
			CloseTimeout: p.closeTimeout,
			Terminate:    func() error { return p.signal("SIGNAL_SIGTERM") },
			TermTimeout:  p.termTimeout,
			Kill:         func() error { return p.signal("SIGNAL_SIGKILL") },
			KillTimeout:  p.killTimeout,
		}
		exit, err := l.Run()
		if err != nil {
			errs = append(errs, err)
		}
		if exit == ladder.Running {
			// Cancelling the stream's context is what reliably unblocks
			// a read of an HTTP/1 response body.
			p.mu.Lock()
			p.dropped = true
			p.mu.Unlock()
			p.cancel()
			<-p.done
		}
		limit := sandboxKillTimeout
		if p.killed.Load() {
			limit = p.c.t.cleanupGrace()
		}
		ctx, cancel := context.WithTimeout(context.Background(), limit)
		if err := p.c.kill(ctx, p.sb.ID); err != nil {
			errs = append(errs, err)
		}
		cancel()
		p.cancel()
		p.stdinClosed.Store(true)
		p.inW.Close()
		p.bg.Wait()
		p.closeErr = p.c.secrets.maskErr(errors.Join(errs...))
	})
	return p.closeErr
}

// Kill implements transport.Killer: it sends SIGKILL to the worker through
// the sandbox's daemon and waits up to KillTimeout for the end event, then
// drops the stream. Close still kills the sandbox, waiting at most
// E2B.CleanupGrace for it.
func (p *Process) Kill() error {
	p.killed.Store(true)
	err := p.signal("SIGNAL_SIGKILL")
	if !p.waitDone(p.killTimeout) {
		p.mu.Lock()
		p.dropped = true
		p.mu.Unlock()
		p.cancel()
		<-p.done
	}
	return p.c.secrets.maskErr(err)
}
