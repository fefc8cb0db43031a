package e2bfake

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"

	processpb "github.com/tproxy/tproxy/internal/e2benvd/process"
	"github.com/tproxy/tproxy/internal/e2benvd/process/processpbconnect"
)

// proc is a process started through the process service.
type proc struct {
	pid     uint32
	cmd     *exec.Cmd
	out     chan *processpb.ProcessEvent_DataEvent // output chunks for the attached stream
	cut     chan struct{}                          // closed to drop the attached stream (fault)
	cutOnce sync.Once

	detachOnce sync.Once
	detached   chan struct{} // no stream attached: output is discarded

	stdinMu sync.Mutex
	stdin   io.WriteCloser // nil when disabled or closed

	inputMu sync.Mutex
	inputs  []chan struct{} // closed to cut the open StreamInput calls

	mu     sync.Mutex
	reaped bool
	end    *processpb.ProcessEvent_EndEvent
	exited chan struct{} // reaped; end is set
}

func (p *proc) detach() { p.detachOnce.Do(func() { close(p.detached) }) }

// signal sends sig to the process's group (see signalGroup), as envd
// does, unless the process has been reaped.
func (p *proc) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reaped {
		return fmt.Errorf("process with pid %d not found", p.pid)
	}
	return signalGroup(p.cmd.Process, sig)
}

// closeStdin closes the process's stdin without waiting for a write in
// progress, which it ends with an error: as envd does, so that CloseStdin
// reaches a process that stopped reading while a write to it was blocked.
func (p *proc) closeStdin() error {
	p.stdinMu.Lock()
	stdin := p.stdin
	p.stdin = nil // later writes fail at once
	p.stdinMu.Unlock()
	if stdin == nil {
		return nil
	}
	return stdin.Close()
}

func (p *proc) writeStdin(b []byte) error {
	p.stdinMu.Lock()
	stdin := p.stdin
	p.stdinMu.Unlock()
	if stdin == nil {
		return errors.New("stdin is not enabled or already closed")
	}
	_, err := stdin.Write(b)
	return err
}

// addInput registers an open StreamInput call and returns the channel
// that cuts it, and a func that unregisters it.
func (p *proc) addInput() (<-chan struct{}, func()) {
	p.inputMu.Lock()
	defer p.inputMu.Unlock()
	ch := make(chan struct{})
	p.inputs = append(p.inputs, ch)
	return ch, func() {
		p.inputMu.Lock()
		defer p.inputMu.Unlock()
		for i, x := range p.inputs {
			if x == ch {
				p.inputs = append(p.inputs[:i], p.inputs[i+1:]...)
				break
			}
		}
	}
}

// cutInput cuts the process's open StreamInput calls.
func (p *proc) cutInput() {
	p.inputMu.Lock()
	defer p.inputMu.Unlock()
	for _, ch := range p.inputs {
		close(ch)
	}
	p.inputs = nil
}

// envdService is envd's process service over the fake's sandboxes.
type envdService struct {
	processpbconnect.UnimplementedProcessHandler
	s *Server
}

