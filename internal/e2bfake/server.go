// Package e2bfake is a local, faithful E2B for tests and demos: one
// httptest server that speaks the control plane's REST API and, for every
// sandbox, the in-sandbox daemon's (envd's) process and filesystem
// services and its file API. Processes are real local processes.
//
// The process and filesystem services are served by the handlers that
// protoc-gen-connect-go generated from the same .proto definitions the
// E2B transport's client is generated from (package
// transport/e2b/internal/envd), so both sides are held to one schema:
// the Connect protocol with either codec (proto or JSON), enveloped
// streams, end-of-stream errors, gzip when asked for, keepalives,
// unaligned 32 KiB data chunks, and end events filled from
// os.ProcessState exactly as envd fills them.
//
// # Sandboxes on the local disk
//
// Each sandbox has a root directory on the host (under Options.Dir) with
// home/user and tmp in it. The file API and the filesystem service map
// every path into the root (relative paths are relative to /home/user),
// and refuse paths under /proc, /sys and /dev as envd does. In a
// process's cmd, args and cwd, an absolute path is mapped into the root
// when its first element exists there (/home/..., /tmp/...), and is left
// alone otherwise, so /bin/sh and sha256sum are the host's. Processes get
// HOME, TMPDIR and PATH accordingly, plus the sandbox's and the request's
// env vars, and run in their own process group, which a signal or a kill
// reaches whole.
//
// # What differs from E2B
//
// There is no isolation: a sandbox is a directory, not a VM, and the
// worker runs as the host's user whatever user the request names (the
// name is checked, though: only "user" and "root" exist). Only the
// endpoints tproxy's E2B transport uses are served. Everything goes over
// loopback HTTP/1.1.
//
// # Faults
//
// FailNext makes the next calls of an operation fail with an HTTP status
// (as E2B's edge or envd's HTTP layer would) and FailStream makes the next
// streams of one fail with an end-of-stream error (as envd's handlers
// do); Stall makes calls hang unanswered, as an unresponsive API would;
// Signal, CutStreams, CutInputStreams, DeleteSandbox and Vanish kill a
// worker, drop its output or input stream, or remove its sandbox from
// under it; Options.RefuseClientStreams makes StreamInput fail as a proxy
// that does not pass client streams would; a wrong API key, access token
// or user gets a 401 as E2B's would. Requests records every request for
// assertions (such as: the API key never reaches a sandbox), Conns counts
// the connections clients opened, and Abandoned the output streams a
// client left before their end.
package e2bfake

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"connectrpc.com/connect"

	"github.com/tproxy/tproxy/internal/e2benvd"
	"github.com/tproxy/tproxy/internal/e2benvd/filesystem/filesystempbconnect"
	"github.com/tproxy/tproxy/internal/e2benvd/process/processpbconnect"
)

// Op names an operation of the API, for FailNext and Calls.
type Op string

// The operations the server serves.
const (
	OpCreate      Op = "create"      // POST /sandboxes
	OpKill        Op = "kill"        // DELETE /sandboxes/{id}
	OpInfo        Op = "info"        // GET /sandboxes/{id}
	OpTimeout     Op = "timeout"     // POST /sandboxes/{id}/timeout
	OpRefresh     Op = "refresh"     // POST /sandboxes/{id}/refreshes
	OpList        Op = "list"        // GET /v2/sandboxes
	OpStart       Op = "start"       // process.Process/Start
	OpStreamInput Op = "streaminput" // process.Process/StreamInput
	OpSendInput   Op = "sendinput"   // process.Process/SendInput
	OpCloseStdin  Op = "closestdin"  // process.Process/CloseStdin
	OpSendSignal  Op = "sendsignal"  // process.Process/SendSignal
	OpUpload      Op = "upload"      // POST /files
	OpDownload    Op = "download"    // GET /files
	OpStat        Op = "stat"        // filesystem.Filesystem/Stat
	OpMakeDir     Op = "makedir"     // filesystem.Filesystem/MakeDir
	OpListDir     Op = "listdir"     // filesystem.Filesystem/ListDir
	OpRemove      Op = "remove"      // filesystem.Filesystem/Remove
	OpMove        Op = "move"        // filesystem.Filesystem/Move
)

