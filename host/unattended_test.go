package host_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/wiretest"
	"github.com/tproxy/tproxy/logsink"
	"github.com/tproxy/tproxy/transport"
)

// eventsNamed returns the lines of events.jsonl in dir whose event is one
// of names (their data fields are at the top level of each line).
func eventsNamed(t *testing.T, dir string, names ...string) []map[string]any {
	t.Helper()
	lines, err := logsink.ReadLines(filepath.Join(dir, logsink.EventsFile))
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, l := range lines {
		if name, _ := l["event"].(string); slices.Contains(names, name) {
			out = append(out, l)
		}
	}
	return out
}

// TestStepTimeout: a step that reaches its own Timeout is cancelled in
// the worker, which stays usable: the step is "timeout" in status.json with
// the duration of the worker's step_failed event, the run fails with kind
// timeout, and with ContinueOnError the next step runs on the same worker.
func TestStepTimeout(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "s")
	m := tproxy.Manifest{Steps: []tproxy.StepSpec{
		{ID: "slow", Driver: "block", Timeout: 200 * time.Millisecond},
		{ID: "next", Driver: "sleep", Config: map[string]any{"ms": 1}},
	}}
	st, err := run(t, t.Context(), inMemory(), host.RunSpec{Dir: dir, Manifest: m, ContinueOnError: true})
	var te *host.StepTimeoutError
	if !errors.As(err, &te) || te.Stuck || te.StepID != "slow" || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a *host.StepTimeoutError for slow, not stuck", err)
	}
	if st.Failure.Kind != host.FailureTimeout || st.Steps[1].Status != host.StepComplete {
		t.Errorf("failure %+v; next step %s", st.Failure, st.Steps[1].Status)
	}
	slow := st.Steps[0]
	failed := eventsNamed(t, dir, tproxy.EventStepFailed)
	if len(failed) != 1 {
		t.Fatalf("%d step_failed events, want 1", len(failed))
	}
	data := failed[0]
	if slow.Status != host.StepTimeout || slow.ErrorType != data["error_type"] || fmt.Sprint(slow.DurationMS) != fmt.Sprint(data["duration_ms"]) {
		t.Errorf("status.json says %s/%s/%vms; the step_failed event %v/%vms", slow.Status, slow.ErrorType, slow.DurationMS, data["error_type"], data["duration_ms"])
	}
	// The worker's clock starts after the host's: allow for the latency.
	if slow.DurationMS < 100 {
		t.Errorf("duration %vms: want about the timeout's 200ms, the step's real duration", slow.DurationMS)
	}
	if ev := eventsNamed(t, dir, tproxy.EventStepTimeout); len(ev) != 1 || ev[0]["stuck"] != false {
		t.Errorf("step_timeout events: %v", ev)
	}
}

// TestStepTimeoutStuckDriver: a driver that ignores the cancel past
// RunSpec.CancelGrace gets its worker killed; the step is "timeout" with
// a stuck-driver note, and the run returns without waiting for the driver.
func TestStepTimeoutStuckDriver(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "s")
	m := tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "stuck", Driver: "stubborn", Config: map[string]any{"ms": 60_000}, Timeout: 100 * time.Millisecond}}}
	st, err := run(t, t.Context(), subprocess(nil), host.RunSpec{Dir: dir, Manifest: m, CancelGrace: 200 * time.Millisecond, CollectGrace: time.Second})
	var te *host.StepTimeoutError
	if !errors.As(err, &te) || !te.Stuck {
		t.Fatalf("err = %v, want a stuck *host.StepTimeoutError", err)
	}
	s := st.Steps[0]
	if s.Status != host.StepTimeout || s.Note == "" || st.Failure.Kind != host.FailureTimeout || st.Exit == nil || st.Exit.Signal == 0 {
		t.Errorf("step %+v, failure %+v, exit %+v: want a timeout with a note, the worker killed", s, st.Failure, st.Exit)
	}
	t.Logf("the run with a stuck driver took %dms (timeout 100ms, cancel grace 200ms)", st.DurationMS)
	if st.DurationMS > 30_000 {
		t.Errorf("the run took %dms: it waited for the stuck driver", st.DurationMS)
	}
}