// Start starts a process and streams its events, as envd does: start,
// data (stdout and stderr chunks as they come), keepalive, end. A
// Connect-Timeout-Ms header becomes the process's deadline; a client that
// goes away leaves the process running.
func (e *envdService) Start(ctx context.Context, req *connect.Request[processpb.StartRequest], stream *connect.ServerStream[processpb.StartResponse]) error {
	s, sb := e.s, sandboxOf(ctx)
	if err := s.streamFault(OpStart); err != nil {
		return err
	}
	keepalive := 90 * time.Second
	if k, err := strconv.Atoi(req.Header().Get("Keepalive-Ping-Interval")); err == nil && k > 0 {
		keepalive = time.Duration(k) * time.Second
	}
	if s.opts.KeepaliveInterval > 0 {
		keepalive = s.opts.KeepaliveInterval
	}
	pc := req.Msg.GetProcess()
	dir := filepath.Join(sb.root, "home", "user")
	if pc.Cwd != nil && *pc.Cwd != "" {
		dir = sb.argPath(path.Clean(*pc.Cwd))
		if !path.IsAbs(*pc.Cwd) {
			dir = sb.filePath(*pc.Cwd)
		}
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			// envd answers 200 holding only the end-of-stream error.
			return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("cwd '%s' does not exist", *pc.Cwd))
		}
	}
	args := make([]string, len(pc.GetArgs()))
	for i, a := range pc.GetArgs() {
		args[i] = sb.argPath(a)
	}
	cmd := exec.Command(sb.argPath(pc.GetCmd()), args...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + filepath.Join(sb.root, "home", "user"),
		"TMPDIR=" + filepath.Join(sb.root, "tmp"), "USER=user"}
	if d := os.Getenv("GOCOVERDIR"); d != "" {
		// A -cover build of a test binary run as the sandbox's process
		// writes its coverage there, not a warning on stderr.
		cmd.Env = append(cmd.Env, "GOCOVERDIR="+d)
	}
	for k, v := range sb.envVars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	for k, v := range pc.GetEnvs() {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.SysProcAttr = sysProcAttr()
	p := &proc{cmd: cmd, out: make(chan *processpb.ProcessEvent_DataEvent), cut: make(chan struct{}),
		detached: make(chan struct{}), exited: make(chan struct{})}
	var err error
	if req.Msg.Stdin == nil || req.Msg.GetStdin() {
		if p.stdin, err = cmd.StdinPipe(); err != nil {
			return connect.NewError(connect.CodeInternal, err)
		}
	}
	stdout, err1 := cmd.StdoutPipe()
	stderr, err2 := cmd.StderrPipe()
	if err := errors.Join(err1, err2); err != nil {
		return connect.NewError(connect.CodeInternal, err)
	}
	s.mu.Lock()
	if s.sandboxes[sb.id] == nil {
		s.mu.Unlock()
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("sandbox %s is gone", sb.id))
	}
	err = cmd.Start()
	if err == nil {
		p.pid = uint32(cmd.Process.Pid)
		sb.procs[p.pid] = p
		s.procs.Add(1)
	}
	s.mu.Unlock()
	if err != nil {
		return connect.NewError(connect.CodeInternal, fmt.Errorf("error starting process '%s': %w", pc.GetCmd(), err))
	}
	defer p.detach()

	var readers sync.WaitGroup
	readers.Add(2)
	read := func(r io.Reader, isStderr bool) {
		defer readers.Done()
		for {
			buf := make([]byte, s.opts.ChunkSize)
			n, err := r.Read(buf)
			if n > 0 {
				ev := &processpb.ProcessEvent_DataEvent{Output: &processpb.ProcessEvent_DataEvent_Stdout{Stdout: buf[:n]}}
				if isStderr {
					ev.Output = &processpb.ProcessEvent_DataEvent_Stderr{Stderr: buf[:n]}
				}
				select {
				case p.out <- ev:
				case <-p.detached: // nobody listens: the output is lost, as with envd
				}
			}
			if err != nil {
				return
			}
		}
	}
	go read(stdout, false)
	go read(stderr, true)
	go func() {
		defer s.procs.Done()
		readers.Wait()
		close(p.out)
		werr := cmd.Wait()
		st := cmd.ProcessState
		end := &processpb.ProcessEvent_EndEvent{ExitCode: int32(st.ExitCode()), Exited: st.Exited(), Status: st.String()}
		if werr != nil {
			msg := werr.Error()
			end.Error = &msg
		}
		p.mu.Lock()
		p.reaped = true
		p.end = end
		p.mu.Unlock()
		p.closeStdin()
		s.mu.Lock()
		delete(sb.procs, p.pid)
		s.mu.Unlock()
		close(p.exited)
	}()

	send := func(ev *processpb.ProcessEvent) bool {
		return stream.Send(&processpb.StartResponse{Event: ev}) == nil
	}
	if !send(&processpb.ProcessEvent{Event: &processpb.ProcessEvent_Start{Start: &processpb.ProcessEvent_StartEvent{Pid: p.pid}}}) {
		s.abandon()
		return nil
	}
	ka := time.NewTimer(keepalive)
	defer ka.Stop()
	out := p.out
	var exited <-chan struct{}
	for {
		select {
		case ev, ok := <-out:
			if !ok {
				out, exited = nil, p.exited
				continue
			}
			if !send(&processpb.ProcessEvent{Event: &processpb.ProcessEvent_Data{Data: ev}}) {
				s.abandon()
				return nil
			}
			ka.Reset(keepalive) // the timer restarts after each data event
		case <-ka.C:
			if !send(&processpb.ProcessEvent{Event: &processpb.ProcessEvent_Keepalive{Keepalive: &processpb.ProcessEvent_KeepAlive{}}}) {
				s.abandon()
				return nil
			}
			ka.Reset(keepalive)
		case <-p.cut:
			p.detach()
			panic(http.ErrAbortHandler) // drop the connection mid-stream
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				// envd makes Connect-Timeout-Ms the process's deadline.
				p.signal(syscall.SIGKILL)
				return connect.NewError(connect.CodeDeadlineExceeded, ctx.Err())
			}
			s.abandon()
			return nil // the client went away; the process goes on
		case <-exited:
			p.mu.Lock()
			end := p.end
			p.mu.Unlock()
			send(&processpb.ProcessEvent{Event: &processpb.ProcessEvent_End{End: end}})
			return nil
		}
	}
}

