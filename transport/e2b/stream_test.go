package e2b_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/e2bfake"
	"github.com/tproxy/tproxy/logsink"
	"github.com/tproxy/tproxy/transport/e2b"
)

// TestFrameCap17MiB: a 17 MiB stdout line through the E2B transport
// (hundreds of 32 KiB data events) is refused with the host's frame-cap
// error, not buffered whole, not passed on.
func TestFrameCap17MiB(t *testing.T) {
	srv := newServer(t, fakeOptions())
	c, err := host.Start(t.Context(), tapped(t, newE2B(t, srv, "worker")))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Prepare(t.Context(), tproxy.PrepareParams{SessionID: "big"}); err != nil {
		t.Fatal(err)
	}
	_, err = c.ExecStep(t.Context(), tproxy.ExecStepParams{StepID: "b", Driver: "big", Config: map[string]any{"bytes": 17 << 20}})
	var fe *tproxy.FrameError
	if !errors.As(err, &fe) || !errors.Is(err, tproxy.ErrFrameTooLarge) {
		t.Fatalf("err = %v, want a *tproxy.FrameError for a frame over the cap", err)
	}
	var pe *host.ProtocolError
	if !errors.As(err, &pe) {
		t.Errorf("err = %v, want a *host.ProtocolError", err)
	}
	if fe.Limit != tproxy.DefaultMaxFrameSize || fe.Size <= tproxy.DefaultMaxFrameSize {
		t.Errorf("frame error size %d, limit %d", fe.Size, fe.Limit)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestOneByteChunks: with envd's output cut into 1-byte data events, every
// message (a ping echo with multi-byte UTF-8 characters split across
// events among them) arrives intact.
func TestOneByteChunks(t *testing.T) {
	srv := newServer(t, e2bfake.Options{ChunkSize: 1})
	c, err := host.Start(t.Context(), tapped(t, newE2B(t, srv, "worker")))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const data = "héllo wörld — € 🚀 日本語"
	res, err := c.Ping(t.Context(), data)
	if err != nil {
		t.Fatal(err)
	}
	if res.Echo != data {
		t.Errorf("echo = %q, want %q", res.Echo, data)
	}
}

// TestChunksReassembled checks the transport's byte stream directly: the
// same bytes the worker wrote come out of Read, whatever the chunking.
func TestChunksReassembled(t *testing.T) {
	for _, chunk := range []int{1, 7, 0} {
		srv := newServer(t, e2bfake.Options{ChunkSize: chunk})
		tr := newE2B(t, srv, "exit3")
		p, err := tr.Start(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		out, err := io.ReadAll(p)
		if err != nil {
			t.Fatal(err)
		}
		waitDone(t, p)
		if len(out) != 0 {
			t.Errorf("chunk %d: stdout %q, want nothing", chunk, out)
		}
		if got := p.StderrTail(); got != "starting\nboom: something bad happened\n" {
			t.Errorf("chunk %d: stderr tail %q", chunk, got)
		}
		p.Close()
	}
}

// TestAPIKeyNeverLeaks greps for the API key in everything a session
// leaves behind: logs, stderr, events, metrics, errors, the requests that
// reach the sandbox (headers, bodies, the worker's environment) and the
// sandbox's files.
func TestAPIKeyNeverLeaks(t *testing.T) {
	srv := newServer(t, fakeOptions())
	key := srv.APIKey()
	var logs, stderr syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	tr := newE2B(t, srv, "worker")
	tr.Logger, tr.Stderr = logger, &stderr
	tr.RefreshInterval = 50 * time.Millisecond
	t.Setenv("E2B_API_KEY", key)
	t.Setenv("TPROXY_TEST_FORWARDED", "forwarded-value")
	tr.ForwardEnv = []string{"TPROXY_TEST_FORWARDED"}
	dir := t.TempDir()
	runDemo(t, tr, dir, host.WithLogger(logger))

	var errs []string
	// Errors from every failure path that involves the key.
	bad := *tr
	bad.ForwardEnv = []string{"E2B_API_KEY"}
	_, err := bad.Start(t.Context())
	if err == nil {
		t.Error("Start with E2B_API_KEY in ForwardEnv succeeded")
	} else {
		errs = append(errs, err.Error())
	}
	bad = *tr
	bad.ForwardEnv = nil
	bad.Env = map[string]string{"SOME_TOKEN": key}
	if _, err := bad.Start(t.Context()); err == nil {
		t.Error("Start with the key as an env value succeeded")
	} else {
		errs = append(errs, err.Error())
	}
	bad = *tr
	bad.APIKey = key + "x" // refused; the message must not quote it either
	if _, err := bad.Start(t.Context()); err == nil {
		t.Error("Start with a wrong key succeeded")
	} else {
		errs = append(errs, err.Error())
	}
	srv.FailNext(e2bfake.OpList, 500, 10)
	if _, err := tr.List(t.Context(), e2b.ListOptions{}); err != nil {
		errs = append(errs, err.Error())
	}

	haystacks := map[string]string{"logs": logs.String(), "stderr": stderr.String(), "errors": strings.Join(errs, "\n")}
	// Every file the session left in its directory (events, metrics, and
	// whatever else a sink writes there).
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		haystacks[e.Name()] = string(b)
	}
	if _, ok := haystacks[logsink.EventsFile]; !ok {
		t.Fatalf("no %s in %s", logsink.EventsFile, dir)
	}
	sawForwarded := false
	for i, r := range srv.Requests() {
		isAPI := !strings.HasPrefix(r.Path, "/process.") && !strings.HasPrefix(r.Path, "/files")
		h := r.Header.Clone()
		if isAPI {
			h.Del("X-Api-Key") // the one place the key belongs
		}
		var b bytes.Buffer
		h.Write(&b)
		b.WriteString(r.RawQuery)
		b.Write(r.Body)
		haystacks[fmt.Sprintf("request %d %s %s", i, r.Method, r.Path)] = b.String()
		sawForwarded = sawForwarded || bytes.Contains(r.Body, []byte("forwarded-value"))
	}
	if !sawForwarded {
		t.Error("the allow-listed variable did not reach the worker's Start request; the grep may look in the wrong place")
	}
	if len(logs.String()) == 0 {
		t.Error("no logs captured; the grep would prove nothing")
	}
	for name, h := range haystacks {
		if strings.Contains(h, key) {
			t.Errorf("the API key appears in %s", name)
		}
	}
}

// TestLargeWrite: a host message over the 1 MiB input chunk is split into
// several StreamInput envelopes and arrives whole.
func TestLargeWrite(t *testing.T) {
	srv := newServer(t, fakeOptions())
	c, err := host.Start(t.Context(), tapped(t, newE2B(t, srv, "worker")))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := strings.Repeat("0123456789abcdef", 100_000) + "é" // 1.6 MB: two envelopes
	res, err := c.Ping(t.Context(), data)
	if err != nil {
		t.Fatal(err)
	}
	if res.Echo != data {
		t.Errorf("echo of %d bytes came back as %d bytes", len(data), len(res.Echo))
	}
}
