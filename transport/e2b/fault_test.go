package e2b_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/e2bfake"
	"github.com/tproxy/tproxy/logsink"
	"github.com/tproxy/tproxy/transport"
	"github.com/tproxy/tproxy/transport/e2b"
)

// signalSink is a Memory sink that closes a channel when an event of the
// given name arrives.
type signalSink struct {
	logsink.Memory
	name string
	once sync.Once
	seen chan struct{}
}

func newSignalSink(name string) *signalSink {
	return &signalSink{name: name, seen: make(chan struct{})}
}

func (s *signalSink) Event(ctx context.Context, e tproxy.Event) error {
	if e.Name == s.name {
		s.once.Do(func() { close(s.seen) })
	}
	return s.Memory.Event(ctx, e)
}

// blockedSession starts a session over tr and runs the block driver in
// the background until it reported "blocked"; it returns the client and
// the step's eventual error.
func blockedSession(t *testing.T, tr transport.Transport) (*host.Client, <-chan error) {
	t.Helper()
	sink := newSignalSink("blocked")
	c, err := host.Start(t.Context(), tapped(t, tr), host.WithSink(sink))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Prepare(t.Context(), tproxy.PrepareParams{SessionID: "s1"}); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.ExecStep(t.Context(), tproxy.ExecStepParams{StepID: "b", Driver: "block"})
		errc <- err
	}()
	select {
	case <-sink.seen:
	case err := <-errc:
		t.Fatalf("block step returned early: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no blocked event after 30s")
	}
	return c, errc
}

func stepErr(t *testing.T, errc <-chan error) error {
	t.Helper()
	select {
	case err := <-errc:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("the step did not fail within 30s")
		return nil
	}
}

func sandboxOf(t *testing.T, c *host.Client) e2b.Info {
	t.Helper()
	return infoOf(t, c.Process())
}

// infoOf returns the Info of an E2B process.
func infoOf(t testing.TB, p transport.Process) e2b.Info {
	t.Helper()
	info, ok := e2b.InfoOf(unwrap(p))
	if !ok {
		t.Fatalf("Process is %T, not an E2B process", p)
	}
	return info
}

