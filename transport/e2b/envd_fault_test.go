package e2b_test

import (
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/e2bfake"
	"github.com/tproxy/tproxy/transport/e2b"
)

// These tests pin the fixes of what a run against a real envd found
// (issue 16, M1–M5) and what the cloud's source says it will do.

// TestUnknownUserNamed (M1): envd's 401 for a user the sandbox does not
// have names the user, not the access token, and stops the start before
// any upload.
func TestUnknownUserNamed(t *testing.T) {
	srv := newServer(t, fakeOptions())
	tr := newE2B(t, srv, "worker")
	tr.User = "nosuchuser"
	_, err := tr.Start(t.Context())
	var ae *e2b.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
		t.Fatalf("err = %v, want a 401 *e2b.APIError", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "nosuchuser") || !strings.Contains(msg, "E2B.User") || strings.Contains(msg, "access token") {
		t.Errorf("message %q should name the user and E2B.User, not the access token", msg)
	}
	if n := srv.Calls(e2bfake.OpUpload); n != 0 {
		t.Errorf("%d uploads after the refusal", n)
	}
	if ids := srv.Sandboxes(); len(ids) != 0 {
		t.Errorf("sandbox left: %v", ids)
	}
}

// TestHelperFailureStopsBeforeUpload (M2): the checksum helper's Start
// failing, with an end-of-stream error or a 401, fails the start before
// the upload begins.
func TestHelperFailureStopsBeforeUpload(t *testing.T) {
	for _, tt := range []struct {
		name  string
		fault func(*e2bfake.Server)
		want  string
	}{
		{"end-of-stream error", func(s *e2bfake.Server) {
			s.FailStream(e2bfake.OpStart, connect.CodeInternal, "error starting process: permission denied", 1)
		}, "permission denied"},
		{"401", func(s *e2bfake.Server) { s.FailNext(e2bfake.OpStart, http.StatusUnauthorized, 1) }, "401"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, fakeOptions())
			tt.fault(srv)
			_, err := newE2B(t, srv, "worker").Start(t.Context())
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "checking the worker") {
				t.Fatalf("err = %v, want the checksum helper's failure (%s)", err, tt.want)
			}
			if n := srv.Calls(e2bfake.OpUpload); n != 0 {
				t.Errorf("%d uploads began after the helper failed", n)
			}
			if ids := srv.Sandboxes(); len(ids) != 0 {
				t.Errorf("sandbox left: %v", ids)
			}
		})
	}
}

// TestOnlyTemporaryStatusesRetried (M3): 429, 502, 503 and 504 are
// retried; a 500 ("error ensuring directories", "text file busy") and a
// 400 are permanent and fail at once.
func TestOnlyTemporaryStatusesRetried(t *testing.T) {
	srv := newServer(t, fakeOptions())
	for _, tt := range []struct {
		status int
		calls  int
		ok     bool
	}{
		{http.StatusTooManyRequests, 2, true},
		{http.StatusBadGateway, 2, true},
		{http.StatusServiceUnavailable, 2, true},
		{http.StatusGatewayTimeout, 2, true},
		{http.StatusInternalServerError, 1, false},
		{http.StatusBadRequest, 1, false},
	} {
		t.Run(http.StatusText(tt.status), func(t *testing.T) {
			before := srv.Calls(e2bfake.OpUpload)
			srv.FailNext(e2bfake.OpUpload, tt.status, 1)
			p, err := newE2B(t, srv, "worker").Start(t.Context())
			if err == nil {
				p.Close()
			}
			if (err == nil) != tt.ok {
				t.Errorf("Start: err = %v, want success %v", err, tt.ok)
			}
			if n := srv.Calls(e2bfake.OpUpload) - before; n != tt.calls {
				t.Errorf("%d upload calls, want %d", n, tt.calls)
			}
		})
	}
}