// DefaultAPIKey is the key a Server accepts when Options.APIKey is empty.
const DefaultAPIKey = "e2b_0123456789abcdef0123456789abcdef"

// defaultChunk is envd's largest data chunk.
const defaultChunk = 32 << 10

// Options configure a Server.
type Options struct {
	// APIKey is the only key the control plane accepts. Empty means
	// DefaultAPIKey.
	APIKey string
	// KeepaliveInterval, if set, replaces the interval a client asks for
	// with Keepalive-Ping-Interval (seconds), so tests see keepalives.
	KeepaliveInterval time.Duration
	// ChunkSize is the most stdout or stderr bytes one data event carries.
	// Zero means 32 KiB, as envd.
	ChunkSize int
	// TemplateFiles are files every new sandbox starts with, by sandbox
	// path: a template with something baked in.
	TemplateFiles map[string]File
	// Dir holds the sandboxes' root directories. Empty means a new
	// temporary directory, removed by Close.
	Dir string
	// EnvdVersion is the envd version the control plane reports for new
	// sandboxes. Empty means e2benvd.Version, the version the schema matches.
	EnvdVersion string
	// RefuseClientStreams makes every StreamInput call fail at once with
	// 501 and a text body, before its request body is read, as a proxy
	// that does not pass client-streaming requests would. SendInput still
	// works.
	RefuseClientStreams bool
}

// File is a file in a sandbox.
type File struct {
	Data []byte
	Mode os.FileMode
}

// Request is a request the server received, for assertions.
type Request struct {
	Method, Path, RawQuery string
	Header                 http.Header
	// Body is the start of the request body (at most 64 KiB; streaming
	// bodies are recorded as far as they were read).
	Body []byte
}

// Server is the local E2B. Its zero value is not usable; call New.
type Server struct {
	// URL is the base URL of both the control plane and every sandbox's
	// envd (which routes by the E2b-Sandbox-Id header): use it as
	// E2B.APIURL and E2B.EnvdURL.
	URL string

	opts   Options
	hs     *httptest.Server
	dir    string
	ownDir bool

	mu        sync.Mutex
	sandboxes map[string]*sandbox
	faults    map[Op][]int            // statuses to answer the next calls with
	sfaults   map[Op][]*connect.Error // end-of-stream errors for the next streams
	stalls    map[Op]*Stall
	calls     map[Op]int
	requests  []*Request
	closed    bool
	procs     sync.WaitGroup
	vanished  []*sandbox // removed by Vanish, their processes still to end
	conns     int
	abandoned int
}

// New starts a Server on loopback.
func New(opts Options) (*Server, error) {
	if opts.APIKey == "" {
		opts.APIKey = DefaultAPIKey
	}
	if opts.ChunkSize <= 0 {
		opts.ChunkSize = defaultChunk
	}
	if opts.EnvdVersion == "" {
		opts.EnvdVersion = e2benvd.Version
	}
	s := &Server{opts: opts, dir: opts.Dir, sandboxes: map[string]*sandbox{}, faults: map[Op][]int{}, sfaults: map[Op][]*connect.Error{}, stalls: map[Op]*Stall{}, calls: map[Op]int{}}
	if s.dir == "" {
		d, err := os.MkdirTemp("", "e2bfake-")
		if err != nil {
			return nil, err
		}
		s.dir, s.ownDir = d, true
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /sandboxes", s.api(OpCreate, s.handleCreate))
	mux.HandleFunc("GET /sandboxes/{id}", s.api(OpInfo, s.handleInfo))
	mux.HandleFunc("DELETE /sandboxes/{id}", s.api(OpKill, s.handleKill))
	mux.HandleFunc("POST /sandboxes/{id}/timeout", s.api(OpTimeout, s.handleTimeout))
	mux.HandleFunc("POST /sandboxes/{id}/refreshes", s.api(OpRefresh, s.handleRefresh))
	mux.HandleFunc("GET /v2/sandboxes", s.api(OpList, s.handleList))
	svc := &envdService{s: s}
	hopts := []connect.HandlerOption{connect.WithCompressMinBytes(256), connect.WithReadMaxBytes(8 << 20)}
	_, proc := processpbconnect.NewProcessHandler(svc, hopts...)
	_, fs := filesystempbconnect.NewFilesystemHandler(fsService{s: s}, hopts...)
	for op, path := range map[Op]string{
		OpStart:       processpbconnect.ProcessStartProcedure,
		OpStreamInput: processpbconnect.ProcessStreamInputProcedure,
		OpSendInput:   processpbconnect.ProcessSendInputProcedure,
		OpCloseStdin:  processpbconnect.ProcessCloseStdinProcedure,
		OpSendSignal:  processpbconnect.ProcessSendSignalProcedure,
	} {
		mux.Handle("POST "+path, s.envd(op, proc.ServeHTTP))
	}
	for op, path := range map[Op]string{
		OpStat:    filesystempbconnect.FilesystemStatProcedure,
		OpMakeDir: filesystempbconnect.FilesystemMakeDirProcedure,
		OpListDir: filesystempbconnect.FilesystemListDirProcedure,
		OpRemove:  filesystempbconnect.FilesystemRemoveProcedure,
		OpMove:    filesystempbconnect.FilesystemMoveProcedure,
	} {
		mux.Handle("POST "+path, s.envd(op, fs.ServeHTTP))
	}
	mux.HandleFunc("POST /files", s.envd(OpUpload, s.handleUpload))
	mux.HandleFunc("GET /files", s.envd(OpDownload, s.handleDownload))
	s.hs = httptest.NewUnstartedServer(mux)
	s.hs.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.mu.Lock()
			s.conns++
			s.mu.Unlock()
		}
	}
	s.hs.Start()
	s.URL = s.hs.URL
	return s, nil
}