// TestStepRetry checks the retry policy: a driver's transient failure is
// retried by default, each attempt recorded in status.json and announced
// by a step_retry event; another error type is not retried unless named.
func TestStepRetry(t *testing.T) {
	tests := []struct {
		name     string
		retry    *tproxy.Retry
		typ      string
		attempts int
		want     string
	}{
		{"transient retried until it passes", &tproxy.Retry{Attempts: 5, Backoff: time.Millisecond}, "", 3, host.StepComplete},
		{"attempts run out", &tproxy.Retry{Attempts: 2}, "", 2, host.StepFailed},
		{"no policy runs once", nil, "", 1, host.StepFailed},
		{"a driver error is not retried by default", &tproxy.Retry{Attempts: 5}, tproxy.ErrorTypeDriver, 1, host.StepFailed},
		{"unless named", &tproxy.Retry{Attempts: 5, On: []string{tproxy.ErrorTypeDriver}}, tproxy.ErrorTypeDriver, 3, host.StepComplete},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			flakyAttempts.Store(0) // the in-memory worker runs in this process
			dir := filepath.Join(t.TempDir(), "s")
			cfg := map[string]any{"passes_on": 3}
			if tt.typ != "" {
				cfg["type"] = tt.typ
			}
			m := tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "f", Driver: "flaky", Config: cfg, Retry: tt.retry}}}
			st, err := run(t, t.Context(), inMemory(), host.RunSpec{Dir: dir, Manifest: m})
			s := st.Steps[0]
			if s.Status != tt.want || len(s.Attempts) != tt.attempts || (tt.want == host.StepComplete) != (err == nil) {
				t.Fatalf("step %s after %d attempts (err %v), want %s after %d", s.Status, len(s.Attempts), err, tt.want, tt.attempts)
			}
			for i, a := range s.Attempts {
				wantStatus, wantType := host.StepFailed, tt.typ
				if wantType == "" {
					wantType = tproxy.ErrorTypeTransient
				}
				if i == len(s.Attempts)-1 && tt.want == host.StepComplete {
					wantStatus, wantType = host.StepComplete, ""
				}
				if a.N != i+1 || a.Status != wantStatus || a.ErrorType != wantType || a.StartedAt.IsZero() {
					t.Errorf("attempt %d: %+v, want status %s, error type %q", i+1, a, wantStatus, wantType)
				}
			}
			if got := len(eventsNamed(t, dir, tproxy.EventStepRetry)); got != tt.attempts-1 {
				t.Errorf("%d step_retry events, want %d", got, tt.attempts-1)
			}
			if got := len(eventsNamed(t, dir, tproxy.EventStepStart)); got != tt.attempts {
				t.Errorf("%d step_start events, want one per attempt, %d", got, tt.attempts)
			}
		})
	}
}

// TestCancelledStepRecord: a step cancelled with the run is "cancelled" in
// status.json, with the duration and error type of its step_failed
// event, and the artifact it wrote before the cancel is fetched.
func TestCancelledStepRecord(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "s")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	sink := &cancelOn{name: "blocked", cancel: cancel, failed: make(chan struct{})}
	m := tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "p", Driver: "partial"}, {ID: "after", Driver: "sleep"}}}
	st, err := run(t, ctx, subprocess(nil), host.RunSpec{Dir: dir, Manifest: m, Sink: sink})
	if !errors.Is(err, context.Canceled) || st.Outcome != host.OutcomeCancelled {
		t.Fatalf("err = %v, outcome %s; want cancelled", err, st.Outcome)
	}
	p := st.Steps[0]
	failed := eventsNamed(t, dir, tproxy.EventStepFailed)
	if len(failed) != 1 {
		t.Fatalf("%d step_failed events, want 1", len(failed))
	}
	data := failed[0]
	if p.Status != host.StepCancelled || p.ErrorType != tproxy.ErrorTypeCancelled || p.ErrorType != data["error_type"] || fmt.Sprint(p.DurationMS) != fmt.Sprint(data["duration_ms"]) {
		t.Errorf("status.json: %s/%s/%vms; step_failed event: %v/%vms", p.Status, p.ErrorType, p.DurationMS, data["error_type"], data["duration_ms"])
	}
	if b, err := os.ReadFile(filepath.Join(dir, host.ArtifactsDir, "p", "partial.csv")); err != nil || string(b) != "id\n1\n" {
		t.Errorf("the cancelled step's artifact: %q, %v", b, err)
	}
	if st.Steps[1].Status != host.StepNotRun {
		t.Errorf("the step after: %s", st.Steps[1].Status)
	}
}

// TestHandshakeDeathRecorded: a worker that dies before answering the
// handshake leaves its exit status and stderr tail in status.json.
func TestHandshakeDeathRecorded(t *testing.T) {
	sh, err := osexec.LookPath("sh")
	if err != nil {
		t.Skip("no sh on this system")
	}
	// The worker dies without a frame; the host's ping is validated.
	tr := wiretest.Transport(t, &transport.Subprocess{Path: sh, Args: []string{"-c", "echo 'worker: cannot load config' >&2; exit 7"}}, wiretest.HostFrames)
	st, err := run(t, t.Context(), tr, host.RunSpec{Manifest: oneStep()})
	if err == nil {
		t.Fatal("the run succeeded")
	}
	if st.Exit == nil || st.Exit.Code != 7 || st.StderrTail != "worker: cannot load config\n" {
		t.Errorf("exit %+v, stderr tail %q", st.Exit, st.StderrTail)
	}
}

