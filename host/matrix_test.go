package host_test

// The fault matrix of issue 5: each row a test. Durations are logged (go
// test -v) rather than asserted: the deadlines in these tests only guard
// against hangs.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/logsink"
	"github.com/tproxy/tproxy/transport"
)

// TestMatrixWorkerDiesMidStep: exit 0, exit 3, SIGKILL and an
// unrecoverable panic, each in the middle of a step. The pending call fails
// with the exit status and the stderr tail; the event sent before the fault
// is persisted; status.json records the reason.
func TestMatrixWorkerDiesMidStep(t *testing.T) {
	tests := []struct {
		name, driver, event string
		cfg                 map[string]any
		wantCode            int
		wantSignal          syscall.Signal
		wantStderr          string
	}{
		{"exit 0", "exit", "about_to_exit", map[string]any{"code": 0}, 0, 0, "exit: leaving mid-step"},
		{"exit 3", "exit", "about_to_exit", map[string]any{"code": 3}, 3, 0, "exit: leaving mid-step"},
		{"SIGKILL", "selfkill", "about_to_die", nil, -1, syscall.SIGKILL, "selfkill: goodbye"},
		{"panic", "crash", "about_to_crash", nil, 2, 0, "panic: crash: unrecoverable driver bug"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr syncBuffer
			dir := filepath.Join(t.TempDir(), "s")
			sink := newSignalSink(&logsink.Memory{}, tt.event)
			faultAt := make(chan time.Time, 1)
			go func() {
				<-sink.ch
				faultAt <- time.Now()
			}()
			m := tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "victim", Driver: tt.driver, Config: tt.cfg}}}
			var failedAt time.Time
			opts := append(quiet(), host.WithTrace(func(method string, _ any) func(any, error) {
				if method != tproxy.MethodExecStep {
					return nil
				}
				return func(_ any, err error) { failedAt = time.Now() }
			}))
			st, err := run(t, t.Context(), subprocess(&stderr), host.RunSpec{Dir: dir, Manifest: m, Sink: sink, Options: opts})
			select {
			case at := <-faultAt:
				t.Logf("exec_step failed %v after the worker's last event", failedAt.Sub(at))
			default:
				t.Errorf("the %s event sent before the fault never reached the host", tt.event)
			}

			var xe *transport.ExitError
			if !errors.As(err, &xe) || !errors.Is(err, host.ErrClosed) {
				t.Fatalf("err = %v, want host.ErrClosed with a *transport.ExitError", err)
			}
			if xe.Status.Code != tt.wantCode || xe.Status.Signal != tt.wantSignal {
				t.Errorf("exit status %+v, want code %d signal %v", xe.Status, tt.wantCode, tt.wantSignal)
			}
			if !strings.Contains(xe.Stderr, tt.wantStderr) {
				t.Errorf("the error's stderr tail lacks %q:\n%s", tt.wantStderr, xe.Stderr)
			}
			if st.Failure == nil || st.Failure.Kind != host.FailureWorkerExited || st.Failure.StepID != "victim" ||
				!strings.Contains(st.StderrTail, tt.wantStderr) || st.Exit == nil || st.Exit.Code != tt.wantCode {
				t.Errorf("status.json: failure %+v, exit %+v, stderr tail %q", st.Failure, st.Exit, st.StderrTail)
			}
			if !hasEvent(t, dir, tt.event, "victim") {
				t.Errorf("the %s event sent before the fault is not in events.jsonl", tt.event)
			}
		})
	}
}