// TestHelperStreamsReadToEnd (M4): helper streams are read to their
// end-of-stream message, so envd sees no abandoned call and the
// connection goes back to the pool: a whole session with an upload opens
// a handful of connections, not one per call.
func TestHelperStreamsReadToEnd(t *testing.T) {
	srv := newServer(t, fakeOptions())
	c, err := host.Start(t.Context(), tapped(t, newE2B(t, srv, "worker")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Ping(t.Context(), "x"); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if n := srv.Abandoned(); n != 0 {
		t.Errorf("%d Start streams abandoned before their end", n)
	}
	// The control plane and the helpers share one connection, one call
	// after the other; the worker's output stream and its input stream
	// hold one each for the session; Close's calls need one more.
	if n := srv.Conns(); n > 4 {
		t.Errorf("%d connections for one session, want at most 4", n)
	}
	t.Logf("%d connections, %d requests", srv.Conns(), len(srv.Requests()))
}

// TestCloseStdinSkippedAfterEnd (M5): CloseStdin is not sent to a worker
// whose end has arrived, whether it had been handled or was waiting
// behind output the host never read.
func TestCloseStdinSkippedAfterEnd(t *testing.T) {
	for _, mode := range []string{"exit3", "flood-exit"} {
		t.Run(mode, func(t *testing.T) {
			srv := newServer(t, fakeOptions())
			p, err := newE2B(t, srv, mode).Start(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			id := infoOf(t, p).SandboxID
			waitFor(t, "the worker reaped", func() bool { return len(srv.Running(id)) == 0 })
			switch mode {
			case "exit3":
				// The fake reaps the worker before its end event reaches
				// the client; M5 is about an end that has arrived.
				select {
				case <-p.Done():
				case <-time.After(time.Minute):
					t.Fatal("the worker's end never arrived")
				}
			case "flood-exit":
				// The end is behind output the host never read: Close
				// waits for it once that output has begun to arrive.
				waitFor(t, "the backlog reaching the client", func() bool { return e2b.Backlogged(p) })
			}
			if err := p.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if n := srv.Calls(e2bfake.OpCloseStdin); n != 0 {
				t.Errorf("CloseStdin sent %d times to a worker that had ended", n)
			}
			if st := p.Exit(); st.Code == -1 && st.Reason != "" {
				t.Errorf("exit %v, want the worker's own", st)
			}
		})
	}
}

// TestCloseAfterSandboxGone: Close of a worker whose sandbox died (the
// edge answers 502 "not found", the open streams stay silent) takes at
// most 100 ms and reports the sandbox gone: nothing is retried.
func TestCloseAfterSandboxGone(t *testing.T) {
	srv := newServer(t, fakeOptions())
	c, err := host.Start(t.Context(), tapped(t, newE2B(t, srv, "worker")), host.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	info := sandboxOf(t, c)
	if err := srv.Vanish(info.SandboxID); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	err = c.Close()
	took := time.Since(t0)
	t.Logf("Close after the sandbox vanished took %v: %v", took, err)
	if took > 100*time.Millisecond {
		t.Errorf("Close took %v, want at most 100ms", took)
	}
	if st := c.Process().Exit(); !strings.Contains(st.Reason, "no longer exists") {
		t.Errorf("exit %#v, want a reason saying the sandbox no longer exists", st)
	}
	if n := srv.Calls(e2bfake.OpCloseStdin) + srv.Calls(e2bfake.OpSendSignal); n > 1 {
		t.Errorf("%d CloseStdin and SendSignal calls to a gone sandbox, want 1", n)
	}
}

// TestOldEnvdRefused: a template whose envd predates CloseStdin is
// refused at Start with ErrEnvdTooOld, naming the template and the
// minimum version, before anything is uploaded; the sandbox is killed.
func TestOldEnvdRefused(t *testing.T) {
	srv := newServer(t, e2bfake.Options{EnvdVersion: "0.5.1"})
	tr := newE2B(t, srv, "worker")
	tr.Template = "old-template"
	_, err := tr.Start(t.Context())
	if !errors.Is(err, e2b.ErrEnvdTooOld) {
		t.Fatalf("err = %v, want ErrEnvdTooOld", err)
	}
	for _, want := range []string{"old-template", "0.5.1", "0.5.2"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q lacks %q", err, want)
		}
	}
	if n := srv.Calls(e2bfake.OpUpload) + srv.Calls(e2bfake.OpStart); n != 0 {
		t.Errorf("%d envd calls to a sandbox refused for its envd", n)
	}
	if ids := srv.Sandboxes(); len(ids) != 0 {
		t.Errorf("sandbox left: %v", ids)
	}
}

// captureLogs returns a logger whose text output tests can search.
func captureLogs() (*slog.Logger, *syncBuffer) {
	var b syncBuffer
	return slog.New(slog.NewTextHandler(&b, nil)), &b
}

// TestStdinFallback: with client streams refused by a proxy, or the input
// stream cut mid-session, stdin goes by SendInput and every byte arrives,
// in order: large messages split in chunks, and pings before and after
// the cut.
func TestStdinFallback(t *testing.T) {
	for _, tt := range []struct {
		name    string
		opts    e2bfake.Options
		cut     bool
		streams int // StreamInput calls
	}{
		{"refused", e2bfake.Options{RefuseClientStreams: true}, false, 1},
		{"cut", fakeOptions(), true, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, tt.opts)
			tr := newE2B(t, srv, "worker")
			logger, logs := captureLogs()
			tr.Logger = logger
			c, err := host.Start(t.Context(), tapped(t, tr))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			big := strings.Repeat("0123456789abcdef", 100_000) + "é" // two chunks
			echo := func(data string) {
				t.Helper()
				res, err := c.Ping(t.Context(), data)
				if err != nil {
					t.Fatal(err)
				}
				if res.Echo != data {
					t.Fatalf("echo of %d bytes came back as %d bytes", len(data), len(res.Echo))
				}
			}
			echo("before")
			if tt.cut {
				if err := srv.CutInputStreams(sandboxOf(t, c).SandboxID); err != nil {
					t.Fatal(err)
				}
				waitFor(t, "the cut noticed", func() bool { return strings.Contains(logs.String(), "input stream broke") })
			}
			before := srv.Calls(e2bfake.OpSendInput)
			for i := range 5 {
				echo(strings.Repeat("x", i) + "after")
			}
			echo(big)
			if n := srv.Calls(e2bfake.OpSendInput) - before; n < 7 {
				t.Errorf("%d SendInput calls for 6 messages, 7 chunks", n)
			}
			if n := srv.Calls(e2bfake.OpStreamInput); n != tt.streams {
				t.Errorf("%d StreamInput calls, want %d", n, tt.streams)
			}
			if err := c.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
}

// TestListMetadataEscaping: a metadata filter whose keys and values hold
// &, =, %, + and spaces reaches the API whole (which unescapes it once
// more than a query parameter), so List and Sweep find exactly the
// sandboxes with those tags.
func TestListMetadataEscaping(t *testing.T) {
	srv := newServer(t, fakeOptions())
	tr := newE2B(t, srv, "worker")
	want := map[string]string{e2b.TagKey: e2b.TagValue, "a&b=c": "d=e&f", "pct%": "100% sure", "sp ace": "x y+z", "plus+": "1+1=2"}
	near := map[string]string{e2b.TagKey: e2b.TagValue, "a&b=c": "d=e", "pct%": "100% sure", "sp ace": "x y+z", "plus+": "1+1=2"}
	id, err := srv.CreateSandbox("base", time.Hour, want)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.CreateSandbox("base", time.Hour, near); err != nil {
		t.Fatal(err)
	}
	list, err := tr.List(t.Context(), e2b.ListOptions{Metadata: want})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != id {
		t.Fatalf("List = %+v, want only %s", list, id)
	}
	killed, err := tr.Sweep(t.Context(), e2b.ListOptions{Metadata: want})
	if err != nil || len(killed) != 1 || killed[0] != id {
		t.Errorf("Sweep = %v, %v; want [%s]", killed, err, id)
	}
	if left := srv.Sandboxes(); len(left) != 1 {
		t.Errorf("left %v, want the near miss", left)
	}
}
