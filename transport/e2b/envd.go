package e2b

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/tproxy/tproxy/transport"
)

// envdBase is the base URL of the sandbox's daemon.
func (c *client) envdBase(sb *sandbox) string {
	if c.t.EnvdURL != "" {
		return strings.TrimSuffix(c.t.EnvdURL, "/")
	}
	domain := c.domain
	if sb.Domain != nil && *sb.Domain != "" {
		domain = *sb.Domain
	}
	return fmt.Sprintf("https://%d-%s.%s", EnvdPort, sb.ID, domain)
}

// envdHeader has the routing, auth and user headers of every envd call.
// The API key is never among them.
func (c *client) envdHeader(sb *sandbox) http.Header {
	h := http.Header{
		"E2b-Sandbox-Id":   {sb.ID},
		"E2b-Sandbox-Port": {strconv.Itoa(EnvdPort)},
		"Authorization":    {"Basic " + base64.StdEncoding.EncodeToString([]byte(c.user()+":"))},
	}
	if sb.AccessToken != nil && *sb.AccessToken != "" {
		h.Set("X-Access-Token", *sb.AccessToken)
	}
	return h
}

func (c *client) user() string { return firstNonEmpty(c.t.User, DefaultUser) }

// rpc makes a unary Connect call to the process service with the JSON
// codec.
func (c *client) rpc(ctx context.Context, sb *sandbox, method string, in, out any, idempotent bool) error {
	h := c.envdHeader(sb)
	h.Set("Connect-Protocol-Version", "1")
	resp, err := c.do(ctx, request{op: "envd " + method, method: http.MethodPost,
		url: c.envdBase(sb) + "/process.Process/" + method, header: h, body: jsonBody(in), idempotent: idempotent,
		ok: []int{http.StatusOK}})
	if err != nil {
		return err
	}
	if out == nil {
		drain(resp)
		return nil
	}
	return decodeJSON("envd "+method, resp, out)
}

// eventStream is an open Start stream.
type eventStream struct {
	body io.ReadCloser
	er   *envelopeReader
}

// next returns the next process event. The end of the stream is io.EOF
// when clean, the *ConnectError it carries otherwise, and
// io.ErrUnexpectedEOF when it stops without an end-of-stream envelope.
func (s *eventStream) next() (*processEvent, error) {
	flags, payload, err := s.er.Next()
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	if flags&flagEndStream != 0 {
		if err := parseEndStream(payload); err != nil {
			return nil, err
		}
		return nil, io.EOF
	}
	return decodeEvent(payload)
}

func (s *eventStream) Close() error { return s.body.Close() }

// startProcess calls process.Process/Start and returns the open stream. It
// sets Keepalive-Ping-Interval and, deliberately, no Connect-Timeout-Ms:
// envd would make that the process's deadline and kill it. ctx must live
// as long as the stream is read. Start is not retried: it is not
// idempotent.
func (c *client) startProcess(ctx context.Context, sb *sandbox, req startRequest) (*eventStream, error) {
	h := c.envdHeader(sb)
	h.Set("Connect-Protocol-Version", "1")
	h.Set("Keepalive-Ping-Interval", strconv.Itoa(c.keepaliveSeconds()))
	if c.t.Gzip {
		h.Set("Connect-Accept-Encoding", "gzip")
	}
	msg, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	body := appendEnvelope(nil, 0, msg)
	resp, err := c.do(ctx, request{op: "envd Start", method: http.MethodPost,
		url: c.envdBase(sb) + "/process.Process/Start", header: h, ok: []int{http.StatusOK},
		body: func() (io.Reader, string, error) {
			return bytes.NewReader(body), "application/connect+json", nil
		}})
	if err != nil {
		return nil, err
	}
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if ct != "application/connect+json" {
		drain(resp)
		return nil, fmt.Errorf("e2b: envd Start: answered with Content-Type %q, want application/connect+json", ct)
	}
	enc := resp.Header.Get("Connect-Content-Encoding")
	if enc != "" && enc != "identity" && enc != "gzip" {
		drain(resp)
		return nil, fmt.Errorf("e2b: envd Start: unsupported Connect-Content-Encoding %q", enc)
	}
	return &eventStream{body: resp.Body, er: newEnvelopeReader(resp.Body, enc == "gzip")}, nil
}

