package e2b

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"

	"connectrpc.com/connect"

	filesystempb "github.com/tproxy/tproxy/internal/e2benvd/filesystem"
	"github.com/tproxy/tproxy/internal/e2benvd/filesystem/filesystempbconnect"
	processpb "github.com/tproxy/tproxy/internal/e2benvd/process"
	"github.com/tproxy/tproxy/internal/e2benvd/process/processpbconnect"
	"github.com/tproxy/tproxy/transport"
)

// maxMessage caps one envd message either way. envd sends data in chunks
// of at most 32 KiB; the cap only protects memory from a broken or
// hostile peer.
const maxMessage = 4 << 20

// envd is the client of one sandbox's daemon: the process and filesystem
// services through connect-go and the code generated from the schema in
// internal/e2benvd, and the file API through net/http.
type envd struct {
	c    *client
	sb   *sandbox
	base string
	proc processpbconnect.ProcessClient
	fs   filesystempbconnect.FilesystemClient
}

// envd returns the daemon client of sb.
func (c *client) envd(sb *sandbox) *envd {
	base := c.envdBase(sb)
	hc := &envdHTTP{c: c, header: c.envdHeader(sb)}
	opts := []connect.ClientOption{connect.WithReadMaxBytes(maxMessage), connect.WithSendMaxBytes(maxMessage)}
	if c.t.JSON {
		opts = append(opts, connect.WithProtoJSON())
	}
	if !c.t.Gzip {
		// connect-go asks for gzip by default: on a fast link it is the
		// largest single cost of a call.
		opts = append(opts, connect.WithAcceptCompression("gzip", nil, nil))
	}
	return &envd{c: c, sb: sb, base: base,
		proc: processpbconnect.NewProcessClient(hc, base, opts...),
		fs:   filesystempbconnect.NewFilesystemClient(hc, base, opts...)}
}

// envdBase is the base URL of the sandbox's daemon.
func (c *client) envdBase(sb *sandbox) string {
	if c.t.EnvdURL != "" {
		return strings.TrimSuffix(c.t.EnvdURL, "/")
	}
	domain := c.domain
	if sb.Domain != nil && *sb.Domain != "" {
		domain = *sb.Domain
	}
	return fmt.Sprintf("https://%d-%s.%s", envdPort, sb.ID, domain)
}

// envdHeader has the routing, auth and user headers of every envd call.
// The API key is never among them.
func (c *client) envdHeader(sb *sandbox) http.Header {
	h := http.Header{
		"E2b-Sandbox-Id":   {sb.ID},
		"E2b-Sandbox-Port": {strconv.Itoa(envdPort)},
		"Authorization":    {"Basic " + base64.StdEncoding.EncodeToString([]byte(c.user()+":"))},
		"User-Agent":       {userAgent},
	}
	if sb.AccessToken != nil && *sb.AccessToken != "" {
		h.Set("X-Access-Token", *sb.AccessToken)
	}
	return h
}

func (c *client) user() string { return firstNonEmpty(c.t.User, defaultUser) }

// envdHTTP is the connect.HTTPClient of one sandbox. It adds the
// sandbox's headers and makes every answer that is not a 200 an
// *APIError: the edge's 502 for a gone sandbox, envd's plain-JSON 401,
// Connect's unary errors and redirects (never followed) alike, so that
// callers branch on one type and its masked fields.
type envdHTTP struct {
	c      *client
	header http.Header
}

func (h *envdHTTP) Do(req *http.Request) (*http.Response, error) {
	for k, v := range h.header {
		req.Header[k] = v
	}
	resp, err := h.c.http.Do(req)
	if err != nil {
		return nil, h.c.secrets.maskErr(err)
	}
	if resp.StatusCode == http.StatusOK {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, h.c.apiError("envd "+path.Base(req.URL.Path), resp)
}

// envdError makes a failed envd call's error readable: an *APIError as
// it is (it names the call), anything else wrapped with the call's name;
// connect.CodeOf still reads a Connect code through it.
func envdError(op string, err error) error {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae
	}
	return fmt.Errorf("e2b: envd %s: %w", op, err)
}