// abandon counts a Start stream its client left before the end.
func (s *Server) abandon() {
	s.mu.Lock()
	s.abandoned++
	s.mu.Unlock()
}

// findProc resolves a ProcessSelector, answering not_found as envd does.
func (s *Server) findProc(sb *sandbox, sel *processpb.ProcessSelector) (*proc, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if pid := sel.GetPid(); pid != 0 {
		if p := sb.procs[pid]; p != nil {
			return p, nil
		}
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("process with pid %d not found", pid))
	}
	return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("process with tag %s not found", sel.GetTag()))
}

// StreamInput writes every data message's stdin to the process named by
// the first message, in order, for as long as the client streams. A cut
// (CutInputStreams) ends the call at once with an unavailable error, as
// a proxy that gives up on a long request answers it; everything
// received before the cut has been written.
func (e *envdService) StreamInput(ctx context.Context, stream *connect.ClientStream[processpb.StreamInputRequest]) (*connect.Response[processpb.StreamInputResponse], error) {
	s, sb := e.s, sandboxOf(ctx)
	if err := s.streamFault(OpStreamInput); err != nil {
		return nil, err
	}
	msgs := make(chan *processpb.StreamInputRequest)
	recvDone := make(chan error, 1)
	go func() {
		defer close(msgs)
		for stream.Receive() {
			select {
			case msgs <- stream.Msg():
			case <-ctx.Done():
				return
			}
		}
		recvDone <- stream.Err()
	}()
	var p *proc
	var cut <-chan struct{}
	for {
		var req *processpb.StreamInputRequest
		select {
		case <-cut:
			// End the request body here, as the proxy did: connect-go
			// reads a body to its end before it answers.
			ctx.Value(bodyCutKey{}).(func())()
			return nil, connect.NewError(connect.CodeUnavailable, errors.New("upstream reset: the proxy cut the request"))
		case req = <-msgs:
		}
		if req == nil {
			break
		}
		switch ev := req.GetEvent().(type) {
		case *processpb.StreamInputRequest_Start:
			var err error
			if p, err = s.findProc(sb, ev.Start.GetProcess()); err != nil {
				return nil, err
			}
			var unregister func()
			cut, unregister = p.addInput()
			defer unregister()
		case *processpb.StreamInputRequest_Data:
			if p == nil {
				return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("no start message before data"))
			}
			if err := p.writeStdin(ev.Data.GetInput().GetStdin()); err != nil {
				return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("error writing to stdin: %w", err))
			}
		case *processpb.StreamInputRequest_Keepalive:
		default:
			return nil, connect.NewError(connect.CodeUnimplemented, fmt.Errorf("invalid event type %T", ev))
		}
	}
	if err := <-recvDone; err != nil {
		return nil, connect.NewError(connect.CodeUnknown, fmt.Errorf("error streaming input: %w", err))
	}
	return connect.NewResponse(&processpb.StreamInputResponse{}), nil
}

// SendInput writes one message's stdin to the process.
func (e *envdService) SendInput(ctx context.Context, req *connect.Request[processpb.SendInputRequest]) (*connect.Response[processpb.SendInputResponse], error) {
	p, err := e.s.findProc(sandboxOf(ctx), req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	if err := p.writeStdin(req.Msg.GetInput().GetStdin()); err != nil {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("error writing to stdin: %w", err))
	}
	return connect.NewResponse(&processpb.SendInputResponse{}), nil
}

// CloseStdin closes the process's stdin.
func (e *envdService) CloseStdin(ctx context.Context, req *connect.Request[processpb.CloseStdinRequest]) (*connect.Response[processpb.CloseStdinResponse], error) {
	p, err := e.s.findProc(sandboxOf(ctx), req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	if err := p.closeStdin(); err != nil {
		return nil, connect.NewError(connect.CodeUnknown, fmt.Errorf("error closing stdin: %w", err))
	}
	return connect.NewResponse(&processpb.CloseStdinResponse{}), nil
}

// SendSignal sends SIGTERM or SIGKILL, the only signals envd knows, to
// the process's group.
func (e *envdService) SendSignal(ctx context.Context, req *connect.Request[processpb.SendSignalRequest]) (*connect.Response[processpb.SendSignalResponse], error) {
	p, err := e.s.findProc(sandboxOf(ctx), req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	var sig syscall.Signal
	switch req.Msg.GetSignal() {
	case processpb.Signal_SIGNAL_SIGTERM:
		sig = syscall.SIGTERM
	case processpb.Signal_SIGNAL_SIGKILL:
		sig = syscall.SIGKILL
	default:
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("invalid signal: %v", req.Msg.GetSignal()))
	}
	if err := p.signal(sig); err != nil {
		return nil, connect.NewError(connect.CodeNotFound, err)
	}
	return connect.NewResponse(&processpb.SendSignalResponse{}), nil
}
