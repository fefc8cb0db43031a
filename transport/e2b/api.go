package e2b

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// APIError is a non-success answer from the E2B control plane, from the
// sandbox's daemon (envd) or from E2B's edge in front of it, after any
// retries. Use errors.As to branch on Status: from the control plane a
// 401 means the API key was refused; from envd (Op starting with "envd")
// a 401 means the access token or the user (E2B.User) was refused, and
// the message says which; a 502 whose message says the sandbox was not
// found means the sandbox is gone.
type APIError struct {
	// Op is what was attempted, such as "create sandbox" or "upload worker".
	Op string
	// Status is the HTTP status code.
	Status int
	// Code is the error code from the body, if any: E2B's numeric code as a
	// string, or a Connect error code.
	Code string
	// Message is the server's message. It never contains the API key: a
	// server echoing it is masked.
	Message string

	retryAfter string // the Retry-After header, for the backoff
}

// Error names the operation, the status and the server's message; for 401
// it says which credential to check.
func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "e2b: %s: HTTP %d", e.Op, e.Status)
	if t := http.StatusText(e.Status); t != "" {
		fmt.Fprintf(&b, " %s", t)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if e.Status == http.StatusUnauthorized {
		switch {
		case !strings.HasPrefix(e.Op, "envd"):
			b.WriteString(" (the E2B API key was refused: check E2B_API_KEY or E2B.APIKey)")
		case strings.Contains(strings.ToLower(e.Message), "username"):
			b.WriteString(" (the sandbox has no such user: check E2B.User)")
		case strings.Contains(strings.ToLower(e.Message), "access token") || e.Code == "401":
			b.WriteString(" (the sandbox's daemon refused its access token)")
		}
	}
	if e.sandboxGone() {
		b.WriteString(" (the sandbox is gone: killed or expired)")
	}
	return b.String()
}

// temporary reports whether retrying may cure the answer: throttling, and
// a gateway that could not reach a sandbox that still exists. A 500 is
// envd's or the API's own verdict ("error ensuring directories", "text
// file busy") and is not retried.
func (e *APIError) temporary() bool {
	switch e.Status {
	case http.StatusTooManyRequests, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	case http.StatusBadGateway:
		return !e.sandboxGone()
	}
	return false
}

// sandboxGone reports whether E2B's edge said the sandbox does not exist
// (502 "sandbox ... not found"): nothing sent to it can succeed any more.
func (e *APIError) sandboxGone() bool {
	if e.Status != http.StatusBadGateway {
		return false
	}
	m := strings.ToLower(e.Message)
	return strings.Contains(m, "sandbox") && strings.Contains(m, "not found")
}

// isSandboxGone reports whether err is the edge's answer for a sandbox
// that no longer exists.
func isSandboxGone(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.sandboxGone()
}