// APIKey returns the key the control plane accepts.
func (s *Server) APIKey() string { return s.opts.APIKey }

// Close releases every stall, kills every sandbox, waits for their
// processes, stops the server and removes the sandboxes' directories.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	ids := slices.Collect(maps.Keys(s.sandboxes))
	stalls := slices.Collect(maps.Values(s.stalls))
	s.mu.Unlock()
	for _, st := range stalls {
		st.Release()
	}
	for _, id := range ids {
		s.DeleteSandbox(id)
	}
	s.mu.Lock()
	vanished := s.vanished
	s.vanished = nil
	s.mu.Unlock()
	for _, sb := range vanished {
		s.endProcs(sb)
	}
	s.procs.Wait()
	s.hs.Close()
	if s.ownDir {
		os.RemoveAll(s.dir)
	}
}

// FailNext makes the next n calls of op fail with HTTP status and a JSON
// error body, before they have any effect.
func (s *Server) FailNext(op Op, status, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.faults[op] = append(s.faults[op], status)
	}
}

// FailStream makes the next n calls of a streaming op (OpStart,
// OpStreamInput) answer as envd's handler does when it fails: HTTP 200
// holding only an end-of-stream error with code and message.
func (s *Server) FailStream(op Op, code connect.Code, msg string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.sfaults[op] = append(s.sfaults[op], connect.NewError(code, errors.New(msg)))
	}
}

// streamFault consumes an end-of-stream fault for op, if any.
func (s *Server) streamFault(op Op) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.sfaults[op]; len(f) > 0 {
		s.sfaults[op] = f[1:]
		return f[0]
	}
	return nil
}

// Stall is a stalled operation: see Server.Stall.
type Stall struct {
	s          *Server
	op         Op
	arrived    chan struct{}
	arriveOnce sync.Once
	released   chan struct{}
	releaseOne sync.Once
}

// Stall makes every call of op that arrives from now on hang before it has
// any effect, sending nothing back, as an unresponsive API or a
// black-holed connection would, until Release is called; the calls then
// proceed normally. A call also ends when its client goes away, if the
// server notices (it does not while a request body is unread). Close
// releases every stall. Stalling an op that is already stalled returns the
// same Stall.
func (s *Server) Stall(op Op) *Stall {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.stalls[op]; st != nil {
		return st
	}
	st := &Stall{s: s, op: op, arrived: make(chan struct{}), released: make(chan struct{})}
	s.stalls[op] = st
	return st
}

// Arrived is closed once the first call has stalled.
func (st *Stall) Arrived() <-chan struct{} { return st.arrived }