// TestOnStepAndOutputs: RunSpec.OnStep sees each attempt start and end,
// and a step's output summaries reach status.json.
func TestOnStepAndOutputs(t *testing.T) {
	var (
		mu   sync.Mutex
		seen []string
	)
	spec := host.RunSpec{Manifest: tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "b", Driver: "bigresult", Config: map[string]any{"bytes": 3}}}},
		OnStep: func(s host.StepStatus) {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, s.ID+":"+s.Status)
		}}
	st, err := run(t, t.Context(), inMemory(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"b:running", "b:complete"}; !slices.Equal(seen, want) {
		t.Errorf("OnStep saw %v, want %v", seen, want)
	}
	if got := st.Steps[0].Outputs["blob"]; got != "sss" {
		t.Errorf("outputs %v, want blob's summary", st.Steps[0].Outputs)
	}
}

// TestLogsJSONL: the worker's log records and the host's own diagnostics
// are written to logs.jsonl with the session id, step id, level and
// source.
func TestLogsJSONL(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "s")
	m := tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "extract", Driver: "extract", Config: map[string]any{"rows": 3}}}}
	if _, err := run(t, t.Context(), inMemory(), host.RunSpec{Dir: dir, SessionID: "logs-1", Manifest: m}); err != nil {
		t.Fatal(err)
	}
	lines, err := logsink.ReadLines(filepath.Join(dir, logsink.LogsFile))
	if err != nil {
		t.Fatal(err)
	}
	var workerRec map[string]any
	for _, l := range lines {
		if l["session"] != "logs-1" {
			t.Errorf("line without the session id: %v", l)
		}
		if l["source"] == tproxy.SourceWorker && workerRec == nil {
			workerRec = l
		}
	}
	if workerRec == nil || workerRec["step_id"] != "extract" || workerRec["level"] != "INFO" || workerRec["msg"] == "" {
		t.Fatalf("no worker record with step id and level in logs.jsonl: %v", lines)
	}
}

// TestHostLogsJSONL: a host diagnostic (a line skipped before the
// worker's first message) lands in logs.jsonl with source host.
func TestHostLogsJSONL(t *testing.T) {
	sh, err := osexec.LookPath("sh")
	if err != nil {
		t.Skip("no sh on this system")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "s")
	// The banner is not a frame, on purpose: the host's frames are
	// validated, and the worker's after it by every other test.
	tr := wiretest.Transport(t, &transport.Subprocess{Path: sh, Args: []string{"-c", `echo "welcome banner"; exec "$0"`, exe},
		Env: []string{workerEnv + "=1", "GORACE=atexit_sleep_ms=0"}}, wiretest.HostFrames)
	if _, err := run(t, t.Context(), tr, host.RunSpec{Dir: dir, Manifest: tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "extract", Driver: "extract", Config: map[string]any{"rows": 1}}}}}); err != nil {
		t.Fatal(err)
	}
	lines, err := logsink.ReadLines(filepath.Join(dir, logsink.LogsFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range lines {
		if l["source"] == tproxy.SourceHost && strings.Contains(fmt.Sprint(l["msg"]), "skipping output") {
			return
		}
	}
	t.Errorf("no host record of the skipped banner in logs.jsonl: %v", lines)
}

// TestManyStepProgress: a fan-out's progress counts the steps of all its
// sessions as they end, a retried step once.
func TestManyStepProgress(t *testing.T) {
	flakyAttempts.Store(0)
	base := t.TempDir()
	m := tproxy.Manifest{Steps: []tproxy.StepSpec{
		{ID: "a", Driver: "sleep", Config: map[string]any{"ms": 1}},
		{ID: "f", Driver: "flaky", Config: map[string]any{"passes_on": 2}, Retry: &tproxy.Retry{Attempts: 3}},
	}}
	var jobs []host.Job
	for i := range 2 {
		jobs = append(jobs, host.Job{Transport: inMemory(), Spec: host.RunSpec{Dir: filepath.Join(base, fmt.Sprint(i)), Manifest: m, Options: quiet()}})
	}
	var (
		mu   sync.Mutex
		last host.Progress
	)
	many := &host.Many{Parallelism: 1, OnProgress: func(p host.Progress) { mu.Lock(); last = p; mu.Unlock() }}
	if _, err := many.Run(t.Context(), jobs); err != nil {
		t.Fatal(err)
	}
	if last.StepsTotal != 4 || last.StepsEnded != 4 {
		t.Errorf("progress: %d of %d steps ended, want 4 of 4", last.StepsEnded, last.StepsTotal)
	}
}
