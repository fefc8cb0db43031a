// Package e2bfake is a local, faithful E2B for tests and demos: one
// httptest server that speaks the control plane's REST API and, for every
// sandbox, the in-sandbox daemon's (envd's) process service over the real
// Connect protocol (JSON codec, enveloped streams, end-of-stream flag
// 0x02, keepalives, unaligned 32 KiB data chunks, end events filled from
// os.ProcessState exactly as envd does) and its file API. Processes are
// real local processes.
//
// # Sandboxes on the local disk
//
// Each sandbox has a root directory on the host (under Options.Dir) with
// home/user and tmp in it. The file API maps every path into the root
// (relative paths are relative to /home/user). In a process's cmd, args
// and cwd, an absolute path is mapped into the root when its first
// element exists there (/home/..., /tmp/...), and is left alone otherwise,
// so /bin/sh and sha256sum are the host's. Processes get HOME, TMPDIR and
// PATH accordingly, plus the sandbox's and the request's env vars, and run
// in their own process group, which a signal or a kill reaches whole.
//
// # What differs from E2B
//
// There is no isolation: a sandbox is a directory, not a VM. Only the
// endpoints tproxy's E2B transport uses are served, and only the JSON
// codec. Everything a client sends or receives goes over loopback HTTP/1.1.
//
// # Faults
//
// FailNext makes the next calls of an operation fail with a status;
// Stall makes its calls hang unanswered, as an unresponsive API would;
// Signal, CutStreams and DeleteSandbox kill a worker, drop its output
// stream, or remove its sandbox from under it; a wrong API key or access
// token gets a 401 as E2B's would. Requests records every request for
// assertions (such as: the API key never reaches a sandbox).
package e2bfake

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
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
	"syscall"
	"time"
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
	faults    map[Op][]int // statuses to answer the next calls with
	stalls    map[Op]*Stall
	calls     map[Op]int
	requests  []*Request
	closed    bool
	procs     sync.WaitGroup
}

// New starts a Server on loopback.
func New(opts Options) (*Server, error) {
	if opts.APIKey == "" {
		opts.APIKey = DefaultAPIKey
	}
	if opts.ChunkSize <= 0 {
		opts.ChunkSize = defaultChunk
	}
	s := &Server{opts: opts, dir: opts.Dir, sandboxes: map[string]*sandbox{}, faults: map[Op][]int{}, stalls: map[Op]*Stall{}, calls: map[Op]int{}}
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
	mux.HandleFunc("POST /process.Process/Start", s.envd(OpStart, s.handleStart))
	mux.HandleFunc("POST /process.Process/StreamInput", s.envd(OpStreamInput, s.handleStreamInput))
	mux.HandleFunc("POST /process.Process/SendInput", s.envd(OpSendInput, s.handleSendInput))
	mux.HandleFunc("POST /process.Process/CloseStdin", s.envd(OpCloseStdin, s.handleCloseStdin))
	mux.HandleFunc("POST /process.Process/SendSignal", s.envd(OpSendSignal, s.handleSendSignal))
	mux.HandleFunc("POST /files", s.envd(OpUpload, s.handleUpload))
	mux.HandleFunc("GET /files", s.envd(OpDownload, s.handleDownload))
	s.hs = httptest.NewServer(mux)
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
	s.mu.Lock()
	sb := s.sandboxes[id]
	if sb == nil {
		s.mu.Unlock()
		return fmt.Errorf("e2bfake: no sandbox %q", id)
	}
	delete(s.sandboxes, id)
	if sb.expiry != nil {
		sb.expiry.Stop()
	}
	procs := slices.Collect(maps.Values(sb.procs))
	s.mu.Unlock()
	for _, p := range procs {
		p.cutOnce.Do(func() { close(p.cut) })
		p.signal(syscall.SIGKILL)
	}
	for _, p := range procs {
		<-p.exited
	}
	os.RemoveAll(sb.root)
	return nil
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

// envd wraps a daemon handler: recording, faults, routing by the
// E2b-Sandbox-Id header (or the 49983-<id>.<domain> host), and the access
// token, refused with a plain JSON 401 as envd does.
func (s *Server) envd(op Op, h func(http.ResponseWriter, *http.Request, *sandbox)) http.HandlerFunc {
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
		if fault != 0 {
			apiError(w, fault, "injected fault")
			return
		}
		h(w, r, sb)
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

const envdVersion = "0.6.13"

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
	out := sandboxJSON{SandboxID: sb.id, TemplateID: sb.template, ClientID: "6532622b", EnvdVersion: envdVersion}
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
	return sandboxJSON{SandboxID: sb.id, TemplateID: sb.template, ClientID: "6532622b", EnvdVersion: envdVersion,
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
	want, err := url.ParseQuery(q.Get("metadata"))
	if err != nil {
		apiError(w, http.StatusBadRequest, "invalid metadata filter")
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
		for k := range want {
			ok = ok && info.Metadata[k] == want.Get(k)
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

// --- envd: Connect plumbing ---

// connectError answers a failed unary Connect call.
func connectError(w http.ResponseWriter, code, msg string) {
	status := map[string]int{"invalid_argument": 400, "not_found": 404, "failed_precondition": 400,
		"unimplemented": 501, "internal": 500, "unavailable": 503, "unauthenticated": 401}[code]
	if status == 0 {
		status = 500
	}
	writeJSON(w, status, map[string]string{"code": code, "message": msg})
}

func writeEnvelope(w io.Writer, flags byte, payload []byte) error {
	var hdr [5]byte
	hdr[0] = flags
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(payload)))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	_, err := w.Write(payload)
	return err
}

// readEnvelope reads one envelope of a request stream; io.EOF at a clean
// end.
func readEnvelope(r io.Reader) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > 8<<20 {
		return 0, nil, fmt.Errorf("envelope of %d bytes", n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return 0, nil, io.ErrUnexpectedEOF
	}
	return hdr[0], b, nil
}

func isConnectStream(r *http.Request) bool {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return ct == "application/connect+json"
}

func isUnaryJSON(r *http.Request) bool {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return ct == "application/json"
}

// streamWriter writes the envelopes of a response stream and flushes each.
type streamWriter struct {
	w    http.ResponseWriter
	gzip bool
}

func (sw *streamWriter) send(msg any) error {
	b, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	flags := byte(0)
	if sw.gzip && len(b) > 256 {
		var z bytes.Buffer
		zw := gzip.NewWriter(&z)
		zw.Write(b)
		zw.Close()
		b, flags = z.Bytes(), 0x01
	}
	if err := writeEnvelope(sw.w, flags, b); err != nil {
		return err
	}
	http.NewResponseController(sw.w).Flush()
	return nil
}

// end writes the end-of-stream envelope: {} or {"error": {...}}.
func (sw *streamWriter) end(code, msg string) {
	var b []byte
	if code == "" {
		b = []byte("{}")
	} else {
		b, _ = json.Marshal(map[string]any{"error": map[string]string{"code": code, "message": msg}})
	}
	writeEnvelope(sw.w, 0x02, b)
	http.NewResponseController(sw.w).Flush()
}

func startStream(w http.ResponseWriter, r *http.Request) *streamWriter {
	sw := &streamWriter{w: w}
	w.Header().Set("Content-Type", "application/connect+json")
	if strings.Contains(r.Header.Get("Connect-Accept-Encoding"), "gzip") {
		sw.gzip = true
		w.Header().Set("Connect-Content-Encoding", "gzip")
	}
	w.WriteHeader(http.StatusOK)
	http.NewResponseController(w).Flush()
	return sw
}