// call runs one unary envd call, and runs it again, when idempotent, on
// a temporary answer or a reset connection, as client.do does for HTTP
// calls.
func (e *envd) call(ctx context.Context, op string, idempotent bool, f func(context.Context) error) error {
	attempts := 1
	if idempotent {
		attempts += e.c.retry.max
	}
	for attempt := 0; ; attempt++ {
		err := f(ctx)
		if err == nil {
			return nil
		}
		retry := ""
		var ae *APIError
		switch {
		case attempt+1 >= attempts || ctx.Err() != nil:
			return envdError(op, err)
		case errors.As(err, &ae):
			if !ae.temporary() {
				return ae
			}
			retry = ae.retryAfter
		case !retryableNetErr(err):
			return envdError(op, err)
		}
		if werr := e.c.retry.wait(ctx, attempt, retry); werr != nil {
			return envdError(op, err)
		}
	}
}

// startRequest prepares a Start call. It carries Keepalive-Ping-Interval
// and, deliberately, no Connect-Timeout-Ms: envd would make that the
// process's deadline and kill it. (connect-go sends the header only for a
// context with a deadline, which is why every Start runs under a context
// without one.)
func (e *envd) startRequest(msg *processpb.StartRequest) *connect.Request[processpb.StartRequest] {
	req := connect.NewRequest(msg)
	req.Header().Set("Keepalive-Ping-Interval", strconv.Itoa(e.c.keepaliveSeconds()))
	return req
}

func (c *client) keepaliveSeconds() int {
	d := c.t.KeepaliveInterval
	if d <= 0 {
		d = defaultKeepaliveInterval
	}
	return max(1, int(d.Seconds()))
}

// maxRunOutput bounds what run keeps of a helper command's output.
const maxRunOutput = 64 << 10

// runResult is a helper command's exit status and (bounded) output.
type runResult struct {
	status         transport.ExitStatus
	stdout, stderr string
}

// run runs a short helper command in the sandbox with stdin disabled. It
// reads the stream to its end-of-stream message, so that envd sees a
// complete call and the connection goes back to the pool for the next
// call. Any failure to run it is an error: a Start answered with an
// end-of-stream error, a 401, a stream without an end event.
func (e *envd) run(ctx context.Context, cmd string, args ...string) (runResult, error) {
	what := strings.Join(append([]string{cmd}, args...), " ")
	fail := func(err error) (runResult, error) {
		return runResult{}, fmt.Errorf("e2b: running %q in the sandbox: %w", what, err)
	}
	// No deadline reaches the request (see startRequest); ctx's end
	// cancels it instead.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	no := false
	stream, err := e.proc.Start(sctx, e.startRequest(&processpb.StartRequest{
		Process: &processpb.ProcessConfig{Cmd: cmd, Args: args}, Stdin: &no}))
	if err != nil {
		return fail(envdError("Start", err))
	}
	defer stream.Close()
	var stdout, stderr bytes.Buffer
	var end *processpb.ProcessEvent_EndEvent
	for stream.Receive() {
		switch ev := stream.Msg().GetEvent().GetEvent().(type) {
		case *processpb.ProcessEvent_Data:
			if b := ev.Data.GetStdout(); len(b) > 0 && stdout.Len() < maxRunOutput {
				stdout.Write(b)
			}
			if b := ev.Data.GetStderr(); len(b) > 0 && stderr.Len() < maxRunOutput {
				stderr.Write(b)
			}
		case *processpb.ProcessEvent_End:
			end = ev.End
		}
	}
	if err := stream.Err(); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return fail(envdError("Start", err))
	}
	if end == nil {
		return fail(errors.New("the stream ended without an end event"))
	}
	return runResult{status: exitStatus(end), stdout: stdout.String(), stderr: stderr.String()}, nil
}

// ensureWorker makes sure an executable copy of the local worker is at
// its remote path, and reports how many bytes it uploaded (0: the same
// file was there).
//
// The check runs sha256sum in the sandbox rather than trusting a sidecar
// checksum file: it verifies the bytes actually there (a partial or
// replaced file fails), costs one short process, and needs nothing but
// coreutils, which every E2B template has. A check that cannot run (a
// 401, an envd error) fails the start before any upload: the same fault
// would doom the upload and the worker's start.
func (e *envd) ensureWorker(ctx context.Context, w workerSource) (int64, error) {
	r, err := e.run(ctx, "/bin/sh", "-c", `test -x "$1" && sha256sum "$1"`, "sh", w.remote)
	if err != nil {
		return 0, fmt.Errorf("e2b: checking the worker in the sandbox: %w", err)
	}
	if r.status.Success() {
		if f := strings.Fields(r.stdout); len(f) > 0 && f[0] == w.sum {
			return 0, nil
		}
	}
	if err := e.upload(ctx, w.local, w.remote); err != nil {
		return 0, err
	}
	// Uploaded files are 0644.
	r, err = e.run(ctx, "/bin/sh", "-c", `chmod 0755 "$1"`, "sh", w.remote)
	if err != nil {
		return w.size, err
	}
	if !r.status.Success() {
		return w.size, fmt.Errorf("e2b: chmod of the worker in the sandbox failed: %v: %s", r.status, strings.TrimSpace(r.stderr))
	}
	return w.size, nil
}