// Release lets the stalled calls, and any later ones, proceed.
func (st *Stall) Release() {
	st.releaseOne.Do(func() {
		st.s.mu.Lock()
		if st.s.stalls[st.op] == st {
			delete(st.s.stalls, st.op)
		}
		st.s.mu.Unlock()
		close(st.released)
	})
}

// hold blocks a call until the stall is released or the client is gone;
// it reports whether the call may proceed.
func (st *Stall) hold(r *http.Request) bool {
	st.arriveOnce.Do(func() { close(st.arrived) })
	select {
	case <-st.released:
		return true
	case <-r.Context().Done():
		return false
	}
}

// Calls returns how many calls of op arrived, failed ones included.
func (s *Server) Calls(op Op) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[op]
}

// Requests returns every request received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, len(s.requests))
	for i, r := range s.requests {
		out[i] = *r
		out[i].Body = bytes.Clone(r.Body)
	}
	return out
}

// Sandboxes returns the ids of the live sandboxes.
func (s *Server) Sandboxes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := slices.Collect(maps.Keys(s.sandboxes))
	sort.Strings(ids)
	return ids
}

// CreateSandbox creates a sandbox directly, as another client would, and
// returns its id.
func (s *Server) CreateSandbox(template string, timeout time.Duration, metadata map[string]string) (string, error) {
	sb, err := s.create(template, timeout, metadata, nil)
	if err != nil {
		return "", err
	}
	return sb.id, nil
}

// SetStartedAt backdates a sandbox, for orphan sweeps.
func (s *Server) SetStartedAt(id string, t time.Time) error {
	sb, err := s.get(id)
	if err != nil {
		return err
	}
	s.mu.Lock()
	sb.startedAt = t
	s.mu.Unlock()
	return nil
}

// EndAt returns when the sandbox expires.
func (s *Server) EndAt(id string) (time.Time, error) {
	sb, err := s.get(id)
	if err != nil {
		return time.Time{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return sb.endAt, nil
}

// Root returns the sandbox's root directory on the host.
func (s *Server) Root(id string) (string, error) {
	sb, err := s.get(id)
	if err != nil {
		return "", err
	}
	return sb.root, nil
}

// Signal sends sig to the process group of process pid in the sandbox, as
// the OOM killer or an operator would.
func (s *Server) Signal(id string, pid int, sig syscall.Signal) error {
	p, err := s.proc(id, uint32(pid))
	if err != nil {
		return err
	}
	return p.signal(sig)
}

// CutStreams drops every open output stream of the sandbox's processes
// mid-flight, without an end event and without ending the processes, as
// a broken connection would. As with envd, output produced while no
// stream is attached is lost.
func (s *Server) CutStreams(id string) error {
	sb, err := s.get(id)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range sb.procs {
		p.cutOnce.Do(func() { close(p.cut) })
	}
	return nil
}

// DeleteSandbox removes the sandbox as if it was killed from elsewhere or
// expired: its streams break without end events, its processes are
// killed, and the API answers 404 for it from then on.
func (s *Server) DeleteSandbox(id string) error {
	sb, err := s.remove(id)
	if err != nil {
		return err
	}
	s.endProcs(sb)
	return nil
}

// Vanish removes the sandbox as a VM that died would go: the control
// plane answers 404 for it and the edge 502 "not found" to every new call
// to its daemon, while the streams already open stay open and silent (its
// processes are stopped, not killed) until the client gives up on them.
// Close ends the processes.
func (s *Server) Vanish(id string) error {
	sb, err := s.remove(id)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.vanished = append(s.vanished, sb)
	procs := slices.Collect(maps.Values(sb.procs))
	s.mu.Unlock()
	for _, p := range procs {
		p.signal(sigStop)
	}
	return nil
}

// remove takes the sandbox out of the server's map.
func (s *Server) remove(id string) (*sandbox, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb := s.sandboxes[id]
	if sb == nil {
		return nil, fmt.Errorf("e2bfake: no sandbox %q", id)
	}
	delete(s.sandboxes, id)
	if sb.expiry != nil {
		sb.expiry.Stop()
	}
	return sb, nil
}

// endProcs cuts the streams of a removed sandbox's processes, kills them,
// waits for them and removes the sandbox's directory.
func (s *Server) endProcs(sb *sandbox) {
	s.mu.Lock()
	procs := slices.Collect(maps.Values(sb.procs))
	s.mu.Unlock()
	for _, p := range procs {
		p.cutOnce.Do(func() { close(p.cut) })
		p.cutInput()
		p.signal(syscall.SIGKILL)
		p.signal(sigCont)
	}
	for _, p := range procs {
		<-p.exited
	}
	os.RemoveAll(sb.root)
}

// CutInputStreams ends every open StreamInput call to the sandbox's
// processes with an unavailable error, as a proxy that gives up on long
// requests would. The processes and their output streams go on.
func (s *Server) CutInputStreams(id string) error {
	sb, err := s.get(id)
	if err != nil {
		return err
	}
	s.mu.Lock()
	procs := slices.Collect(maps.Values(sb.procs))
	s.mu.Unlock()
	for _, p := range procs {
		p.cutInput()
	}
	return nil
}

// Running returns the pids of the sandbox's processes that have not been
// reaped yet.
func (s *Server) Running(id string) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb := s.sandboxes[id]
	if sb == nil {
		return nil
	}
	var pids []int
	for pid := range sb.procs {
		pids = append(pids, int(pid))
	}
	sort.Ints(pids)
	return pids
}

// Conns returns how many connections clients have opened to the server.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// Abandoned returns how many Start streams the client left (cancelled or
// closed) before their end-of-stream: envd logs each as "context
// canceled", and the connection cannot be reused.
func (s *Server) Abandoned() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.abandoned
}

