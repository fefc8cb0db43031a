package e2bfake

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// proc is a process started through the process service.
type proc struct {
	pid     uint32
	cmd     *exec.Cmd
	out     chan dataEvent // output chunks for the attached stream
	cut     chan struct{}  // closed to drop the attached stream (fault)
	cutOnce sync.Once

	detachOnce sync.Once
	detached   chan struct{} // no stream attached: output is discarded

	stdinMu sync.Mutex
	stdin   io.WriteCloser // nil when disabled or closed

	mu     sync.Mutex
	reaped bool
	end    endEvent
	exited chan struct{} // reaped; end is set
}

type dataEvent struct {
	Stdout []byte `json:"stdout,omitempty"`
	Stderr []byte `json:"stderr,omitempty"`
}

// endEvent is filled from os.ProcessState as envd fills it; proto3 JSON
// omits zero values.
type endEvent struct {
	ExitCode int32   `json:"exitCode,omitempty"`
	Exited   bool    `json:"exited,omitempty"`
	Status   string  `json:"status,omitempty"`
	Error    *string `json:"error,omitempty"`
}

type selector struct {
	Pid uint32 `json:"pid"`
	Tag string `json:"tag"`
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

func (s *Server) handleStart(w http.ResponseWriter, r *http.Request, sb *sandbox) {
	if !isConnectStream(r) {
		connectError(w, "unimplemented", "Start is a server stream: use application/connect+json")
		return
	}
	_, msg, err := readEnvelope(r.Body)
	if err != nil {
		connectError(w, "invalid_argument", "reading the request envelope: "+err.Error())
		return
	}
	var req struct {
		Process struct {
			Cmd  string            `json:"cmd"`
			Args []string          `json:"args"`
			Envs map[string]string `json:"envs"`
			Cwd  *string           `json:"cwd"`
		} `json:"process"`
		Pty   json.RawMessage `json:"pty"`
		Tag   *string         `json:"tag"`
		Stdin *bool           `json:"stdin"`
	}
	if err := json.Unmarshal(msg, &req); err != nil {
		connectError(w, "invalid_argument", "decoding StartRequest: "+err.Error())
		return
	}
	var deadline <-chan time.Time
	if ms := r.Header.Get("Connect-Timeout-Ms"); ms != "" {
		// envd makes this the process's deadline.
		n, err := strconv.Atoi(ms)
		if err != nil {
			connectError(w, "invalid_argument", "bad Connect-Timeout-Ms")
			return
		}
		t := time.NewTimer(time.Duration(n) * time.Millisecond)
		defer t.Stop()
		deadline = t.C
	}
	keepalive := 90 * time.Second
	if k, err := strconv.Atoi(r.Header.Get("Keepalive-Ping-Interval")); err == nil && k > 0 {
		keepalive = time.Duration(k) * time.Second
	}
	if s.opts.KeepaliveInterval > 0 {
		keepalive = s.opts.KeepaliveInterval
	}

	dir := filepath.Join(sb.root, "home", "user")
	if req.Process.Cwd != nil && *req.Process.Cwd != "" {
		dir = sb.argPath(path.Clean(*req.Process.Cwd))
		if !path.IsAbs(*req.Process.Cwd) {
			dir = sb.filePath(*req.Process.Cwd)
		}
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			// envd answers 200 holding only the end envelope.
			startStream(w, r).end("invalid_argument", fmt.Sprintf("cwd '%s' does not exist", *req.Process.Cwd))
			return
		}
	}
	args := make([]string, len(req.Process.Args))
	for i, a := range req.Process.Args {
		args[i] = sb.argPath(a)
	}
	cmd := exec.Command(sb.argPath(req.Process.Cmd), args...)
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
	for k, v := range req.Process.Envs {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.SysProcAttr = sysProcAttr()
	p := &proc{cmd: cmd, out: make(chan dataEvent), cut: make(chan struct{}), detached: make(chan struct{}), exited: make(chan struct{})}
	if req.Stdin == nil || *req.Stdin {
		if p.stdin, err = cmd.StdinPipe(); err != nil {
			connectError(w, "internal", err.Error())
			return
		}
	}
	stdout, err1 := cmd.StdoutPipe()
	stderr, err2 := cmd.StderrPipe()
	if err := errors.Join(err1, err2); err != nil {
		connectError(w, "internal", err.Error())
		return
	}
	s.mu.Lock()
	if s.sandboxes[sb.id] == nil {
		s.mu.Unlock()
		apiError(w, http.StatusBadGateway, "The sandbox "+sb.id+" was not found")
		return
	}
	err = cmd.Start()
	if err == nil {
		p.pid = uint32(cmd.Process.Pid)
		sb.procs[p.pid] = p
		s.procs.Add(1)
	}
	s.mu.Unlock()
	if err != nil {
		startStream(w, r).end("internal", fmt.Sprintf("error starting process '%s': %v", req.Process.Cmd, err))
		return
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
				ev := dataEvent{Stdout: buf[:n]}
				if isStderr {
					ev = dataEvent{Stderr: buf[:n]}
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
		p.mu.Lock()
		p.reaped = true
		p.end = endEvent{ExitCode: int32(st.ExitCode()), Exited: st.Exited(), Status: st.String()}
		if werr != nil {
			msg := werr.Error()
			p.end.Error = &msg
		}
		p.mu.Unlock()
		p.closeStdin()
		s.mu.Lock()
		delete(sb.procs, p.pid)
		s.mu.Unlock()
		close(p.exited)
	}()

	sw := startStream(w, r)
	type startEvent struct {
		Pid uint32 `json:"pid"`
	}
	type event struct {
		Start     *startEvent `json:"start,omitempty"`
		Data      *dataEvent  `json:"data,omitempty"`
		End       *endEvent   `json:"end,omitempty"`
		Keepalive *struct{}   `json:"keepalive,omitempty"`
	}
	send := func(ev event) bool { return sw.send(map[string]event{"event": ev}) == nil }
	if !send(event{Start: &startEvent{Pid: p.pid}}) {
		return
	}
	ka := time.NewTimer(keepalive)
	defer ka.Stop()
	out := p.out
	var exited <-chan struct{}
	deadlineHit := false
	for {
		select {
		case ev, ok := <-out:
			if !ok {
				out, exited = nil, p.exited
				continue
			}
			if !send(event{Data: &ev}) {
				return
			}
			ka.Reset(keepalive) // the timer restarts after each data event
		case <-ka.C:
			if !send(event{Keepalive: &struct{}{}}) {
				return
			}
			ka.Reset(keepalive)
		case <-deadline:
			deadline = nil
			deadlineHit = true
			p.signal(syscall.SIGKILL)
		case <-p.cut:
			p.detach()
			panic(http.ErrAbortHandler) // drop the connection mid-stream
		case <-r.Context().Done():
			return // the client went away; the process goes on
		case <-exited:
			if deadlineHit {
				sw.end("deadline_exceeded", "context deadline exceeded")
				return
			}
			p.mu.Lock()
			end := p.end
			p.mu.Unlock()
			if send(event{End: &end}) {
				sw.end("", "")
			}
			return
		}
	}
}

// findProc resolves a ProcessSelector.
func (s *Server) findProc(sb *sandbox, sel selector) (*proc, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := sb.procs[sel.Pid]; p != nil && sel.Pid != 0 {
		return p, nil
	}
	if sel.Tag != "" {
		return nil, fmt.Errorf("process with tag %s not found", sel.Tag)
	}
	return nil, fmt.Errorf("process with pid %d not found", sel.Pid)
}

func (s *Server) handleStreamInput(w http.ResponseWriter, r *http.Request, sb *sandbox) {
	if !isConnectStream(r) {
		connectError(w, "unimplemented", "StreamInput is a client stream: use application/connect+json")
		return
	}
	type input struct {
		Stdin []byte `json:"stdin"`
		Pty   []byte `json:"pty"`
	}
	var p *proc
	fail := func(code, msg string) {
		sw := startStream(w, r)
		sw.end(code, msg)
	}
	for {
		_, msg, err := readEnvelope(r.Body)
		if err == io.EOF {
			break
		}
		if err != nil {
			fail("invalid_argument", "reading the request stream: "+err.Error())
			return
		}
		var req struct {
			Start *struct {
				Process selector `json:"process"`
			} `json:"start"`
			Data *struct {
				Input input `json:"input"`
			} `json:"data"`
			Keepalive *struct{} `json:"keepalive"`
		}
		if err := json.Unmarshal(msg, &req); err != nil {
			fail("invalid_argument", "decoding StreamInputRequest: "+err.Error())
			return
		}
		switch {
		case req.Start != nil:
			if p, err = s.findProc(sb, req.Start.Process); err != nil {
				fail("not_found", err.Error())
				return
			}
		case req.Data != nil:
			if p == nil {
				fail("failed_precondition", "no start message before data")
				return
			}
			if err := p.writeStdin(req.Data.Input.Stdin); err != nil {
				fail("internal", "error writing to process stdin: "+err.Error())
				return
			}
		}
	}
	sw := startStream(w, r)
	sw.send(struct{}{})
	sw.end("", "")
}

func (s *Server) handleSendInput(w http.ResponseWriter, r *http.Request, sb *sandbox) {
	var req struct {
		Process selector `json:"process"`
		Input   struct {
			Stdin []byte `json:"stdin"`
		} `json:"input"`
	}
	p, ok := s.unary(w, r, sb, &req, func() selector { return req.Process })
	if !ok {
		return
	}
	if err := p.writeStdin(req.Input.Stdin); err != nil {
		connectError(w, "internal", "error writing to process stdin: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

func (s *Server) handleCloseStdin(w http.ResponseWriter, r *http.Request, sb *sandbox) {
	var req struct {
		Process selector `json:"process"`
	}
	p, ok := s.unary(w, r, sb, &req, func() selector { return req.Process })
	if !ok {
		return
	}
	if err := p.closeStdin(); err != nil {
		connectError(w, "internal", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

func (s *Server) handleSendSignal(w http.ResponseWriter, r *http.Request, sb *sandbox) {
	var req struct {
		Process selector        `json:"process"`
		Signal  json.RawMessage `json:"signal"`
	}
	p, ok := s.unary(w, r, sb, &req, func() selector { return req.Process })
	if !ok {
		return
	}
	var sig syscall.Signal
	switch string(req.Signal) {
	case `"SIGNAL_SIGTERM"`, "15":
		sig = syscall.SIGTERM
	case `"SIGNAL_SIGKILL"`, "9":
		sig = syscall.SIGKILL
	default:
		connectError(w, "invalid_argument", "invalid signal: "+string(req.Signal))
		return
	}
	if err := p.signal(sig); err != nil {
		connectError(w, "not_found", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// unary decodes a unary JSON request and finds its process.
func (s *Server) unary(w http.ResponseWriter, r *http.Request, sb *sandbox, req any, sel func() selector) (*proc, bool) {
	if !isUnaryJSON(r) {
		connectError(w, "unimplemented", "unary calls take application/json")
		return nil, false
	}
	if err := json.NewDecoder(r.Body).Decode(req); err != nil {
		connectError(w, "invalid_argument", err.Error())
		return nil, false
	}
	p, err := s.findProc(sb, sel())
	if err != nil {
		connectError(w, "not_found", err.Error())
		return nil, false
	}
	return p, true
}

// --- file API ---

func (s *Server) handleUpload(w http.ResponseWriter, r *http.Request, sb *sandbox) {
	p := r.URL.Query().Get("path")
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var src io.Reader
	switch ct {
	case "multipart/form-data":
		mr, err := r.MultipartReader()
		if err != nil {
			apiError(w, http.StatusBadRequest, err.Error())
			return
		}
		for {
			part, err := mr.NextPart()
			if err != nil {
				apiError(w, http.StatusBadRequest, "no file part in the form")
				return
			}
			if part.FormName() == "file" {
				if p == "" {
					p = part.FileName()
				}
				src = part
				break
			}
		}
	case "application/octet-stream":
		src = r.Body
	default:
		apiError(w, http.StatusBadRequest, "unsupported Content-Type "+ct)
		return
	}
	if p == "" {
		apiError(w, http.StatusBadRequest, "path is required")
		return
	}
	hp := sb.filePath(p)
	if err := os.MkdirAll(filepath.Dir(hp), 0o755); err != nil {
		apiError(w, http.StatusInternalServerError, err.Error())
		return
	}
	f, err := os.OpenFile(hp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err == nil {
		_, err = io.Copy(f, src)
		err = errors.Join(err, f.Close(), os.Chmod(hp, 0o644))
	}
	if err != nil {
		apiError(w, http.StatusInternalServerError, err.Error())
		return
	}
	abs := p
	if !path.IsAbs(abs) {
		abs = path.Join("/home/user", p)
	}
	writeJSON(w, http.StatusOK, []map[string]string{{"name": path.Base(abs), "path": abs, "type": "file"}})
}

func (s *Server) handleDownload(w http.ResponseWriter, r *http.Request, sb *sandbox) {
	p := r.URL.Query().Get("path")
	f, err := os.Open(sb.filePath(p))
	if err != nil {
		apiError(w, http.StatusNotFound, fmt.Sprintf("path '%s' does not exist", p))
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	io.Copy(w, f)
}