// TestMatrixFrameOverCap: a frame over the cap is refused in both
// directions with the size and the cap, and the host does not buffer it.
func TestMatrixFrameOverCap(t *testing.T) {
	const capBytes = 1 << 20
	t.Run("host to worker", func(t *testing.T) {
		c := start(t, subprocess(nil), &logsink.Memory{}, host.WithMaxFrameSize(capBytes))
		_, err := exec(t.Context(), c, "sleep", map[string]any{"blob": strings.Repeat("x", 2*capBytes)})
		var fe *tproxy.FrameError
		if !errors.As(err, &fe) || fe.Op != "write" || !errors.Is(err, tproxy.ErrFrameTooLarge) {
			t.Fatalf("err = %v, want a write *tproxy.FrameError", err)
		}
		if !strings.Contains(err.Error(), "cap 1048576") || fe.Size <= capBytes {
			t.Errorf("error %q does not name the size and the cap", err)
		}
		if _, err := exec(t.Context(), c, "sleep", map[string]any{"ms": 1}); err != nil {
			t.Errorf("the connection is unusable after a refused write: %v", err)
		}
	})
	t.Run("worker to host", func(t *testing.T) {
		const frame = 12 << 20 // under the worker's cap, over the host's
		// Untapped: a tap buffers the frame to validate it, in the host's
		// process, whose allocations this measures.
		c := start(t, subprocess(nil).Subprocess, &logsink.Memory{}, host.WithMaxFrameSize(capBytes))
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := exec(t.Context(), c, "big", map[string]any{"bytes": frame})
		runtime.ReadMemStats(&after)
		var pe *host.ProtocolError
		if !errors.As(err, &pe) || !errors.Is(err, tproxy.ErrFrameTooLarge) {
			t.Fatalf("err = %v, want a *host.ProtocolError for an oversize frame", err)
		}
		if !strings.Contains(err.Error(), "cap 1048576") {
			t.Errorf("error %q does not name the cap", err)
		}
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > frame*3/4 {
			t.Errorf("reading a %d MiB frame over a 1 MiB cap allocated %d MiB: the frame was buffered", frame>>20, alloc>>20)
		} else {
			t.Logf("a %d MiB frame over the cap cost the host %d KiB of allocations", frame>>20, alloc>>10)
		}
	})
}

// TestMatrixTenMiBPayloads: a 10 MiB config and a 10 MiB result, under the
// cap, work.
func TestMatrixTenMiBPayloads(t *testing.T) {
	const size = 10 << 20
	c := start(t, subprocess(nil), &logsink.Memory{})
	res, err := exec(t.Context(), c, "bigresult", map[string]any{"bytes": size, "padding": strings.Repeat("p", size)})
	if err != nil {
		t.Fatal(err)
	}
	if blob, _ := res.Outputs["blob"].(string); len(blob) != size {
		t.Errorf("result blob is %d bytes, want %d", len(blob), size)
	}
}

// TestMatrixSinkCannotWrite: when the log sink fails, the call and the run
// fail with an error wrapping the write error, status.json says so, and
// what reached the other files is complete.
func TestMatrixSinkCannotWrite(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Fatalf("this test needs /dev/full: %v", err)
	}
	// full is a Files sink on /dev/full that receives only the step's
	// "tick" events, so that it fails in the middle of the step.
	full := func(t *testing.T) logsink.Sink {
		dir := t.TempDir()
		for _, f := range []string{logsink.EventsFile, logsink.MetricsFile} {
			if err := os.Symlink("/dev/full", filepath.Join(dir, f)); err != nil {
				t.Fatal(err)
			}
		}
		files, err := logsink.OpenDir(dir, "s1")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { files.Close() })
		return ticksOnly{files}
	}
	t.Run("client", func(t *testing.T) {
		c := start(t, subprocess(nil), full(t))
		_, err := exec(t.Context(), c, "emit", map[string]any{"events": 5000})
		var se *host.SinkError
		if !errors.As(err, &se) || !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("err = %v, want a *host.SinkError wrapping ENOSPC", err)
		}
	})
	t.Run("run", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "s")
		m := tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "e", Driver: "emit", Config: map[string]any{"events": 5000}}}}
		st, err := run(t, t.Context(), subprocess(nil), host.RunSpec{Dir: dir, Manifest: m, Sink: full(t)})
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("err = %v, want one wrapping ENOSPC", err)
		}
		if st.Failure == nil || st.Failure.Kind != host.FailureSink || !strings.Contains(st.Failure.Reason, "no space left") {
			t.Errorf("status.json failure %+v", st.Failure)
		}
		lines, err := logsink.ReadLines(filepath.Join(dir, logsink.EventsFile))
		if err != nil {
			t.Fatal(err)
		}
		ticks := 0
		for _, l := range lines {
			if l["event"] == "tick" {
				ticks++
			}
		}
		if ticks != 5000 {
			t.Errorf("events.jsonl holds %d of the 5000 events", ticks)
		}
	})
}