// checkBaked checks, with one Stat, that the worker baked into the
// template is there and executable.
func (e *envd) checkBaked(ctx context.Context, remote string) error {
	var st *filesystempb.EntryInfo
	err := e.call(ctx, "Stat", true, func(ctx context.Context) error {
		resp, err := e.fs.Stat(ctx, connect.NewRequest(&filesystempb.StatRequest{Path: remote}))
		if err == nil {
			st = resp.Msg.GetEntry()
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("e2b: template %q has no worker at E2B.WorkerPath %s: %w", e.c.template(), remote, err)
	}
	if st.GetType() != filesystempb.FileType_FILE_TYPE_FILE || st.GetMode()&0o111 == 0 {
		return fmt.Errorf("e2b: template %q: E2B.WorkerPath %s is not an executable file (type %v, mode %o)",
			e.c.template(), remote, st.GetType(), st.GetMode())
	}
	return nil
}

// upload stores the local file at remote through envd's file API
// (multipart, which every envd version accepts), streamed from disk.
// Uploading overwrites, so it is retried on a temporary failure.
func (e *envd) upload(ctx context.Context, local, remote string) error {
	q := url.Values{"path": {remote}, "username": {e.c.user()}}
	op := "envd upload " + path.Base(remote)
	resp, err := e.c.do(ctx, request{op: op, method: http.MethodPost,
		url: e.base + "/files?" + q.Encode(), header: e.c.envdHeader(e.sb), idempotent: true,
		body: func() (io.Reader, string, error) {
			f, err := os.Open(local)
			if err != nil {
				return nil, "", err
			}
			pr, pw := io.Pipe()
			mw := multipart.NewWriter(pw)
			go func() {
				defer f.Close()
				part, err := mw.CreateFormFile("file", path.Base(remote))
				if err == nil {
					_, err = io.Copy(part, f)
				}
				if err == nil {
					err = mw.Close()
				}
				pw.CloseWithError(err)
			}()
			return pr, mw.FormDataContentType(), nil
		}})
	if err != nil {
		return err
	}
	drain(resp)
	return nil
}

// sendSignal is SendSignal; signalling is harmless to repeat.
func (e *envd) sendSignal(ctx context.Context, pid uint32, sig processpb.Signal) error {
	return e.call(ctx, "SendSignal", true, func(ctx context.Context) error {
		_, err := e.proc.SendSignal(ctx, connect.NewRequest(&processpb.SendSignalRequest{
			Process: pidSelector(pid), Signal: sig}))
		return err
	})
}

// closeStdin is CloseStdin; closing twice is harmless.
func (e *envd) closeStdin(ctx context.Context, pid uint32) error {
	return e.call(ctx, "CloseStdin", true, func(ctx context.Context) error {
		_, err := e.proc.CloseStdin(ctx, connect.NewRequest(&processpb.CloseStdinRequest{Process: pidSelector(pid)}))
		return err
	})
}

// sendInput is SendInput, never retried: a retry after a lost answer
// could write the bytes twice.
func (e *envd) sendInput(ctx context.Context, pid uint32, b []byte) error {
	_, err := e.proc.SendInput(ctx, connect.NewRequest(&processpb.SendInputRequest{
		Process: pidSelector(pid), Input: &processpb.ProcessInput{Input: &processpb.ProcessInput_Stdin{Stdin: b}}}))
	if err != nil {
		return envdError("SendInput", err)
	}
	return nil
}

func pidSelector(pid uint32) *processpb.ProcessSelector {
	return &processpb.ProcessSelector{Selector: &processpb.ProcessSelector_Pid{Pid: pid}}
}
