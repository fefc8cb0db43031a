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
	"time"
)

// APIError is a non-success answer from the E2B control plane or from the
// sandbox's daemon (envd), after any retries. Use errors.As to branch on
// Status; a 401 means the API key (or, from envd, the sandbox's access
// token) was refused.
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
		if strings.HasPrefix(e.Op, "envd") {
			b.WriteString(" (the sandbox's daemon refused its access token)")
		} else {
			b.WriteString(" (the E2B API key was refused: check E2B_API_KEY or E2B.APIKey)")
		}
	}
	return b.String()
}

// Temporary reports whether the status is one that retrying may cure.
func (e *APIError) Temporary() bool { return retryable(e.Status) }

func retryable(status int) bool {
	return status == http.StatusTooManyRequests || status == http.StatusBadGateway ||
		status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout ||
		status == http.StatusInternalServerError
}

// secrets masks a credential in anything that may reach an error or log.
type secrets []string

func (s secrets) mask(msg string) string {
	for _, v := range s {
		if v != "" {
			msg = strings.ReplaceAll(msg, v, "***MASKED***")
		}
	}
	return msg
}

// retrier runs idempotent calls again on 429, 5xx and transport errors,
// with exponential backoff (honouring Retry-After up to a bound).
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
			if !ae.Temporary() {
				return nil, err
			}
			retryAfter = ae.retryAfter
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

// apiError reads an error body: {"code": 401, "message": "..."} from the
// control plane and envd's HTTP API, {"code": "not_found", "message":
// "..."} from a Connect unary call.
func (c *client) apiError(op string, resp *http.Response) *APIError {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &APIError{Op: op, Status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After")}
	var body struct {
		Code    json.RawMessage `json:"code"`
		Message string          `json:"message"`
	}
	if json.Unmarshal(data, &body) == nil && (body.Message != "" || body.Code != nil) {
		e.Code = strings.Trim(string(body.Code), `"`)
		e.Message = body.Message
	} else {
		e.Message = strings.TrimSpace(truncate(data, 300))
	}
	e.Message = c.secrets.mask(e.Message)
	return e
}

func (s secrets) maskErr(err error) error {
	msg := err.Error()
	if m := s.mask(msg); m != msg {
		return errors.New(m)
	}
	return err
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

// decodeJSON reads resp's body into v and closes it.
func decodeJSON(op string, resp *http.Response, v any) error {
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(v); err != nil {
		return fmt.Errorf("e2b: %s: decoding the response: %w", op, err)
	}
	return nil
}

// drain discards and closes resp's body, so its connection can be reused.
func drain(resp *http.Response) {
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}