func (c *client) keepaliveSeconds() int {
	d := c.t.KeepaliveInterval
	if d <= 0 {
		d = DefaultKeepaliveInterval
	}
	return max(1, int(d.Seconds()))
}

// maxRunOutput bounds what run keeps of a helper command's output.
const maxRunOutput = 64 << 10

// run runs a short helper command in the sandbox with stdin disabled and
// returns its exit status and (bounded) output.
func (c *client) run(ctx context.Context, sb *sandbox, cmd string, args ...string) (transport.ExitStatus, string, string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	no := false
	s, err := c.startProcess(ctx, sb, startRequest{Process: processConfig{Cmd: cmd, Args: args}, Stdin: &no})
	if err != nil {
		return transport.ExitStatus{}, "", "", err
	}
	defer s.Close()
	var stdout, stderr bytes.Buffer
	for {
		ev, err := s.next()
		if err != nil {
			if err == io.EOF {
				err = errors.New("the stream ended without an end event")
			}
			return transport.ExitStatus{}, stdout.String(), stderr.String(), fmt.Errorf("e2b: running %s in the sandbox: %w", cmd, err)
		}
		switch {
		case ev.Data != nil:
			if stdout.Len() < maxRunOutput {
				stdout.Write(ev.Data.Stdout)
			}
			if stderr.Len() < maxRunOutput {
				stderr.Write(ev.Data.Stderr)
			}
		case ev.End != nil:
			return ev.End.exitStatus(), stdout.String(), stderr.String(), nil
		}
	}
}

// ensureWorker makes sure an executable copy of the local binary (whose
// sha256 is sum) is at the remote path, and reports whether it uploaded.
//
// The check runs sha256sum in the sandbox rather than trusting a sidecar
// checksum file: it verifies the bytes actually there (a partial or
// replaced file fails), costs one short process, and needs nothing but
// coreutils, which every E2B template has. If the check cannot run, the
// worker is simply uploaded.
func (c *client) ensureWorker(ctx context.Context, sb *sandbox, sum string) (uploaded bool, err error) {
	remote := firstNonEmpty(c.t.RemotePath, DefaultRemotePath)
	st, out, _, err := c.run(ctx, sb, "/bin/sh", "-c", `test -x "$1" && sha256sum "$1"`, "sh", remote)
	if err == nil && st.Success() {
		if f := strings.Fields(out); len(f) > 0 && f[0] == sum {
			return false, nil
		}
	}
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if err := c.upload(ctx, sb, c.t.Binary, remote); err != nil {
		return true, err
	}
	// Uploaded files are 0644.
	st, _, errOut, err := c.run(ctx, sb, "/bin/sh", "-c", `chmod 0755 "$1"`, "sh", remote)
	if err != nil {
		return true, err
	}
	if !st.Success() {
		return true, fmt.Errorf("e2b: chmod of the worker in the sandbox failed: %v: %s", st, strings.TrimSpace(errOut))
	}
	return true, nil
}

// upload stores the local file at remote through envd's file API
// (multipart, which every envd version accepts), streamed from disk.
// Uploading overwrites, so it is retried.
func (c *client) upload(ctx context.Context, sb *sandbox, local, remote string) error {
	q := url.Values{"path": {remote}, "username": {c.user()}}
	op := "envd upload " + path.Base(remote)
	resp, err := c.do(ctx, request{op: op, method: http.MethodPost,
		url: c.envdBase(sb) + "/files?" + q.Encode(), header: c.envdHeader(sb), idempotent: true,
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
