package host_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/wiretest"
	"github.com/tproxy/tproxy/logsink"
	"github.com/tproxy/tproxy/transport"
)

// signalSink passes everything on to next and closes ch when an event named
// name arrives.
type signalSink struct {
	logsink.Sink
	name string
	once sync.Once
	ch   chan struct{}
}

func (s *signalSink) Event(ctx context.Context, e tproxy.Event) error {
	err := s.Sink.Event(ctx, e)
	if e.Name == s.name {
		s.once.Do(func() { close(s.ch) })
	}
	return err
}

func newSignalSink(next logsink.Sink, name string) *signalSink {
	return &signalSink{Sink: next, name: name, ch: make(chan struct{})}
}

// start starts a client over tr with the given sink and a prepared session.
func start(t *testing.T, tr transport.Transport, sink logsink.Sink, opts ...host.Option) *host.Client {
	t.Helper()
	c, err := host.Start(t.Context(), tr, append([]host.Option{host.WithSink(sink)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Prepare(t.Context(), tproxy.PrepareParams{SessionID: "s1"}); err != nil {
		t.Fatal(err)
	}
	return c
}

func exec(ctx context.Context, c *host.Client, driver string, cfg map[string]any) (*tproxy.ExecStepResult, error) {
	return c.ExecStep(ctx, tproxy.ExecStepParams{StepID: driver + "-step", Driver: driver, Config: cfg})
}

// TestTenThousandEventsInOrder: when ExecStep returns, events.jsonl already
// holds every event the step emitted, in emission order.
func TestTenThousandEventsInOrder(t *testing.T) {
	dir := t.TempDir()
	files, err := logsink.OpenDir(dir, "s1")
	if err != nil {
		t.Fatal(err)
	}
	defer files.Close()
	c := start(t, subprocess(nil), files)
	if _, err := exec(t.Context(), c, "emit", map[string]any{"events": 10000}); err != nil {
		t.Fatal(err)
	}
	lines, err := logsink.ReadLines(filepath.Join(dir, "events.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	next := 0
	for _, l := range lines {
		if l["event"] != "tick" {
			continue
		}
		if got := str(l["i"]); got != str(next) {
			t.Fatalf("tick %d has i=%s: out of order", next, got)
		}
		next++
	}
	if next != 10000 {
		t.Fatalf("events.jsonl holds %d ticks when ExecStep returned, want 10000", next)
	}
}

// TestDriverStdoutGoesToStderr: a driver printing to stdout does not
// disturb the protocol; the text appears in the captured stderr.
func TestDriverStdoutGoesToStderr(t *testing.T) {
	stderr := &syncBuffer{}
	mem := &logsink.Memory{}
	c := start(t, subprocess(stderr), mem)
	if _, err := exec(t.Context(), c, "noisy", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Ping(t.Context(), "still there"); err != nil {
		t.Fatalf("ping after a noisy step: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"fmt.Println from a driver", "os.Stdout.Write from a driver", "stderr from a driver"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q; stderr:\n%s", want, stderr)
		}
		if !strings.Contains(c.Process().StderrTail(), want) {
			t.Errorf("stderr tail lacks %q", want)
		}
	}
	found := false
	for _, e := range mem.Events() {
		found = found || e.Name == "noisy_done"
	}
	if !found {
		t.Error("the noisy step's event did not arrive")
	}
}

// TestWorkerKilledMidStep: SIGKILL during a step fails the call promptly
// with the signal and the stderr tail; the events before the kill are in
// events.jsonl.
func TestWorkerKilledMidStep(t *testing.T) {
	dir := t.TempDir()
	files, err := logsink.OpenDir(dir, "s1")
	if err != nil {
		t.Fatal(err)
	}
	defer files.Close()
	sink := newSignalSink(files, "blocked")
	c := start(t, subprocess(nil), sink)

	errc := make(chan error, 1)
	go func() {
		_, err := exec(t.Context(), c, "block", nil)
		errc <- err
	}()
	<-sink.ch
	pid := c.Process().(interface{ Pid() int }).Pid()
	killed := time.Now()
	if err := killPID(pid); err != nil {
		t.Fatal(err)
	}
	var callErr error
	select {
	case callErr = <-errc:
	case <-time.After(10 * time.Second):
		t.Fatal("ExecStep still running 10s after the worker was killed")
	}
	t.Logf("ExecStep failed %v after SIGKILL", time.Since(killed))

	var exitErr *transport.ExitError
	if !errors.As(callErr, &exitErr) || !errors.Is(callErr, host.ErrClosed) {
		t.Fatalf("err = %v, want ErrClosed with a *transport.ExitError", callErr)
	}
	if exitErr.Status.Signal != syscall.SIGKILL {
		t.Errorf("exit status %v, want SIGKILL", exitErr.Status)
	}
	if !strings.Contains(exitErr.Stderr, "block: waiting for cancellation") {
		t.Errorf("stderr tail %q lacks the driver's last words", exitErr.Stderr)
	}
	if !strings.Contains(callErr.Error(), "signal: killed") {
		t.Errorf("message %q does not name the signal", callErr)
	}
	lines, err := logsink.ReadLines(filepath.Join(dir, "events.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	before := 0
	for _, l := range lines {
		if l["event"] == "before_block" {
			before++
		}
	}
	if before != 3 {
		t.Errorf("events.jsonl holds %d of the 3 events emitted before the kill", before)
	}
	if _, err := c.Ping(t.Context(), ""); !errors.As(err, &exitErr) {
		t.Errorf("a call after the exit: %v, want the ExitError again", err)
	}
}

// TestCancelMidStep: cancelling the caller's context returns at once,
// cancels the driver through $/cancelRequest, and leaves the worker usable.
func TestCancelMidStep(t *testing.T) {
	for _, tc := range []struct {
		name string
		tr   func() transport.Transport
	}{
		{"in-memory", func() transport.Transport { return inMemory() }},
		{"subprocess", func() transport.Transport { return subprocess(nil) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := &logsink.Memory{}
			sink := newSignalSink(mem, "blocked")
			c := start(t, tc.tr(), sink)
			ctx, cancel := context.WithCancel(t.Context())
			errc := make(chan error, 1)
			go func() {
				_, err := exec(ctx, c, "block", nil)
				errc <- err
			}()
			<-sink.ch
			cancelled := time.Now()
			cancel()
			if err := <-errc; !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want context.Canceled", err)
			}
			t.Logf("ExecStep returned %v after the cancel", time.Since(cancelled))
			// The worker runs calls in order: once this answers, the
			// cancelled step has ended and reported. Its late answer
			// (-32800) must not be taken for this call's.
			res, err := exec(t.Context(), c, "emit", map[string]any{"events": 1})
			if err != nil {
				t.Fatalf("next step after a cancel: %v", err)
			}
			if res.StepID != "emit-step" || res.Status != "complete" {
				t.Fatalf("next step's result %+v is not its own", res)
			}
			if p, err := c.Ping(t.Context(), "after"); err != nil || p.Echo != "after" {
				t.Fatalf("ping after a cancel: %+v, %v", p, err)
			}
			var failed *tproxy.Event
			for _, e := range mem.Events() {
				if e.Name == "step_failed" {
					failed = &e
				}
			}
			if failed == nil || failed.Data["error_type"] != "cancelled" {
				t.Fatalf("step_failed event = %+v, want error_type cancelled", failed)
			}
		})
	}
}

// TestStepFailures: a driver error or panic fails the step with a typed
// error, not the worker.
func TestStepFailures(t *testing.T) {
	c := start(t, subprocess(nil), &logsink.Memory{})
	for _, tc := range []struct{ driver, typ, msg string }{
		{"fail", tproxy.ErrorTypeDriver, "source table missing"},
		{"panic", "panic", "panic: driver bug"},
	} {
		_, err := exec(t.Context(), c, tc.driver, nil)
		var se *host.StepError
		if !errors.As(err, &se) {
			t.Fatalf("%s: err = %v, want *host.StepError", tc.driver, err)
		}
		if se.StepID != tc.driver+"-step" || se.ErrorType != tc.typ || se.Message != tc.msg {
			t.Errorf("%s: StepError = %+v", tc.driver, se)
		}
		var re *host.RemoteError
		if !errors.As(err, &re) || re.Code != tproxy.CodeStepFailed {
			t.Errorf("%s: RemoteError = %+v, want code %d", tc.driver, re, tproxy.CodeStepFailed)
		}
	}
	if _, err := c.Ping(t.Context(), ""); err != nil {
		t.Fatalf("worker unusable after failed steps: %v", err)
	}
}

// TestRemoteErrors: calls the worker refuses come back with their codes.
func TestRemoteErrors(t *testing.T) {
	ctx := t.Context()
	c, err := host.Start(ctx, inMemory())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	code := func(err error) int64 {
		var re *host.RemoteError
		if !errors.As(err, &re) {
			t.Fatalf("err = %v, want *host.RemoteError", err)
		}
		return re.Code
	}
	_, err = exec(ctx, c, "emit", nil)
	if got := code(err); got != tproxy.CodeNotPrepared {
		t.Errorf("exec_step before prepare: code %d, want %d", got, tproxy.CodeNotPrepared)
	}
	_, err = c.Prepare(ctx, tproxy.PrepareParams{SessionID: "s1", Manifest: tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "a", Driver: "nope"}}}})
	if got := code(err); got != tproxy.CodeUnknownDriver || !strings.Contains(err.Error(), `step "a": no driver "nope"`) {
		t.Errorf("unknown driver: %v", err)
	}
	if _, err := c.Prepare(ctx, tproxy.PrepareParams{SessionID: "s1"}); err != nil {
		t.Fatal(err)
	}
	_, err = c.Prepare(ctx, tproxy.PrepareParams{SessionID: "s2"})
	if got := code(err); got != tproxy.CodeSessionMismatch {
		t.Errorf("second session: code %d (%v), want %d", got, err, tproxy.CodeSessionMismatch)
	}
	_, err = c.ExecStep(ctx, tproxy.ExecStepParams{StepID: "t", Driver: "transform", Inputs: map[string]tproxy.InputRef{"rows": {FromStep: "extract", Key: "rows"}}})
	if got := code(err); got != tproxy.CodeInputUnavailable || !strings.Contains(err.Error(), `step "extract" has not run`) {
		t.Errorf("missing input: %v", err)
	}
	err = c.Call(ctx, "no_such_method", nil, nil)
	if got := code(err); got != tproxy.CodeMethodNotFound {
		t.Errorf("unknown method: code %d", got)
	}
	// Params that cannot be encoded fail the call before anything is
	// written; the connection goes on.
	var ute *json.UnsupportedTypeError
	if err := c.Call(ctx, "ping", map[string]any{"f": func() {}}, nil); !errors.As(err, &ute) || !strings.Contains(err.Error(), "ping: encoding params") {
		t.Errorf("unencodable params: %v, want a *json.UnsupportedTypeError naming the method", err)
	}
	if _, err := c.Ping(ctx, "after"); err != nil {
		t.Errorf("ping after unencodable params: %v", err)
	}
}

// fakeWorker serves the host with hand-written bytes: it answers the first
// request's id with answer(id) and then writes after, raw.
func fakeWorker(answer func(id string) string, after string) *transport.InMemory {
	// The fake's frames are wrong on purpose; the host's are validated.
	return &transport.InMemory{Serve: wiretest.Serve(nil, func(ctx context.Context, rw io.ReadWriteCloser) error {
		defer rw.Close()
		r := bufio.NewReader(rw)
		for first := true; ; first = false {
			line, err := r.ReadString('\n')
			if err != nil {
				return nil
			}
			if !first {
				continue
			}
			id := line[strings.Index(line, `"id":`)+5:]
			id = id[:strings.IndexAny(id, ",}")]
			io.WriteString(rw, answer(id)+"\n"+after)
		}
	}, wiretest.HostFrames)}
}

func pong(version int) func(string) string {
	return func(id string) string {
		return `{"jsonrpc":"2.0","id":` + id + `,"result":{"status":"pong","protocol":` + str(version) + `,"worker":{"name":"fake","version":"9","drivers":["d"]}}}`
	}
}

// TestProtocolViolations: bad bytes from the worker give a clear, typed
// error, never a hang or a panic.
func TestProtocolViolations(t *testing.T) {
	tests := []struct {
		name     string
		tr       transport.Transport
		opts     []host.Option
		wantStep bool // the violation comes during a step, not the handshake
		want     []string
	}{
		{name: "oversize frame", tr: inMemory(), opts: []host.Option{host.WithMaxFrameSize(4096)}, wantStep: true,
			want: []string{"protocol violation", "frame too large", "cap 4096"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := host.Start(t.Context(), tt.tr, tt.opts...)
			if tt.wantStep {
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if _, err := c.Prepare(t.Context(), tproxy.PrepareParams{SessionID: "s1"}); err != nil {
					t.Fatal(err)
				}
				_, err = exec(t.Context(), c, "big", map[string]any{"bytes": 10000})
			}
			var pe *host.ProtocolError
			if !errors.As(err, &pe) || !errors.Is(err, host.ErrClosed) {
				t.Fatalf("err = %v, want a *host.ProtocolError and ErrClosed", err)
			}
			var fe *tproxy.FrameError
			if !errors.As(err, &fe) {
				t.Errorf("err = %v does not hold the *tproxy.FrameError", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %q\nlacks %q", err, w)
				}
			}
		})
	}
}

// TestVersionMismatch: a worker speaking another protocol version is
// refused at the handshake with both versions named.
func TestVersionMismatch(t *testing.T) {
	_, err := host.Start(t.Context(), fakeWorker(pong(2), ""))
	var ve *host.VersionError
	if !errors.As(err, &ve) || ve.Worker != 2 || ve.Host != tproxy.ProtocolVersion {
		t.Fatalf("err = %v, want *host.VersionError{Host:1, Worker:2}", err)
	}
	if !strings.Contains(err.Error(), "protocol version 2") || !strings.Contains(err.Error(), "version 1") {
		t.Errorf("message %q does not name both versions", err)
	}
}

// TestHeartbeats: a running step sends heartbeats the host can see.
func TestHeartbeats(t *testing.T) {
	var mu sync.Mutex
	beats := 0
	c := start(t, inMemory(), &logsink.Memory{}, host.WithHeartbeat(func(h tproxy.Heartbeat) {
		mu.Lock()
		defer mu.Unlock()
		if h.StepID == "sleep-step" {
			beats++
		}
	}))
	if _, err := exec(t.Context(), c, "sleep", map[string]any{"ms": 200}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if beats == 0 || c.LastHeartbeat().IsZero() {
		t.Errorf("no heartbeat during a 200ms step with a 20ms interval")
	}
}

// scripted is a worker written by hand: before is written first (a banner);
// ping (drivers "d"), prepare (session "s1") and cleanup are answered
// properly; exec_step is answered with step(id), raw lines.
func scripted(before string, step func(id string) string) *transport.InMemory {
	// A worker the host stopped reading is blocked writing: no need to wait
	// long for it to notice its closed input.
	// The fake's frames are wrong on purpose; the host's are validated.
	return &transport.InMemory{CloseTimeout: 50 * time.Millisecond, TermTimeout: 50 * time.Millisecond, Serve: wiretest.Serve(nil, func(ctx context.Context, rw io.ReadWriteCloser) error {
		defer rw.Close()
		io.WriteString(rw, before)
		sc := bufio.NewScanner(rw)
		for sc.Scan() {
			var req struct {
				ID     json.RawMessage `json:"id"`
				Method string          `json:"method"`
			}
			json.Unmarshal(sc.Bytes(), &req)
			id := string(req.ID)
			switch req.Method {
			case "ping":
				io.WriteString(rw, pong(tproxy.ProtocolVersion)(id)+"\n")
			case "prepare":
				io.WriteString(rw, `{"jsonrpc":"2.0","id":`+id+`,"result":{"status":"ready","session_id":"s1"}}`+"\n")
			case "exec_step":
				io.WriteString(rw, step(id))
			case "cleanup":
				io.WriteString(rw, `{"jsonrpc":"2.0","id":`+id+`,"result":{"status":"cleaned","session_id":"s1","steps_executed":1}}`+"\n")
			}
		}
		return nil
	}, wiretest.HostFrames)}
}

func stepOK(id string) string {
	return `{"jsonrpc":"2.0","id":` + id + `,"result":{"status":"complete","step_id":"d-step","duration_ms":0}}` + "\n"
}

// TestBannerBeforeHandshake: output before the worker's first protocol
// message (a shell banner) is logged and skipped, within limits.
func TestBannerBeforeHandshake(t *testing.T) {
	var log syncBuffer
	logger := slog.New(slog.NewTextHandler(&log, nil))
	banner := "Welcome to bash 5.2!\n{\"motd\":\"JSON, but not JSON-RPC\"}\n\xff\xfe not UTF-8\n"
	c, err := host.Start(t.Context(), scripted(banner, stepOK), host.WithLogger(logger))
	if err != nil {
		t.Fatalf("a banner before the handshake broke it: %v", err)
	}
	defer c.Close()
	for _, w := range []string{"skipping output before the worker's first protocol message", "Welcome to bash 5.2!", "not a JSON-RPC 2.0 message", "invalid UTF-8"} {
		if !strings.Contains(log.String(), w) {
			t.Errorf("the host's log lacks %q:\n%s", w, log.String())
		}
	}

	tooLong := strings.Repeat("banner line\n", 101)
	_, err = host.Start(t.Context(), scripted(tooLong, stepOK), host.WithLogger(slog.New(slog.DiscardHandler)))
	var pe *host.ProtocolError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), `starts "banner line"`) {
		t.Errorf("101 banner lines: err = %v, want a *host.ProtocolError", err)
	}
}

// TestMidSessionViolations: once the protocol has started, a line that is
// not JSON-RPC closes the connection with a *host.ProtocolError; a
// response to an unknown id is dropped.
func TestMidSessionViolations(t *testing.T) {
	tests := []struct {
		name string
		line string
		want []string
	}{
		{"non-JSON line", "Segmentation fault (core dumped)\n", []string{"invalid JSON", `starts "Segmentation fault`}},
		{"JSON but not JSON-RPC", `{"hello":"world"}` + "\n", []string{"not a JSON-RPC 2.0 message"}},
		{"invalid UTF-8 in an event", `{"jsonrpc":"2.0","method":"event","params":{"name":"e` + "\xff" + `","timestamp":"2025-01-01T00:00:00Z"}}` + "\n", []string{"invalid UTF-8"}},
		{"truncated JSON", `{"jsonrpc":"2.0","method":"event","params":{"name":` + "\n", []string{"invalid JSON"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mem := &logsink.Memory{}
			before := `{"jsonrpc":"2.0","method":"event","params":{"name":"kept","timestamp":"2025-01-01T00:00:00Z"}}` + "\n"
			c := start(t, scripted("", func(id string) string { return before + tt.line + stepOK(id) }), mem, quiet()...)
			_, err := exec(t.Context(), c, "d", nil)
			var pe *host.ProtocolError
			if !errors.As(err, &pe) || !errors.Is(err, host.ErrClosed) {
				t.Fatalf("err = %v, want a *host.ProtocolError and ErrClosed", err)
			}
			for _, w := range append(tt.want, "protocol violation") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %q lacks %q", err, w)
				}
			}
			if ev := mem.Events(); len(ev) != 1 || ev[0].Name != "kept" {
				t.Errorf("the event before the violation: %+v", ev)
			}
		})
	}
	t.Run("unknown response id", func(t *testing.T) {
		c := start(t, scripted("", func(id string) string {
			return `{"jsonrpc":"2.0","id":999,"result":{"status":"complete","step_id":"ghost"}}` + "\n" + stepOK(id)
		}), &logsink.Memory{}, quiet()...)
		res, err := exec(t.Context(), c, "d", nil)
		if err != nil || res.StepID != "d-step" {
			t.Fatalf("a stray response broke the call: %+v, %v", res, err)
		}
		if _, err := c.Ping(t.Context(), "x"); err != nil {
			t.Errorf("the connection did not survive a stray response: %v", err)
		}
	})
}
