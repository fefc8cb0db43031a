package e2b

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	processpb "github.com/tproxy/tproxy/internal/e2benvd/process"
	"github.com/tproxy/tproxy/internal/ladder"
	"github.com/tproxy/tproxy/internal/stderrcap"
	"github.com/tproxy/tproxy/transport"
)

// lostCheckTimeout bounds the control-plane lookup that explains a lost
// stream (host.Client waits 500ms for the exit status of a failed call).
const lostCheckTimeout = 400 * time.Millisecond

// drainWait is how long Close waits, before it sends CloseStdin, for the
// backlog of a worker whose output the host had stopped reading to move:
// output backed up behind an unread stdout often ends with the worker's
// exit, and CloseStdin to a process that has ended gets a 404. Close
// waits on while the backlog drains (within CloseTimeout), and stops
// waiting once it has not moved for drainWait.
const drainWait = 100 * time.Millisecond

// process is a worker running in an E2B sandbox: the transport.Process
// that E2B.Start and Pool.Start return.
//
// Its stdout is the data events of envd's Start stream, in order, with no
// regard for line boundaries (the host's framing reassembles lines). Its
// stdin is one long-lived StreamInput call once a probe has shown that
// client streams get through, and SendInput calls until then, or for good
// when they do not (see input).
type process struct {
	c      *client
	e      *envd
	sb     *sandbox
	pid    uint32
	stream *connect.ServerStreamForClient[processpb.StartResponse]

	ctx    context.Context // lives until Close; bounds every call
	cancel context.CancelFunc

	stdoutR *io.PipeReader
	stdoutW *io.PipeWriter
	stderr  *stderrcap.Capture
	in      *input

	done       chan struct{} // the end event (or the stream's loss) was handled
	ended      chan struct{} // closed when the end event was received
	delivering atomic.Bool   // readEvents is handing stdout to the host
	received   atomic.Int64  // messages of the Start stream received
	backlog    atomic.Bool   // it was, when Close began
	mu         sync.Mutex
	status     transport.ExitStatus
	dropped    bool // Close dropped the stream: a lost stream is no surprise
	gone       bool // the sandbox no longer exists
	info       Info

	killed atomic.Bool // Kill was called: Close must be quick too

	closeTimeout, termTimeout, killTimeout time.Duration

	bg             sync.WaitGroup
	closeWriteOnce sync.Once
	closeWriteErr  error
	closeOnce      sync.Once
	closeErr       error
}

var (
	_ transport.Process = (*process)(nil)
	_ transport.Killer  = (*process)(nil)
)

// startWorker does everything after the sandbox exists: the envd version
// check, the worker and the input files, the worker's start.
func (c *client) startWorker(ctx context.Context, sb *sandbox, w workerSource, files []inputFile, env map[string]string, info Info) (*process, error) {
	if err := c.checkEnvd(sb); err != nil {
		return nil, err
	}
	e := c.envd(sb)
	t0 := time.Now()
	if err := e.prepare(ctx, w, files, &info); err != nil {
		return nil, err
	}
	info.Upload = time.Since(t0)
	return c.launch(ctx, e, w.remote, env, info)
}

// prepare puts the worker and the input files into the sandbox.
func (e *envd) prepare(ctx context.Context, w workerSource, files []inputFile, info *Info) error {
	if w.baked {
		info.Worker = workerInTemplate
		if err := e.checkBaked(ctx, w.remote); err != nil {
			return err
		}
	} else {
		n, err := e.ensureWorker(ctx, w)
		if err != nil {
			return err
		}
		info.Worker, info.BytesUploaded = workerFound, n
		if n > 0 {
			info.Worker = workerUploaded
		}
	}
	n, err := e.putFiles(ctx, files)
	info.BytesUploaded += n
	return err
}