// sandbox is one sandbox.
type sandbox struct {
	id, template, token, root string
	metadata, envVars         map[string]string
	startedAt, endAt          time.Time
	expiry                    *time.Timer
	procs                     map[uint32]*proc
}

func (s *Server) get(id string) (*sandbox, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb := s.sandboxes[id]
	if sb == nil {
		return nil, fmt.Errorf("e2bfake: no sandbox %q", id)
	}
	return sb, nil
}

func (s *Server) proc(id string, pid uint32) (*proc, error) {
	sb, err := s.get(id)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := sb.procs[pid]
	if p == nil {
		return nil, fmt.Errorf("e2bfake: no process %d in sandbox %s", pid, id)
	}
	return p, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *Server) create(template string, timeout time.Duration, metadata, envVars map[string]string) (*sandbox, error) {
	id := "i" + randomHex(10)
	sb := &sandbox{id: id, template: template, token: "ea_" + randomHex(16), root: filepath.Join(s.dir, id),
		metadata: maps.Clone(metadata), envVars: maps.Clone(envVars), startedAt: time.Now().UTC(), procs: map[uint32]*proc{}}
	if sb.metadata == nil {
		sb.metadata = map[string]string{}
	}
	for _, d := range []string{"home/user", "tmp"} {
		if err := os.MkdirAll(filepath.Join(sb.root, d), 0o755); err != nil {
			return nil, err
		}
	}
	for p, f := range s.opts.TemplateFiles {
		hp := sb.filePath(p)
		if err := os.MkdirAll(filepath.Dir(hp), 0o755); err != nil {
			return nil, err
		}
		mode := f.Mode
		if mode == 0 {
			mode = 0o644
		}
		if err := os.WriteFile(hp, f.Data, mode); err != nil {
			return nil, err
		}
		os.Chmod(hp, mode)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		os.RemoveAll(sb.root)
		return nil, errors.New("e2bfake: server closed")
	}
	s.sandboxes[id] = sb
	s.setTimeoutLocked(sb, timeout)
	return sb, nil
}

// setTimeoutLocked makes sb expire timeout from now; s.mu is held.
func (s *Server) setTimeoutLocked(sb *sandbox, timeout time.Duration) {
	sb.endAt = time.Now().UTC().Add(timeout)
	if sb.expiry != nil {
		sb.expiry.Stop()
	}
	id := sb.id
	sb.expiry = time.AfterFunc(timeout, func() { s.DeleteSandbox(id) })
}

// filePath maps a file API path into the sandbox root.
func (sb *sandbox) filePath(p string) string {
	if !path.IsAbs(p) {
		p = path.Join("/home/user", p)
	}
	return filepath.Join(sb.root, filepath.FromSlash(path.Clean(p)))
}