// TestWorkerKilled: a worker killed inside the sandbox (OOM killer,
// operator) fails the call at once with the typed exit error: signal and
// stderr tail, as for a subprocess.
func TestWorkerKilled(t *testing.T) {
	srv := newServer(t, fakeOptions())
	c, errc := blockedSession(t, newE2B(t, srv, "worker"))
	p := sandboxOf(t, c)
	if err := srv.Signal(p.SandboxID, p.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := stepErr(t, errc)
	var ee *transport.ExitError
	if !errors.As(err, &ee) || !errors.Is(err, host.ErrClosed) {
		t.Fatalf("err = %v, want a *transport.ExitError and host.ErrClosed", err)
	}
	if ee.Status.Signal != syscall.SIGKILL || ee.Status.Code != -1 {
		t.Errorf("status = %#v, want Code -1, Signal SIGKILL", ee.Status)
	}
	if !strings.Contains(ee.Stderr, "block: waiting for cancellation") {
		t.Errorf("stderr tail %q lacks the worker's last words", ee.Stderr)
	}
	if !strings.Contains(err.Error(), "signal: killed") {
		t.Errorf("message %q does not say signal: killed", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if ids := srv.Sandboxes(); len(ids) != 0 {
		t.Errorf("sandbox not killed by Close: %v", ids)
	}
}

// TestStreamCut: the output stream breaking mid-step (no end event) fails
// the call with an exit error that says the stream was lost; Close still
// ends the worker and kills the sandbox.
func TestStreamCut(t *testing.T) {
	srv := newServer(t, fakeOptions())
	c, errc := blockedSession(t, newE2B(t, srv, "worker"))
	p := sandboxOf(t, c)
	if err := srv.CutStreams(p.SandboxID); err != nil {
		t.Fatal(err)
	}
	err := stepErr(t, errc)
	var ee *transport.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("err = %v, want a *transport.ExitError", err)
	}
	if ee.Status.Code != -1 || !strings.Contains(ee.Status.Reason, "lost the worker's output stream") {
		t.Errorf("status = %#v, want Code -1 and a lost-stream reason", ee.Status)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if ids := srv.Sandboxes(); len(ids) != 0 {
		t.Errorf("sandbox not killed by Close: %v", ids)
	}
}

// TestSandboxDeleted: the sandbox vanishing mid-session (killed elsewhere,
// expired) fails the call with an exit error naming the sandbox; Close
// then succeeds (the sandbox is already gone).
func TestSandboxDeleted(t *testing.T) {
	srv := newServer(t, fakeOptions())
	c, errc := blockedSession(t, newE2B(t, srv, "worker"))
	p := sandboxOf(t, c)
	if err := srv.DeleteSandbox(p.SandboxID); err != nil {
		t.Fatal(err)
	}
	err := stepErr(t, errc)
	var ee *transport.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("err = %v, want a *transport.ExitError", err)
	}
	if !strings.Contains(ee.Status.Reason, p.SandboxID+" no longer exists") {
		t.Errorf("reason = %q, want it to say the sandbox no longer exists", ee.Status.Reason)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestUnauthorized: a refused API key is a typed 401 that says which
// credential to check, without quoting it, and leaves no sandbox.
func TestUnauthorized(t *testing.T) {
	srv := newServer(t, fakeOptions())
	tr := newE2B(t, srv, "worker")
	tr.APIKey = "e2b_wrongwrongwrongwrong"
	_, err := tr.Start(t.Context())
	var ae *e2b.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
		t.Fatalf("err = %v, want an *e2b.APIError with status 401", err)
	}
	if !strings.Contains(err.Error(), "E2B_API_KEY") || strings.Contains(err.Error(), tr.APIKey) {
		t.Errorf("message %q should name E2B_API_KEY and not quote the key", err)
	}
	if n := srv.Calls(e2bfake.OpCreate); n != 1 {
		t.Errorf("create called %d times, want 1", n)
	}
	if _, err := tr.List(t.Context(), e2b.ListOptions{}); !errors.As(err, &ae) || ae.Status != 401 {
		t.Errorf("List: err = %v, want a 401 *e2b.APIError", err)
	}
	if ids := srv.Sandboxes(); len(ids) != 0 {
		t.Errorf("sandboxes: %v", ids)
	}
}

// rewriteToken is an http.RoundTripper that replaces envd access tokens.
type rewriteToken struct{ rt http.RoundTripper }

func (r rewriteToken) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Header.Get("X-Access-Token") != "" {
		req = req.Clone(req.Context())
		req.Header.Set("X-Access-Token", "not-the-token")
	}
	return r.rt.RoundTrip(req)
}

// TestEnvdUnauthorized: envd's plain-JSON 401 for a bad access token is a
// typed error too, and the sandbox created for the start is killed.
func TestEnvdUnauthorized(t *testing.T) {
	srv := newServer(t, fakeOptions())
	tr := newE2B(t, srv, "worker")
	tr.HTTPClient = &http.Client{Transport: rewriteToken{http.DefaultTransport}}
	_, err := tr.Start(t.Context())
	var ae *e2b.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized || !strings.HasPrefix(ae.Op, "envd") {
		t.Fatalf("err = %v, want an envd *e2b.APIError with status 401", err)
	}
	if !strings.Contains(err.Error(), "access token") {
		t.Errorf("message %q should say the access token was refused", err)
	}
	if ids := srv.Sandboxes(); len(ids) != 0 {
		t.Errorf("sandbox left after a failed start: %v", ids)
	}
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
}

// TestRetries: 429 and 5xx are retried with backoff on idempotent calls
// only; creating a sandbox is never retried.
func TestRetries(t *testing.T) {
	srv := newServer(t, fakeOptions())
	tr := newE2B(t, srv, "worker")

	srv.FailNext(e2bfake.OpCreate, http.StatusServiceUnavailable, 1)
	_, err := tr.Start(t.Context())
	var ae *e2b.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable {
		t.Fatalf("Start: err = %v, want a 503 *e2b.APIError", err)
	}
	if n := srv.Calls(e2bfake.OpCreate); n != 1 {
		t.Errorf("create was called %d times; it must not be retried", n)
	}

	srv.FailNext(e2bfake.OpUpload, http.StatusBadGateway, 2)
	p, err := tr.Start(t.Context())
	if err != nil {
		t.Fatalf("Start with 2 failing uploads: %v", err)
	}
	if n := srv.Calls(e2bfake.OpUpload); n != 3 {
		t.Errorf("upload called %d times, want 3 (2 failures, 1 success)", n)
	}
	srv.FailNext(e2bfake.OpKill, http.StatusTooManyRequests, 2)
	if err := p.Close(); err != nil {
		t.Errorf("Close with 2 throttled kills: %v", err)
	}
	if n := srv.Calls(e2bfake.OpKill); n != 3 {
		t.Errorf("kill called %d times, want 3", n)
	}
	if ids := srv.Sandboxes(); len(ids) != 0 {
		t.Errorf("sandbox not killed: %v", ids)
	}

	srv.FailNext(e2bfake.OpList, http.StatusServiceUnavailable, 2)
	if _, err := tr.List(t.Context(), e2b.ListOptions{}); err != nil {
		t.Errorf("List with 2 failures: %v", err)
	}
	tr.MaxRetries = 2
	srv.FailNext(e2bfake.OpList, http.StatusServiceUnavailable, 3)
	before := srv.Calls(e2bfake.OpList)
	_, err = tr.List(t.Context(), e2b.ListOptions{})
	if !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable {
		t.Errorf("List with retries exhausted: err = %v, want a 503 *e2b.APIError", err)
	}
	if n := srv.Calls(e2bfake.OpList) - before; n != 3 {
		t.Errorf("list called %d times with MaxRetries 2, want 3", n)
	}
	srv.FailNext(e2bfake.OpList, http.StatusBadRequest, 1)
	before = srv.Calls(e2bfake.OpList)
	if _, err = tr.List(t.Context(), e2b.ListOptions{}); !errors.As(err, &ae) || ae.Status != 400 {
		t.Errorf("List: err = %v, want a 400 *e2b.APIError", err)
	}
	if n := srv.Calls(e2bfake.OpList) - before; n != 1 {
		t.Errorf("a 400 was retried: list called %d times", n)
	}
}

// TestTimeoutRefreshed: a session longer than the sandbox's timeout
// survives because the transport refreshes it; without refreshes the same
// session dies with the sandbox (so the fake's expiry is real).
func TestTimeoutRefreshed(t *testing.T) {
	srv := newServer(t, fakeOptions())
	run := func(refresh time.Duration) error {
		tr := newE2B(t, srv, "worker")
		// Long enough for uploading the race-instrumented test binary on
		// a loaded machine, shorter than the step.
		tr.Timeout = 3 * time.Second
		tr.RefreshInterval = refresh
		c, err := host.Start(t.Context(), tapped(t, tr))
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.Prepare(t.Context(), tproxy.PrepareParams{SessionID: "long"}); err != nil {
			return err
		}
		_, err = c.ExecStep(t.Context(), tproxy.ExecStepParams{StepID: "s", Driver: "sleep", Config: map[string]any{"ms": 5000}})
		return err
	}
	if err := run(150 * time.Millisecond); err != nil {
		t.Fatalf("a 5s step in a sandbox with a 3s timeout, refreshed: %v", err)
	}
	if n := srv.Calls(e2bfake.OpTimeout); n < 2 {
		t.Errorf("timeout refreshed %d times", n)
	}
	err := run(time.Hour)
	var ee *transport.ExitError
	var ae *e2b.APIError
	switch {
	case errors.As(err, &ee) && strings.Contains(ee.Status.Reason, "no longer exists"):
	case errors.As(err, &ae) && ae.Status == http.StatusBadGateway:
		// On a loaded machine the upload can outlast the timeout: the
		// sandbox expired before the step, which shows expiry as well.
		t.Logf("without refreshes the sandbox expired before the step: %v", err)
	default:
		t.Errorf("without refreshes: err = %v, want the sandbox to expire", err)
	}
}

// TestSweep: orphans are found by tag and age and killed; younger ones and
// other people's sandboxes are left alone.
func TestSweep(t *testing.T) {
	srv := newServer(t, fakeOptions())
	tr := newE2B(t, srv, "worker")
	mk := func(meta map[string]string, age time.Duration) string {
		id, err := srv.CreateSandbox("base", time.Hour, meta)
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.SetStartedAt(id, time.Now().Add(-age)); err != nil {
			t.Fatal(err)
		}
		return id
	}
	ours := map[string]string{e2b.TagKey: e2b.TagValue, "session": "a"}
	oldOrphan := mk(ours, 3*time.Hour)
	oldOther := mk(map[string]string{e2b.TagKey: e2b.TagValue, "session": "b"}, 3*time.Hour)
	young := mk(ours, time.Minute)
	foreign := mk(map[string]string{"owner": "someone-else"}, 5*time.Hour)

	list, err := tr.List(t.Context(), e2b.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 || list[0].Metadata["session"] == "" {
		t.Errorf("List by the default tag: %+v, want the 3 tproxy sandboxes", list)
	}
	killed, err := tr.Sweep(t.Context(), e2b.ListOptions{Metadata: ours, OlderThan: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if len(killed) != 1 || killed[0] != oldOrphan {
		t.Errorf("Sweep killed %v, want only %s", killed, oldOrphan)
	}
	killed, err = tr.Sweep(t.Context(), e2b.ListOptions{OlderThan: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if len(killed) != 1 || killed[0] != oldOther {
		t.Errorf("second Sweep killed %v, want only %s", killed, oldOther)
	}
	left := srv.Sandboxes()
	if len(left) != 2 || !contains(left, young) || !contains(left, foreign) {
		t.Errorf("left %v, want %s and %s", left, young, foreign)
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestUploadSkipped: a worker with the same sha256 already executable in
// the sandbox (baked into the template) is not uploaded again; a different
// file there is replaced.
func TestUploadSkipped(t *testing.T) {
	bin, err := os.ReadFile(exe(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name     string
		file     e2bfake.File
		uploaded bool
	}{
		{"same", e2bfake.File{Data: bin, Mode: 0o755}, false},
		{"different", e2bfake.File{Data: append(bin[:len(bin):len(bin)], 0), Mode: 0o755}, true},
		{"not executable", e2bfake.File{Data: bin, Mode: 0o644}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, e2bfake.Options{TemplateFiles: map[string]e2bfake.File{"/home/user/.tproxy/worker": tt.file}})
			c, err := host.Start(t.Context(), tapped(t, newE2B(t, srv, "worker")))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got := sandboxOf(t, c).Worker == "uploaded"; got != tt.uploaded {
				t.Errorf("Worker = %q, want uploaded: %v", sandboxOf(t, c).Worker, tt.uploaded)
			}
			if n := srv.Calls(e2bfake.OpUpload); (n > 0) != tt.uploaded {
				t.Errorf("%d upload calls", n)
			}
		})
	}
}

// TestStartHeaders: the worker's Start carries a keepalive interval and no
// Connect-Timeout-Ms, which envd would turn into the worker's deadline.
func TestStartHeaders(t *testing.T) {
	srv := newServer(t, fakeOptions())
	p, err := newE2B(t, srv, "worker").Start(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	starts := 0
	for _, r := range srv.Requests() {
		if r.Path != "/process.Process/Start" {
			continue
		}
		starts++
		if v := r.Header.Get("Connect-Timeout-Ms"); v != "" {
			t.Errorf("Start sent Connect-Timeout-Ms: %s", v)
		}
		if r.Header.Get("Keepalive-Ping-Interval") != "50" {
			t.Errorf("Keepalive-Ping-Interval = %q, want 50", r.Header.Get("Keepalive-Ping-Interval"))
		}
		if r.Header.Get("Content-Type") != "application/connect+proto" {
			t.Errorf("Content-Type = %q", r.Header.Get("Content-Type"))
		}
	}
	if starts != 3 { // sha256 check, chmod, worker
		t.Errorf("%d Start calls, want 3", starts)
	}
}

// TestCloseLadder: Close closes stdin, then sends SIGTERM, then SIGKILL,
// each after its timeout, through envd's SendSignal; the sandbox is killed
// at the end either way.
func TestCloseLadder(t *testing.T) {
	srv := newServer(t, fakeOptions())
	for _, tt := range []struct {
		mode    string
		want    syscall.Signal
		signals int
	}{
		{"term-ok", syscall.SIGTERM, 1},
		{"ignore-term", syscall.SIGKILL, 2},
	} {
		t.Run(tt.mode, func(t *testing.T) {
			tr := newE2B(t, srv, tt.mode)
			tr.CloseTimeout, tr.TermTimeout = 200*time.Millisecond, 200*time.Millisecond
			p, err := tr.Start(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 6)
			if _, err := io.ReadFull(p, buf); err != nil || string(buf) != "ready\n" {
				t.Fatalf("read %q, %v", buf, err)
			}
			before := srv.Calls(e2bfake.OpSendSignal)
			if err := p.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if st := p.Exit(); st.Signal != tt.want {
				t.Errorf("exit %v, want %v", st, tt.want)
			}
			if n := srv.Calls(e2bfake.OpSendSignal) - before; n != tt.signals {
				t.Errorf("%d SendSignal calls, want %d", n, tt.signals)
			}
			if srv.Calls(e2bfake.OpCloseStdin) == 0 {
				t.Error("CloseStdin was never called")
			}
			if _, err := p.Write([]byte("late\n")); err == nil {
				t.Error("Write after Close succeeded")
			}
			if ids := srv.Sandboxes(); len(ids) != 0 {
				t.Errorf("sandbox left: %v", ids)
			}
		})
	}
}