// launch starts the worker, already in place, in e's sandbox.
func (c *client) launch(ctx context.Context, e *envd, cmd string, env map[string]string, info Info) (*process, error) {
	sb := e.sb
	t0 := time.Now()
	// The stream outlives ctx, which bounds only the start, and carries no
	// deadline: envd would make it the worker's.
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stopStart := context.AfterFunc(ctx, cancel)
	fail := func(err error) (*process, error) {
		cancel()
		return nil, err
	}
	stream, err := e.proc.Start(pctx, e.startRequest(&processpb.StartRequest{
		Process: &processpb.ProcessConfig{Cmd: cmd, Args: c.t.Args, Envs: env}}))
	if err != nil {
		return fail(fmt.Errorf("e2b: starting the worker: %w", envdError("Start", err)))
	}
	var start *processpb.ProcessEvent_StartEvent
	for start == nil && stream.Receive() {
		switch ev := stream.Msg().GetEvent().GetEvent().(type) {
		case *processpb.ProcessEvent_Start:
			start = ev.Start
		case *processpb.ProcessEvent_Keepalive:
		default:
			stream.Close()
			return fail(fmt.Errorf("e2b: starting the worker: the first event is not start: %v", stream.Msg()))
		}
	}
	if start == nil {
		err := stream.Err()
		stream.Close()
		switch {
		case ctx.Err() != nil:
			err = ctx.Err()
		case err == nil:
			err = errors.New("the stream ended before the process started")
		default:
			err = envdError("Start", err)
		}
		return fail(fmt.Errorf("e2b: starting the worker: %w", err))
	}
	if !stopStart() {
		stream.Close()
		return fail(fmt.Errorf("e2b: starting the worker: %w", ctx.Err()))
	}
	info.Start = time.Since(t0)
	info.SandboxID, info.EnvdVersion, info.Pid, info.Created = sb.ID, sb.EnvdVersion, int(start.GetPid()), sb.created
	if sb.TemplateID != "" {
		info.Template = sb.TemplateID
	}

	p := &process{
		c: c, e: e, sb: sb, pid: start.GetPid(), info: info, stream: stream,
		ctx: pctx, cancel: cancel,
		stderr:       stderrcap.New(c.t.TailSize, c.t.Stderr, c.t.Logger, slog.String("sandbox", sb.ID)),
		done:         make(chan struct{}),
		ended:        make(chan struct{}),
		closeTimeout: orDefault(c.t.CloseTimeout, ladder.DefaultCloseTimeout),
		termTimeout:  orDefault(c.t.TermTimeout, ladder.DefaultTermTimeout),
		killTimeout:  orDefault(c.t.KillTimeout, defaultKillTimeout),
	}
	p.stdoutR, p.stdoutW = io.Pipe()
	p.in = newInput(p)
	p.bg.Add(2)
	go p.readEvents()
	go p.keepAlive()
	return p, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Read returns the worker's stdout.
func (p *process) Read(b []byte) (int, error) { return p.stdoutR.Read(b) }

// Write sends b to the worker's stdin (see input.write). A Write blocked
// because the worker, or envd, stopped reading returns at once with an
// error when CloseWrite or Close is called.
func (p *process) Write(b []byte) (int, error) {
	n, err := p.in.write(b)
	return n, p.c.secrets.maskErr(err)
}

// readEvents turns the Start stream into stdout bytes, stderr capture and,
// at the end, the exit status.
func (p *process) readEvents() {
	defer p.bg.Done()
	var status transport.ExitStatus
	ended := false
loop:
	for p.stream.Receive() {
		p.received.Add(1)
		switch ev := p.stream.Msg().GetEvent().GetEvent().(type) {
		case *processpb.ProcessEvent_Data:
			if b := ev.Data.GetStdout(); len(b) > 0 {
				// Fails only once Close closed the read side: drop.
				p.delivering.Store(true)
				p.stdoutW.Write(b)
				p.delivering.Store(false)
			}
			if b := ev.Data.GetStderr(); len(b) > 0 {
				p.stderr.Write(b)
			}
		case *processpb.ProcessEvent_End:
			close(p.ended)
			status = exitStatus(ev.End)
			ended = true
			break loop
		}
	}
	if !ended {
		status = p.lost(p.stream.Err())
	}
	p.stderr.Flush()
	status.Reason = p.c.secrets.mask(status.Reason)
	p.mu.Lock()
	p.status = status
	p.mu.Unlock()
	close(p.done)
	p.stdoutW.Close()
	if ended {
		// Read on to the end-of-stream message, so that envd sees a
		// complete call and the connection can be reused; Close's cancel
		// bounds the wait.
		for p.stream.Receive() {
		}
	}
	p.stream.Close()
}

// lost explains a stream that ended without an end event.
func (p *process) lost(err error) transport.ExitStatus {
	p.mu.Lock()
	dropped, gone := p.dropped, p.gone
	p.mu.Unlock()
	if err == nil {
		err = errors.New("the stream ended without an end event")
	}
	if gone {
		return transport.ExitStatus{Code: -1, Reason: fmt.Sprintf("e2b: sandbox %s no longer exists (killed or expired)", p.sb.ID)}
	}
	if dropped {
		return transport.ExitStatus{Code: -1, Reason: "e2b: the process stream was dropped by Close before the worker's end was reported"}
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

// sandboxGone records that the sandbox no longer exists and drops the
// output stream, whose end event will never come: every rung of Close
// after this returns at once.
func (p *process) sandboxGone() {
	p.mu.Lock()
	p.gone, p.dropped = true, true
	p.mu.Unlock()
	p.cancel()
}

// drop gives up on the output stream: Done is closed once readEvents has
// seen the cancellation.
func (p *process) drop() {
	p.mu.Lock()
	p.dropped = true
	p.mu.Unlock()
	p.cancel()
	<-p.done
}

// keepAlive refreshes the sandbox's timeout and sends keepalives on the
// input stream until Close. A refresh answered 404 means the sandbox is
// gone.
func (p *process) keepAlive() {
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
			var ae *APIError
			if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
				p.sandboxGone()
				return
			}
			if err != nil && p.ctx.Err() == nil && p.c.t.Logger != nil {
				p.c.t.Logger.Warn("e2b: refreshing the sandbox timeout failed", "sandbox", p.sb.ID, "err", err)
			}
		case <-kt.C:
			p.in.keepalive()
		}
	}
}