// retryableNetErr reports whether a call that failed without an answer
// may be sent again: the connection was reset or closed under it, which
// a proxy or a stale keep-alive connection does. Other failures (DNS,
// TLS, a refused connection) do not cure themselves in a second.
func retryableNetErr(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

// masked replaces a secret, as tproxy.Masked does.
const masked = "***MASKED***"

// minPiece is the length of the shortest piece of a secret that is masked.
// Error bodies are cut, so a body can hold any part of the key, not only
// all of it: every piece of 5 bytes or more is masked, and an error never
// holds more than 4 bytes of the key in a row. Four is also what a real
// key shares with any other key: its "e2b_" prefix.
const minPiece = 5

// secrets masks credentials in anything that may reach an error or a log.
type secrets []string

// mask replaces every occurrence of a secret, and every piece of one
// minPiece bytes or longer, with masked.
func (s secrets) mask(msg string) string {
	for _, v := range s {
		if v == "" {
			continue
		}
		msg = strings.ReplaceAll(msg, v, masked)
		msg = maskPieces(msg, v)
	}
	return msg
}

// maskPieces replaces every run of msg made of pieces of secret at least
// minPiece bytes long with masked. A piece is found through its first
// minPiece bytes: every longer piece is covered by the windows of that
// length it starts with, and overlapping or adjacent windows are masked as
// one run.
func maskPieces(msg, secret string) string {
	if len(secret) < minPiece || len(msg) < minPiece {
		return msg
	}
	windows := make(map[string]struct{}, len(secret)-minPiece+1)
	for i := 0; i+minPiece <= len(secret); i++ {
		windows[secret[i:i+minPiece]] = struct{}{}
	}
	var b strings.Builder
	copied, runStart, runEnd := 0, -1, -1
	flush := func() {
		b.WriteString(msg[copied:runStart])
		b.WriteString(masked)
		copied = runEnd
	}
	for i := 0; i+minPiece <= len(msg); i++ {
		if _, ok := windows[msg[i:i+minPiece]]; !ok {
			continue
		}
		if runStart >= 0 && i > runEnd {
			flush()
			runStart = -1
		}
		if runStart < 0 {
			runStart = i
		}
		runEnd = i + minPiece
	}
	if runStart < 0 {
		return msg
	}
	flush()
	b.WriteString(msg[copied:])
	out := b.String()
	// Only a secret that shares a piece with the mask itself (or with
	// what surrounds a run) can leave one behind: say nothing then.
	for i := 0; i+minPiece <= len(out); i++ {
		if _, ok := windows[out[i:i+minPiece]]; ok {
			return ""
		}
	}
	return out
}

// maskErr returns err with every secret masked in its message. An error
// whose message holds none is returned as it is. Otherwise the result
// keeps only the masked message, and answers errors.Is as err does (so
// context.Canceled and the like are still recognised) and errors.As for
// an *APIError, whose fields are always masked; nothing reaches the
// unmasked text.
func (s secrets) maskErr(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if m := s.mask(msg); m != msg {
		return &maskedError{msg: m, cause: err}
	}
	return err
}

// maskedError is an error whose message had a secret masked out.
type maskedError struct {
	msg   string
	cause error
}

func (e *maskedError) Error() string { return e.msg }

// Is reports whether the original error matches target, without giving
// the original out.
func (e *maskedError) Is(target error) bool { return errors.Is(e.cause, target) }

// As finds an *APIError in the original error: its fields are masked when
// it is made.
func (e *maskedError) As(target any) bool {
	if t, ok := target.(**APIError); ok {
		return errors.As(e.cause, t)
	}
	return false
}

// retrier runs idempotent calls again on temporary answers and reset
// connections, with exponential backoff (honouring Retry-After up to a
// bound).
type retrier struct {
	max  int
	base time.Duration
}

const maxBackoff = 10 * time.Second

func (r retrier) wait(ctx context.Context, attempt int, retryAfter string) error {
	d := r.base << attempt
	if s, err := strconv.Atoi(strings.TrimSpace(retryAfter)); err == nil && s >= 0 {
		d = max(d, time.Duration(s)*time.Second)
	}
	d = min(d, maxBackoff)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// request describes one HTTP call to the control plane or envd.
type request struct {
	op         string
	method     string
	url        string
	header     http.Header
	body       func() (io.Reader, string, error) // fresh body and its content type, per attempt
	idempotent bool
	ok         []int // success statuses; default 200..299
}

// do sends req, retrying when it is idempotent, and returns the response
// of the first success with its body unread, or an error (an *APIError for
// an HTTP failure). The caller closes the body.
func (c *client) do(ctx context.Context, req request) (*http.Response, error) {
	attempts := 1
	if req.idempotent {
		attempts += c.retry.max
	}
	var lastErr error
	for attempt := 0; attempt < attempts; attempt++ {
		resp, err := c.once(ctx, req)
		if err == nil {
			return resp, nil
		}
		lastErr = err
		retryAfter := ""
		var ae *APIError
		switch {
		case ctx.Err() != nil:
			return nil, lastErr
		case errors.As(err, &ae):
			if !ae.temporary() {
				return nil, err
			}
			retryAfter = ae.retryAfter
		case !retryableNetErr(err):
			return nil, err
		}
		if attempt+1 < attempts {
			if werr := c.retry.wait(ctx, attempt, retryAfter); werr != nil {
				return nil, lastErr
			}
		}
	}
	return nil, lastErr
}

func (c *client) once(ctx context.Context, req request) (*http.Response, error) {
	var body io.Reader
	ctype := ""
	if req.body != nil {
		var err error
		if body, ctype, err = req.body(); err != nil {
			return nil, fmt.Errorf("e2b: %s: %w", req.op, err)
		}
	}
	hr, err := http.NewRequestWithContext(ctx, req.method, req.url, body)
	if err != nil {
		return nil, fmt.Errorf("e2b: %s: %w", req.op, c.secrets.maskErr(err))
	}
	for k, v := range req.header {
		hr.Header[k] = v
	}
	if ctype != "" {
		hr.Header.Set("Content-Type", ctype)
	}
	hr.Header.Set("User-Agent", userAgent)
	resp, err := c.http.Do(hr)
	if err != nil {
		return nil, fmt.Errorf("e2b: %s: %w", req.op, c.secrets.maskErr(err))
	}
	okStatus := resp.StatusCode/100 == 2
	if len(req.ok) > 0 {
		okStatus = false
		for _, s := range req.ok {
			okStatus = okStatus || resp.StatusCode == s
		}
	}
	if okStatus {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, c.apiError(req.op, resp)
}

// maxErrorBody is how much of an error body that is not JSON an
// *APIError quotes.
const maxErrorBody = 300

// apiError reads an error body: {"code": 401, "message": "..."} from the
// control plane and envd's HTTP API, {"code": "not_found", "message":
// "..."} from a Connect unary call. Every field is masked, and a body is
// masked before it is cut, so that a cut cannot leave a piece of the key
// too short to be recognised.
func (c *client) apiError(op string, resp *http.Response) *APIError {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &APIError{Op: op, Status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After")}
	var body struct {
		Code    json.RawMessage `json:"code"`
		Message string          `json:"message"`
	}
	switch {
	case resp.StatusCode/100 == 3 && resp.Header.Get("Location") != "":
		// Not followed (see noRedirects): say where it pointed.
		e.Message = fmt.Sprintf("redirected to %q, not followed: the API key and access tokens go only to the host they are for (set E2B_API_URL or E2B.APIURL to the new address)",
			truncate([]byte(c.secrets.mask(resp.Header.Get("Location"))), maxErrorBody))
	case json.Unmarshal(data, &body) == nil && (body.Message != "" || body.Code != nil):
		var code string
		if json.Unmarshal(body.Code, &code) != nil {
			code = string(body.Code) // E2B's number, or whatever it is
		}
		e.Code, e.Message = code, body.Message
	default:
		e.Message = strings.TrimSpace(truncate([]byte(c.secrets.mask(string(data))), maxErrorBody))
	}
	e.Op, e.Code, e.Message = c.secrets.mask(e.Op), c.secrets.mask(e.Code), c.secrets.mask(e.Message)
	return e
}

// jsonBody encodes v once and returns a body func for request.
func jsonBody(v any) func() (io.Reader, string, error) {
	data, err := json.Marshal(v)
	return func() (io.Reader, string, error) {
		if err != nil {
			return nil, "", err
		}
		return bytes.NewReader(data), "application/json", nil
	}
}

// decodeJSON reads resp's body into v and closes it, read to its end, so
// that its connection can be reused.
func decodeJSON(op string, resp *http.Response, v any) error {
	defer drain(resp)
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(v); err != nil {
		return fmt.Errorf("e2b: %s: decoding the response: %w", op, err)
	}
	return nil
}

func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "..."
}

// drain discards and closes resp's body, so its connection can be reused.
func drain(resp *http.Response) {
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}