// argPath maps an absolute path in a command line into the root when its
// first element exists there.
func (sb *sandbox) argPath(a string) string {
	if !path.IsAbs(a) || a == "/" {
		return a
	}
	first := strings.SplitN(strings.TrimPrefix(path.Clean(a), "/"), "/", 2)[0]
	if _, err := os.Stat(filepath.Join(sb.root, first)); err == nil {
		return filepath.Join(sb.root, filepath.FromSlash(path.Clean(a)))
	}
	return a
}

// --- HTTP plumbing ---

// record logs the request, holds it while op is stalled, and consumes an
// injected fault, if any. It reports false if the client went away while
// the call was stalled.
func (s *Server) record(op Op, r *http.Request) (*Request, int, bool) {
	rec := &Request{Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Header: r.Header.Clone()}
	s.mu.Lock()
	s.requests = append(s.requests, rec)
	s.calls[op]++
	st := s.stalls[op]
	s.mu.Unlock()
	if st != nil && !st.hold(r) {
		return rec, 0, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.faults[op]; len(f) > 0 {
		s.faults[op] = f[1:]
		return rec, f[0], true
	}
	return rec, 0, true
}

// recordingBody keeps the start of a request body in the Request.
type recordingBody struct {
	s   *Server
	rec *Request
	r   io.ReadCloser
}

func (b *recordingBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if n > 0 {
		b.s.mu.Lock()
		if room := 64<<10 - len(b.rec.Body); room > 0 {
			b.rec.Body = append(b.rec.Body, p[:min(n, room)]...)
		}
		b.s.mu.Unlock()
	}
	return n, err
}

func (b *recordingBody) Close() error { return b.r.Close() }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// apiError is the control plane's (and envd's HTTP API's) error body.
func apiError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]any{"code": status, "message": msg})
}

// api wraps a control-plane handler: recording, faults, X-API-Key.
func (s *Server) api(op Op, h func(http.ResponseWriter, *http.Request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		rec, fault, ok := s.record(op, r)
		if !ok {
			return
		}
		r.Body = &recordingBody{s: s, rec: rec, r: r.Body}
		if r.Header.Get("X-API-Key") != s.opts.APIKey {
			apiError(w, http.StatusUnauthorized, "Invalid API key, it must start with 'e2b_' prefix")
			return
		}
		if fault != 0 {
			apiError(w, fault, "injected fault")
			return
		}
		h(w, r)
	}
}

// sandboxKey keys the sandbox a daemon request is routed to in its
// context.
type sandboxKey struct{}

// bodyCutKey keys, in a StreamInput request's context, the func that ends
// its body, for CutInputStreams.
type bodyCutKey struct{}

// sandboxOf returns the sandbox the envd middleware put into ctx.
func sandboxOf(ctx context.Context) *sandbox { return ctx.Value(sandboxKey{}).(*sandbox) }

// users are the sandbox's OS users; envd refuses any other name.
var users = map[string]bool{"user": true, "root": true}