// Done is closed once the worker's end was reported (or its stream lost)
// and all its output handled.
func (p *process) Done() <-chan struct{} { return p.done }

// Exit reports how the worker ended, once Done is closed: the end event's
// exit code or signal, as the subprocess transport reports them, or Code
// -1 with a Reason when the stream was lost.
func (p *process) Exit() transport.ExitStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status
}

// StderrTail returns the last bytes of the worker's stderr.
func (p *process) StderrTail() string { return p.stderr.Tail() }

// CloseWrite ends the input (see input.close), then closes the worker's
// stdin with CloseStdin, waiting up to CloseTimeout, unless the worker
// has ended already: envd would answer 404. A Write in progress returns
// at once, with an error.
func (p *process) CloseWrite() error {
	p.closeWriteOnce.Do(func() {
		p.in.close(p.closeTimeout)
		if p.backlog.Load() {
			p.waitDrained()
		}
		if p.hasEnded() {
			return
		}
		ctx, cancel := context.WithTimeout(p.ctx, p.closeTimeout)
		defer cancel()
		err := p.e.closeStdin(ctx, p.pid)
		switch {
		case err == nil || p.hasEnded():
		case isSandboxGone(err):
			p.sandboxGone()
		case connectCode(err) == "not_found":
			// It ended between the check and the call; its end event
			// is on its way.
		default:
			p.closeWriteErr = p.c.secrets.maskErr(err)
		}
	})
	return p.closeWriteErr
}

// connectCode is the Connect error code of an envd call's failure, if it
// has one.
func connectCode(err error) string {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Code
	}
	if ce := new(connect.Error); errors.As(err, &ce) {
		return ce.Code().String()
	}
	return ""
}