// TestMatrixStdinClosed: when the host closes the worker's stdin during a
// call, the worker cancels the call (step_failed, error_type cancelled),
// answers it -32800, flushes and exits 0 (docs/protocol.md section 8,
// "End of input").
func TestMatrixStdinClosed(t *testing.T) {
	mem := &logsink.Memory{}
	sink := newSignalSink(mem, "step_start")
	c := start(t, subprocess(nil), sink)
	errc := make(chan error, 1)
	go func() {
		_, err := exec(t.Context(), c, "sleep", map[string]any{"ms": 30000})
		errc <- err
	}()
	<-sink.ch
	closed := time.Now()
	if err := c.Process().CloseWrite(); err != nil {
		t.Fatal(err)
	}
	var re *host.RemoteError
	if err := <-errc; !errors.As(err, &re) || re.Code != tproxy.CodeRequestCancelled {
		t.Fatalf("the call in flight = %v, want a *host.RemoteError with code %d", err, tproxy.CodeRequestCancelled)
	}
	t.Logf("the call was answered as cancelled %v after stdin was closed", time.Since(closed))
	select {
	case <-c.Process().Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the worker did not exit after its stdin was closed")
	}
	if st := c.Process().Exit(); !st.Success() {
		t.Errorf("exit %v, want 0", st)
	}
	var failed []string
	for _, e := range mem.Events() {
		if e.Name == "step_failed" {
			failed = append(failed, fmt.Sprint(e.Data["error_type"]))
		}
	}
	if len(failed) != 1 || failed[0] != "cancelled" {
		t.Errorf("step_failed events with error types %q, want one, cancelled", failed)
	}
}

// ticksOnly passes only "tick" events and no metrics to its Sink.
type ticksOnly struct{ logsink.Sink }

func (s ticksOnly) Event(ctx context.Context, e tproxy.Event) error {
	if e.Name != "tick" {
		return nil
	}
	return s.Sink.Event(ctx, e)
}

func (s ticksOnly) Metric(context.Context, tproxy.Metric) error { return nil }
func (s ticksOnly) Log(context.Context, tproxy.LogRecord) error { return nil }

// TestMatrixHungWorker: a worker that stops reading, writing and beating
// mid-step is killed once the heartbeat timeout passes; the call fails
// with a *host.SilenceError and the kill's exit status.
func TestMatrixHungWorker(t *testing.T) {
	const timeout = 300 * time.Millisecond
	sink := newSignalSink(&logsink.Memory{}, "about_to_hang")
	c := start(t, subprocess(nil), sink, append(quiet(), host.WithHeartbeatTimeout(timeout))...)
	started := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute) // a hang guard
	defer cancel()
	_, err := exec(ctx, c, "hang", nil)
	t.Logf("exec_step failed %v after it started (heartbeat timeout %v)", time.Since(started), timeout)
	var se *host.SilenceError
	var xe *transport.ExitError
	if !errors.As(err, &se) || !errors.Is(err, host.ErrClosed) || !errors.As(err, &xe) {
		t.Fatalf("err = %v, want host.ErrClosed with a *host.SilenceError and a *transport.ExitError", err)
	}
	if se.Timeout != timeout || se.Silence < timeout || xe.Status.Signal != syscall.SIGKILL {
		t.Errorf("silence %+v, exit %v", se, xe.Status)
	}
	select {
	case <-c.Process().Done():
	default:
		t.Error("the hung worker is still running")
	}
}

// TestMatrixSlowButAlive: a step that takes many heartbeat timeouts but
// beats is not failed, and the caller sees its heartbeats.
func TestMatrixSlowButAlive(t *testing.T) {
	var beats atomic.Int32
	c := start(t, subprocess(nil), &logsink.Memory{},
		host.WithHeartbeatTimeout(200*time.Millisecond),
		host.WithHeartbeat(func(h tproxy.Heartbeat) { beats.Add(1) }))
	if _, err := exec(t.Context(), c, "sleep", map[string]any{"ms": 1500}); err != nil {
		t.Fatalf("a slow step that beats was failed: %v", err)
	}
	if n := beats.Load(); n < 5 {
		t.Errorf("%d heartbeats seen over a 1.5 s step beating every 20 ms", n)
	}
	if c.LastHeartbeat().IsZero() {
		t.Error("LastHeartbeat is zero")
	}
}