// envd wraps a daemon handler: recording, faults, routing by the
// E2b-Sandbox-Id header (or the 49983-<id>.<domain> host) as E2B's edge
// does (502 for a sandbox it does not know), the access token, refused
// with a plain JSON 401 as envd does, and the user of the Authorization
// header, refused with a Connect-shaped 401. The handler finds the
// sandbox with sandboxOf.
func (s *Server) envd(op Op, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		rec, fault, ok := s.record(op, r)
		if !ok {
			return
		}
		r.Body = &recordingBody{s: s, rec: rec, r: r.Body}
		id := r.Header.Get("E2b-Sandbox-Id")
		if id == "" {
			if host, _, ok := strings.Cut(r.Host, "."); ok {
				_, id, _ = strings.Cut(host, "-")
			}
		}
		s.mu.Lock()
		sb := s.sandboxes[id]
		s.mu.Unlock()
		if sb == nil {
			// What E2B's edge proxy answers for a sandbox that is gone.
			apiError(w, http.StatusBadGateway, fmt.Sprintf("The sandbox %s was not found", id))
			return
		}
		if r.Header.Get("X-Access-Token") != sb.token {
			apiError(w, http.StatusUnauthorized, "unauthorized access, please provide a valid access token or method signing if supported")
			return
		}
		user := r.URL.Query().Get("username")
		if a := r.Header.Get("Authorization"); a != "" {
			if b, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(a, "Basic ")); err == nil {
				user, _, _ = strings.Cut(string(b), ":")
			}
		}
		if user != "" && !users[user] {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"code": "unauthenticated", "message": fmt.Sprintf("invalid username: '%s'", user)})
			return
		}
		if fault != 0 {
			apiError(w, fault, "injected fault")
			return
		}
		if op == OpStreamInput && s.opts.RefuseClientStreams {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusNotImplemented)
			io.WriteString(w, "client streaming requests are not supported by this proxy\n")
			return
		}
		ctx := context.WithValue(r.Context(), sandboxKey{}, sb)
		if op == OpStreamInput {
			// The answer may come before the body ends (a cut), and the
			// body goes through a pipe that a cut can end.
			http.NewResponseController(w).EnableFullDuplex()
			pr, pw := io.Pipe()
			body := r.Body
			go func() {
				_, err := io.Copy(pw, body)
				pw.CloseWithError(err)
			}()
			r.Body = pr
			var cut atomic.Bool
			ctx = context.WithValue(ctx, bodyCutKey{}, func() { cut.Store(true); pw.Close() })
			defer func() {
				if cut.Load() {
					// The rest of the body must not be read as a next
					// request: drop the connection once the answer is out.
					http.NewResponseController(w).Flush()
					panic(http.ErrAbortHandler)
				}
			}()
		}
		h(w, r.WithContext(ctx))
	}
}

// --- control plane ---

type sandboxJSON struct {
	SandboxID       string            `json:"sandboxID"`
	TemplateID      string            `json:"templateID"`
	ClientID        string            `json:"clientID"`
	EnvdVersion     string            `json:"envdVersion"`
	EnvdAccessToken *string           `json:"envdAccessToken,omitempty"`
	Domain          *string           `json:"domain"`
	StartedAt       *time.Time        `json:"startedAt,omitempty"`
	EndAt           *time.Time        `json:"endAt,omitempty"`
	Metadata        map[string]string `json:"metadata,omitempty"`
	State           string            `json:"state,omitempty"`
	CPUCount        int               `json:"cpuCount,omitempty"`
	MemoryMB        int               `json:"memoryMB,omitempty"`
}