// hasEnded reports whether the worker's end has been received, or its
// stream is done with.
func (p *process) hasEnded() bool {
	select {
	case <-p.ended:
		return true
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitDrained waits for the worker's end while the backlog of its
// output is being received, within CloseTimeout, and gives up once
// nothing has come for drainWait.
func (p *process) waitDrained() {
	deadline := time.NewTimer(p.closeTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(min(drainWait, p.closeTimeout))
	defer tick.Stop()
	last := p.received.Load()
	for {
		select {
		case <-p.ended:
			return
		case <-p.done:
			return
		case <-deadline.C:
			return
		case <-tick.C:
			n := p.received.Load()
			if n == last {
				return
			}
			last = n
		}
	}
}

func (p *process) waitDone(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
		return true
	case <-t.C:
		return false
	}
}

func (p *process) signal(sig processpb.Signal) error {
	if p.hasEnded() {
		return nil
	}
	ctx, cancel := context.WithTimeout(p.ctx, p.termTimeout)
	defer cancel()
	err := p.e.sendSignal(ctx, p.pid, sig)
	switch {
	case err == nil || p.hasEnded():
		return nil
	case isSandboxGone(err):
		p.sandboxGone()
		return nil
	}
	return err
}

// Close runs the shutdown ladder (stop reading stdout, close stdin, wait
// CloseTimeout, SIGTERM, wait TermTimeout, SIGKILL, wait KillTimeout, drop
// the stream) and then kills the sandbox, waiting at most 30s for the
// control plane, or at most E2B.CleanupGrace after Kill: a host kills a
// worker when it cannot wait (its deadline has passed, the worker went
// silent), and Close must not make it wait 30s more. A sandbox found gone
// on the way (E2B's edge answers 502 "not found") ends the climb at once.
// Output the host has not read when Close starts is discarded. It returns
// nil whatever the worker's exit status; an error means the ladder or the
// sandbox kill failed (the sandbox then expires by its timeout, no longer
// refreshed, or Sweep finds it).
func (p *process) Close() error {
	p.closeOnce.Do(func() {
		var errs []error
		l := ladder.Ladder{
			Done: p.done,
			StopReading: func() error {
				// Nobody reads any more; a blocked delivery must not
				// stall the end event.
				p.backlog.Store(p.delivering.Load())
				p.stdoutR.CloseWithError(io.ErrClosedPipe)
				return nil
			},
			CloseInput:   p.CloseWrite,
			CloseTimeout: p.closeTimeout,
			Terminate:    func() error { return p.signal(processpb.Signal_SIGNAL_SIGTERM) },
			TermTimeout:  p.termTimeout,
			Kill:         func() error { return p.signal(processpb.Signal_SIGNAL_SIGKILL) },
			KillTimeout:  p.killTimeout,
		}
		exit, err := l.Run()
		if err != nil {
			errs = append(errs, err)
		}
		if exit == ladder.Running {
			// Cancelling the stream's context is what reliably unblocks
			// a read of an HTTP/1 response body.
			p.drop()
		}
		limit := sandboxKillTimeout
		if p.killed.Load() {
			limit = p.c.t.cleanupGrace()
		}
		ctx, cancel := context.WithTimeout(context.Background(), limit)
		if err := p.c.kill(ctx, p.sb.ID); err != nil {
			errs = append(errs, err)
		} else {
			p.mu.Lock()
			p.info.Killed = time.Now()
			p.mu.Unlock()
		}
		cancel()
		p.cancel()
		p.in.close(0)
		p.bg.Wait()
		p.in.wait()
		p.closeErr = p.c.secrets.maskErr(errors.Join(errs...))
	})
	return p.closeErr
}

// Kill implements transport.Killer: it sends SIGKILL to the worker through
// the sandbox's daemon and waits up to KillTimeout for the end event, then
// drops the stream. Close still kills the sandbox, waiting at most
// E2B.CleanupGrace for it.
func (p *process) Kill() error {
	p.killed.Store(true)
	err := p.signal(processpb.Signal_SIGNAL_SIGKILL)
	if !p.waitDone(p.killTimeout) {
		p.drop()
	}
	return p.c.secrets.maskErr(err)
}