func (s *Server) handleCreate(w http.ResponseWriter, r *http.Request) {
	var req struct {
		TemplateID string            `json:"templateID"`
		Timeout    *int              `json:"timeout"`
		Metadata   map[string]string `json:"metadata"`
		EnvVars    map[string]string `json:"envVars"`
		Secure     bool              `json:"secure"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		apiError(w, http.StatusBadRequest, "invalid body: "+err.Error())
		return
	}
	if req.TemplateID == "" {
		apiError(w, http.StatusBadRequest, "templateID is required")
		return
	}
	timeout := 15
	if req.Timeout != nil {
		timeout = *req.Timeout
	}
	if timeout < 0 || timeout > 86400 {
		apiError(w, http.StatusBadRequest, "timeout out of range")
		return
	}
	sb, err := s.create(req.TemplateID, time.Duration(timeout)*time.Second, req.Metadata, req.EnvVars)
	if err != nil {
		apiError(w, http.StatusInternalServerError, err.Error())
		return
	}
	out := sandboxJSON{SandboxID: sb.id, TemplateID: sb.template, ClientID: "6532622b", EnvdVersion: s.opts.EnvdVersion}
	if req.Secure {
		out.EnvdAccessToken = &sb.token
	} else {
		// Not secure: envd takes no token.
		s.mu.Lock()
		sb.token = ""
		s.mu.Unlock()
	}
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) info(sb *sandbox) sandboxJSON {
	s.mu.Lock()
	defer s.mu.Unlock()
	started, end := sb.startedAt, sb.endAt
	return sandboxJSON{SandboxID: sb.id, TemplateID: sb.template, ClientID: "6532622b", EnvdVersion: s.opts.EnvdVersion,
		StartedAt: &started, EndAt: &end, Metadata: maps.Clone(sb.metadata), State: "running", CPUCount: 2, MemoryMB: 512}
}

func (s *Server) handleInfo(w http.ResponseWriter, r *http.Request) {
	sb, err := s.get(r.PathValue("id"))
	if err != nil {
		apiError(w, http.StatusNotFound, fmt.Sprintf("sandbox %q not found", r.PathValue("id")))
		return
	}
	writeJSON(w, http.StatusOK, s.info(sb))
}

func (s *Server) handleKill(w http.ResponseWriter, r *http.Request) {
	if err := s.DeleteSandbox(r.PathValue("id")); err != nil {
		apiError(w, http.StatusNotFound, fmt.Sprintf("sandbox %q not found", r.PathValue("id")))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleTimeout(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Timeout *int `json:"timeout"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Timeout == nil || *req.Timeout < 0 {
		apiError(w, http.StatusBadRequest, "timeout is required")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sb := s.sandboxes[r.PathValue("id")]
	if sb == nil {
		apiError(w, http.StatusNotFound, fmt.Sprintf("sandbox %q not found", r.PathValue("id")))
		return
	}
	s.setTimeoutLocked(sb, time.Duration(*req.Timeout)*time.Second)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleRefresh(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Duration int `json:"duration"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Duration < 0 || req.Duration > 3600 {
		apiError(w, http.StatusBadRequest, "duration must be 0..3600")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sb := s.sandboxes[r.PathValue("id")]
	if sb == nil {
		apiError(w, http.StatusNotFound, fmt.Sprintf("sandbox %q not found", r.PathValue("id")))
		return
	}
	if d := time.Duration(req.Duration) * time.Second; time.Now().Add(d).After(sb.endAt) {
		s.setTimeoutLocked(sb, d)
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	want, err := parseMetadataFilter(q.Get("metadata"))
	if err != nil {
		apiError(w, http.StatusBadRequest, "invalid metadata filter: "+err.Error())
		return
	}
	limit := 100
	if l := q.Get("limit"); l != "" {
		if limit, err = strconv.Atoi(l); err != nil || limit < 1 || limit > 100 {
			apiError(w, http.StatusBadRequest, "limit must be 1..100")
			return
		}
	}
	offset := 0
	if t := q.Get("nextToken"); t != "" {
		if offset, err = strconv.Atoi(t); err != nil {
			apiError(w, http.StatusBadRequest, "invalid nextToken")
			return
		}
	}
	if st := q.Get("state"); st != "" && !strings.Contains(st, "running") {
		writeJSON(w, http.StatusOK, []sandboxJSON{})
		return
	}
	var all []sandboxJSON
	for _, id := range s.Sandboxes() {
		sb, err := s.get(id)
		if err != nil {
			continue
		}
		info := s.info(sb)
		ok := true
		for k, v := range want {
			ok = ok && info.Metadata[k] == v
		}
		if ok {
			all = append(all, info)
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].StartedAt.Before(*all[j].StartedAt) })
	page := []sandboxJSON{}
	if offset < len(all) {
		page = all[offset:min(len(all), offset+limit)]
	}
	if offset+limit < len(all) {
		w.Header().Set("X-Next-Token", strconv.Itoa(offset+limit))
	}
	writeJSON(w, http.StatusOK, page)
}

// parseMetadataFilter reads the metadata parameter of GET /v2/sandboxes
// as E2B's API does: the parameter's value (already unescaped once, as
// every query parameter) is unescaped again as a whole, then split into
// key=value pairs at & and =, and each key and value is unescaped a third
// time. A client must therefore escape each key and value, join them, and
// escape the joined string before it goes into the query.
func parseMetadataFilter(param string) (map[string]string, error) {
	out := map[string]string{}
	if param == "" {
		return out, nil
	}
	joined, err := url.QueryUnescape(param)
	if err != nil {
		return nil, err
	}
	for _, pair := range strings.Split(joined, "&") {
		if pair == "" {
			continue
		}
		k, v, ok := strings.Cut(pair, "=")
		if !ok {
			return nil, fmt.Errorf("pair %q has no =", pair)
		}
		if k, err = url.QueryUnescape(k); err != nil {
			return nil, err
		}
		if v, err = url.QueryUnescape(v); err != nil {
			return nil, err
		}
		out[k] = v
	}
	return out, nil
}
