package host_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/demo"
	"github.com/tproxy/tproxy/internal/wiretest"
	"github.com/tproxy/tproxy/logsink"
	"github.com/tproxy/tproxy/transport"
)

func quiet() []host.Option {
	return []host.Option{host.WithLogger(slog.New(slog.DiscardHandler))}
}

// run runs spec through tr in a fresh directory and returns the status as
// read back from status.json, with the run's error.
func run(t *testing.T, ctx context.Context, tr transport.Transport, spec host.RunSpec) (*host.Status, error) {
	t.Helper()
	if spec.Dir == "" {
		spec.Dir = filepath.Join(t.TempDir(), "session")
	}
	if spec.SessionID == "" {
		spec.SessionID = "run-test"
	}
	if spec.Options == nil {
		spec.Options = quiet()
	}
	st, err := host.RunManifest(ctx, tr, spec)
	b, rerr := os.ReadFile(filepath.Join(spec.Dir, host.StatusFile))
	if rerr != nil {
		t.Fatalf("no status.json after the run (run error: %v): %v", err, rerr)
	}
	var onDisk host.Status
	if err := json.Unmarshal(b, &onDisk); err != nil {
		t.Fatalf("status.json: %v", err)
	}
	if d := cmp.Diff(st, &onDisk); d != "" {
		t.Errorf("returned status differs from status.json (-returned +file):\n%s", d)
	}
	return &onDisk, err
}

// timelessJSON reads a JSON file and drops times, durations, the session
// directory and the stderr tail: what may differ between two runs.
func timelessJSON(t *testing.T, path string) any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	var strip func(any)
	strip = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				if strings.HasSuffix(k, "_ms") || strings.HasSuffix(k, "_at") || k == "dir" || k == "stderr_tail" {
					delete(x, k)
					continue
				}
				strip(e)
			}
		case []any:
			for _, e := range x {
				strip(e)
			}
		}
	}
	strip(v)
	return v
}

// tree returns every file under dir with its contents.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		out[filepath.ToSlash(rel)] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRunParity runs one pipeline in-process and in a worker subprocess:
// the session directories match apart from times.
func TestRunParity(t *testing.T) {
	m := demo.Manifest()
	m.Steps = append(m.Steps, tproxy.StepSpec{ID: "report", Driver: "files", Needs: []string{"load"},
		Config: map[string]any{"files": map[string]any{"summary.csv": "region,amount\nnorth,100\n", "deep/er/notes.txt": "ok"}}})
	dirs := map[string]string{}
	for name, tr := range map[string]transport.Transport{"in-process": inMemory(), "subprocess": subprocess(nil)} {
		dir := filepath.Join(t.TempDir(), name)
		st, err := run(t, t.Context(), tr, host.RunSpec{Dir: dir, Manifest: m, SessionID: "parity"})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if st.Outcome != host.OutcomeSuccess || st.StepsCompleted != 4 || st.Exit == nil || !st.Exit.Success() {
			t.Fatalf("%s: status %+v", name, st)
		}
		dirs[name] = dir
	}
	mem, proc := dirs["in-process"], dirs["subprocess"]
	for _, f := range []string{logsink.EventsFile, logsink.MetricsFile} {
		if d := cmp.Diff(timeless(t, filepath.Join(mem, f)), timeless(t, filepath.Join(proc, f))); d != "" {
			t.Errorf("%s differs (-in-process +subprocess):\n%s", f, d)
		}
	}
	for _, f := range []string{host.StatusFile, host.ManifestFile} {
		if d := cmp.Diff(timelessJSON(t, filepath.Join(mem, f)), timelessJSON(t, filepath.Join(proc, f))); d != "" {
			t.Errorf("%s differs (-in-process +subprocess):\n%s", f, d)
		}
	}
	memFiles, procFiles := tree(t, filepath.Join(mem, host.ArtifactsDir)), tree(t, filepath.Join(proc, host.ArtifactsDir))
	if d := cmp.Diff(memFiles, procFiles); d != "" {
		t.Errorf("artifacts differ (-in-process +subprocess):\n%s", d)
	}
	if got := memFiles["report/deep/er/notes.txt"]; got != "ok" {
		t.Errorf("report/deep/er/notes.txt = %q; artifacts: %v", got, slices.Sorted(maps.Keys(memFiles)))
	}
	if got := memFiles["transform/cleaned_config.json"]; !strings.Contains(got, `"min_amount": 20`) {
		t.Errorf("transform/cleaned_config.json = %q", got)
	}

	// The host's own events frame the worker's.
	var names []string
	for _, l := range timeless(t, filepath.Join(mem, logsink.EventsFile)) {
		if l["step_id"] == nil {
			names = append(names, l["event"].(string)+phase(l))
		}
	}
	want := []string{"run_start", "session_initialized", "phase_complete:prepare", "phase_complete:execute",
		"session_cleanup", "phase_complete:collect", "run_complete"}
	if d := cmp.Diff(want, names); d != "" {
		t.Errorf("session-level events (-want +got):\n%s", d)
	}
	metrics := map[string]any{}
	for _, l := range timeless(t, filepath.Join(mem, logsink.MetricsFile)) {
		metrics[l["metric"].(string)] = l["value"]
	}
	if str(metrics["artifacts_files_total"]) != "6" {
		t.Errorf("artifacts_files_total = %v, want 6 (4 cleaned configs + 2 files)", metrics["artifacts_files_total"])
	}
}

func phase(l map[string]any) string {
	if p, ok := l["phase"].(string); ok {
		return ":" + p
	}
	return ""
}

// TestRunInvalidManifest: each fails before any step runs, names the
// culprit, and leaves a status.json.
func TestRunInvalidManifest(t *testing.T) {
	d := func(id, driver string, needs ...string) tproxy.StepSpec {
		return tproxy.StepSpec{ID: id, Driver: driver, Needs: needs}
	}
	tests := []struct {
		name     string
		steps    []tproxy.StepSpec
		wantStep string
		wantIn   string
	}{
		{"cycle", []tproxy.StepSpec{d("a", "extract", "b"), d("b", "extract", "a")}, "a", "cycle"},
		{"duplicate id", []tproxy.StepSpec{d("a", "extract"), d("a", "extract")}, "a", "more than once"},
		{"unknown driver", []tproxy.StepSpec{d("a", "extract"), d("b", "teleport", "a")}, "b", `no driver "teleport"`},
		{"input from a step that has not run", []tproxy.StepSpec{d("a", "extract"),
			{ID: "b", Driver: "transform", Inputs: map[string]tproxy.InputRef{"rows": {FromStep: "a", Key: "rows"}}}}, "b", "has not run"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := run(t, t.Context(), inMemory(), host.RunSpec{Manifest: tproxy.Manifest{Steps: tt.steps}})
			var me *tproxy.ManifestError
			if !errors.As(err, &me) || me.StepID != tt.wantStep || !strings.Contains(err.Error(), tt.wantIn) {
				t.Fatalf("err = %v, want a *tproxy.ManifestError for step %q containing %q", err, tt.wantStep, tt.wantIn)
			}
			if st.Outcome != host.OutcomeFailed || st.Failure.Kind != host.FailureInvalidManifest || st.Failure.StepID != tt.wantStep {
				t.Errorf("status: outcome %s, failure %+v", st.Outcome, st.Failure)
			}
			for _, s := range st.Steps {
				if s.Status != host.StepNotRun {
					t.Errorf("step %s: %s, want %s", s.ID, s.Status, host.StepNotRun)
				}
			}
		})
	}
}

func TestRunStepFailure(t *testing.T) {
	m := tproxy.Manifest{Steps: []tproxy.StepSpec{
		{ID: "first", Driver: "files", Config: map[string]any{"files": map[string]any{"first.txt": "1"}}},
		{ID: "boom", Driver: "fail", Needs: []string{"first"}},
		{ID: "after", Driver: "files", Needs: []string{"boom"}},
		{ID: "independent", Driver: "files"},
	}}
	t.Run("stops at the first failure", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "s")
		st, err := run(t, t.Context(), subprocess(nil), host.RunSpec{Dir: dir, Manifest: m})
		var se *host.StepError
		if !errors.As(err, &se) || se.StepID != "boom" {
			t.Fatalf("err = %v, want a *host.StepError for boom", err)
		}
		if st.Failure == nil || st.Failure.Kind != host.FailureStep || st.Failure.StepID != "boom" ||
			!strings.Contains(st.Failure.Reason, "source table missing") {
			t.Errorf("failure = %+v", st.Failure)
		}
		got := map[string]string{}
		for _, s := range st.Steps {
			got[s.ID] = s.Status
		}
		want := map[string]string{"first": host.StepComplete, "boom": host.StepFailed, "after": host.StepNotRun, "independent": host.StepNotRun}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("steps (-want +got):\n%s", d)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "artifacts", "first", "first.txt")); err != nil || string(b) != "1" {
			t.Errorf("artifact of the step before the failure: %q, %v", b, err)
		}
		if _, err := os.Stat(filepath.Join(dir, "artifacts", "boom", "cleaned_config.json")); err != nil {
			t.Errorf("the failed step's own artifacts were not fetched: %v", err)
		}
		if !hasEvent(t, dir, "step_failed", "boom") || !hasEvent(t, dir, "run_failed", "boom") {
			t.Error("events.jsonl lacks step_failed or run_failed for boom")
		}
	})
	t.Run("continue on error skips only dependents", func(t *testing.T) {
		st, err := run(t, t.Context(), inMemory(), host.RunSpec{Manifest: m, ContinueOnError: true})
		if err == nil {
			t.Fatal("the run succeeded with a failed step")
		}
		got := map[string]string{}
		for _, s := range st.Steps {
			got[s.ID] = s.Status
		}
		want := map[string]string{"first": host.StepComplete, "boom": host.StepFailed, "after": host.StepSkipped, "independent": host.StepComplete}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("steps (-want +got):\n%s", d)
		}
		if st.Outcome != host.OutcomeFailed || st.StepsCompleted != 2 {
			t.Errorf("outcome %s, %d completed", st.Outcome, st.StepsCompleted)
		}
	})
}

func hasEvent(t *testing.T, dir, name, stepID string) bool {
	t.Helper()
	lines, err := logsink.ReadLines(filepath.Join(dir, logsink.EventsFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range lines {
		if l["event"] == name && str(l["step_id"]) == stepID {
			return true
		}
	}
	return false
}

func TestRunWorkerExits(t *testing.T) {
	var stderr syncBuffer
	dir := filepath.Join(t.TempDir(), "s")
	m := tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "x", Driver: "exit", Config: map[string]any{"code": 3}}}}
	st, err := run(t, t.Context(), subprocess(&stderr), host.RunSpec{Dir: dir, Manifest: m})
	var xe *transport.ExitError
	if !errors.As(err, &xe) || xe.Status.Code != 3 {
		t.Fatalf("err = %v, want a *transport.ExitError with code 3", err)
	}
	if st.Failure.Kind != host.FailureWorkerExited || st.Exit == nil || st.Exit.Code != 3 ||
		!strings.Contains(st.StderrTail, "exit: leaving mid-step") {
		t.Errorf("status: failure %+v, exit %+v, stderr tail %q", st.Failure, st.Exit, st.StderrTail)
	}
	if !hasEvent(t, dir, "about_to_exit", "x") {
		t.Error("the event sent before the exit is not in events.jsonl")
	}
}

func TestRunCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	sink := newSignalSink(&logsink.Memory{}, "blocked")
	go func() {
		<-sink.ch
		cancel()
	}()
	m := tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "wait", Driver: "block"}, {ID: "never", Driver: "emit", Needs: []string{"wait"}}}}
	st, err := run(t, ctx, subprocess(nil), host.RunSpec{Manifest: m, Sink: sink})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if st.Outcome != host.OutcomeCancelled || st.Failure.Kind != host.FailureCancelled || st.Failure.StepID != "wait" {
		t.Errorf("status: outcome %s, failure %+v", st.Outcome, st.Failure)
	}
	if st.Exit == nil || !st.Exit.Success() {
		t.Errorf("the worker should have finished the cancelled step and exited cleanly: %+v", st.Exit)
	}
}

func TestRunTransportFailure(t *testing.T) {
	tr := &transport.Subprocess{Path: filepath.Join(t.TempDir(), "no-such-worker")}
	st, err := run(t, t.Context(), tr, host.RunSpec{Manifest: demo.Manifest()})
	if err == nil || st.Failure == nil || !strings.Contains(st.Failure.Reason, "no-such-worker") {
		t.Fatalf("err %v, failure %+v", err, st.Failure)
	}
	if st.Exit != nil || st.Worker != nil {
		t.Errorf("no worker ran, yet exit %+v worker %+v", st.Exit, st.Worker)
	}
}

func TestRunRefusesUsedSessionDir(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, host.StatusFile), []byte("{\"from\":\"an earlier run\"}\n"), 0o644)
	_, err := host.RunManifest(t.Context(), inMemory(), host.RunSpec{Dir: dir, Manifest: demo.Manifest(), Options: quiet()})
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("err = %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, host.StatusFile)); !strings.Contains(string(b), "an earlier run") {
		t.Errorf("the earlier run's status.json was overwritten: %s", b)
	}
}

// TestRunSecretsNowhere plants secrets and greps every file of the session
// directory, the captured stderr and the host's log for them.
func TestRunSecretsNowhere(t *testing.T) {
	const (
		password = "correct-horse-battery-staple"
		dsnPass  = "dsn-pass-4f9a1c"
		apiKey   = "sk_live_51HxYz"
	)
	dsn := "postgres://etl:" + dsnPass + "@db.internal/prod"
	for _, tc := range []struct {
		name string
		tr   func(*syncBuffer) transport.Transport
	}{
		{"subprocess", func(b *syncBuffer) transport.Transport { return subprocess(b) }},
		{"in-process", func(*syncBuffer) transport.Transport { return inMemory() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr, hostLog syncBuffer
			dir := filepath.Join(t.TempDir(), "s")
			m := tproxy.Manifest{Steps: []tproxy.StepSpec{
				{ID: "ok", Driver: "leak", Config: map[string]any{"warehouse": map[string]any{"password": password}, "source": dsn}},
				{ID: "bad", Driver: "leak", Needs: []string{"ok"}, Config: map[string]any{"fail": true, "source": dsn}},
			}}
			_, err := run(t, t.Context(), tc.tr(&stderr), host.RunSpec{Dir: dir, Manifest: m,
				Config:  map[string]any{"API_KEY": apiKey},
				Secrets: tproxy.Secrets{Pointers: []string{"/source"}},
				Options: []host.Option{host.WithLogger(slog.New(slog.NewTextHandler(&hostLog, nil)))}})
			if err == nil {
				t.Fatal("the failing step did not fail the run")
			}
			places := tree(t, dir)
			places["(worker stderr)"] = stderr.String()
			places["(host log)"] = hostLog.String()
			places["(error)"] = err.Error()
			for where, text := range places {
				for _, secret := range []string{password, dsnPass, apiKey} {
					if strings.Contains(text, secret) {
						t.Errorf("secret %q found in %s:\n%s", secret, where, text)
					}
				}
			}
			if !strings.Contains(places["events.jsonl"], tproxy.Masked) || !strings.Contains(places["status.json"], tproxy.Masked) {
				t.Error("nothing was masked in events.jsonl or status.json: did the drivers leak at all?")
			}
			if tc.name == "subprocess" && !strings.Contains(stderr.String(), "stderr: ") {
				t.Errorf("the driver's stderr line is missing from the captured stderr:\n%s", stderr.String())
			}
		})
	}
}

func TestRunArtifactPolicy(t *testing.T) {
	files := map[string]any{"out/a.csv": "1,2\n", "out/b.csv": "3,4\n", "debug.log": strings.Repeat("x", 100), "big.csv": strings.Repeat("y", 5000)}
	m := tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "s", Driver: "files", Config: map[string]any{"files": files}}}}
	dir := filepath.Join(t.TempDir(), "s")
	st, err := run(t, t.Context(), inMemory(), host.RunSpec{Dir: dir, Manifest: m,
		Artifacts: host.ArtifactPolicy{Include: []string{"*.csv"}, MaxFileBytes: 1000}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for p := range tree(t, filepath.Join(dir, host.ArtifactsDir)) {
		got = append(got, p)
	}
	slices.Sort(got)
	want := []string{"s/cleaned_config.json", "s/out/a.csv", "s/out/b.csv"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("fetched (-want +got):\n%s", d)
	}
	// big.csv is over MaxFileBytes, which the worker is told: it refuses
	// it rather than list it. debug.log matches no include pattern.
	if st.Artifacts.Files != 3 || st.Artifacts.Skipped != 1 {
		t.Errorf("artifact totals %+v, want 3 fetched and 1 skipped", st.Artifacts)
	}
	if !hasEvent(t, dir, "artifact_skipped", "s") || !hasEvent(t, dir, "artifact_refused", "s") {
		t.Error("no artifact_skipped or artifact_refused event")
	}
}

// TestRunRefusesEscapingArtifact: a worker listing an artifact path that
// would escape the session directory fails the run with an
// *host.ArtifactError, and nothing is written outside.
func TestRunRefusesEscapingArtifact(t *testing.T) {
	for _, bad := range []string{"../../escaped.txt", "/etc/passwd", "a/../../b"} {
		t.Run(bad, func(t *testing.T) {
			parent := t.TempDir()
			dir := filepath.Join(parent, "s")
			m := tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "s", Driver: "any"}}}
			st, err := run(t, t.Context(), lyingWorker(bad), host.RunSpec{Dir: dir, Manifest: m})
			var ae *host.ArtifactError
			if !errors.As(err, &ae) || ae.Path != bad || !strings.Contains(err.Error(), "refused") {
				t.Fatalf("err = %v, want a *host.ArtifactError refusing %q", err, bad)
			}
			if st.Failure.Kind != host.FailureArtifact {
				t.Errorf("failure %+v", st.Failure)
			}
			if _, err := os.Stat(filepath.Join(parent, "escaped.txt")); err == nil {
				t.Error("a file was written outside the session directory")
			}
		})
	}
}

// lyingWorker answers the protocol by hand and lists artifact path in
// exec_step's result.
func lyingWorker(path string) *transport.InMemory {
	// The fake's frames are wrong on purpose; the host's are validated.
	return &transport.InMemory{Serve: wiretest.Serve(nil, func(ctx context.Context, rw io.ReadWriteCloser) error {
		defer rw.Close()
		sc := bufio.NewScanner(rw)
		for sc.Scan() {
			var req struct {
				ID     json.RawMessage `json:"id"`
				Method string          `json:"method"`
			}
			json.Unmarshal(sc.Bytes(), &req)
			var res any
			switch req.Method {
			case "ping":
				res = tproxy.PingResult{Status: "pong", Protocol: tproxy.ProtocolVersion,
					Worker: tproxy.WorkerInfo{Name: "liar", Drivers: []string{"any"}}, Timestamp: time.Now()}
			case "prepare":
				res = tproxy.PrepareResult{Status: "ready", SessionID: "run-test"}
			case "exec_step":
				res = tproxy.ExecStepResult{Status: "complete", StepID: "s",
					Artifacts: []tproxy.Artifact{{Path: path, Size: 5, SHA256: strings.Repeat("0", 64)}}}
			case "fetch_artifact":
				res = tproxy.FetchArtifactResult{Data: []byte("owned"), EOF: true}
			case "cleanup":
				res = tproxy.CleanupResult{Status: "cleaned"}
			default:
				continue
			}
			b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": req.ID, "result": res})
			rw.Write(append(b, '\n'))
		}
		return nil
	}, wiretest.HostFrames)}
}

func TestFetchArtifactVerifies(t *testing.T) {
	// The lying worker always sends "owned": a listed size or hash that
	// does not match is an *host.ArtifactError.
	ctx := t.Context()
	c, err := host.Start(ctx, lyingWorker("x"), quiet()...)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, a := range []tproxy.Artifact{
		{Path: "x", Size: 5, SHA256: strings.Repeat("0", 64)},
		{Path: "x", Size: 3, SHA256: strings.Repeat("0", 64)},
		{Path: "x", Size: 9, SHA256: strings.Repeat("0", 64)},
	} {
		var buf bytes.Buffer
		err := c.FetchArtifact(ctx, "s", a, &buf)
		var ae *host.ArtifactError
		if !errors.As(err, &ae) {
			t.Errorf("FetchArtifact(%+v) = %v, want an *host.ArtifactError", a, err)
		}
	}
}

func TestRunSessionTimeout(t *testing.T) {
	m := tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "slow", Driver: "block"}}}
	st, err := run(t, t.Context(), subprocess(nil), host.RunSpec{Manifest: m, Timeout: 500 * time.Millisecond})
	var te *host.SessionTimeoutError
	if !errors.As(err, &te) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a *host.SessionTimeoutError", err)
	}
	if n := strings.Count(err.Error(), context.DeadlineExceeded.Error()); n > 1 {
		t.Errorf("the error says %q %d times: %v", context.DeadlineExceeded, n, err)
	}
	t.Run("driver ignoring its cancel", func(t *testing.T) {
		m := tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "slow", Driver: "stubborn", Config: map[string]any{"ms": 60_000}}}}
		st, err := run(t, t.Context(), subprocess(nil), host.RunSpec{Manifest: m, Timeout: 200 * time.Millisecond, CollectGrace: 200 * time.Millisecond})
		var te *host.SessionTimeoutError
		if !errors.As(err, &te) || !errors.Is(err, context.DeadlineExceeded) || st.Failure == nil || st.Failure.Kind != host.FailureTimeout {
			t.Fatalf("err = %v, status failure %+v, want a *host.SessionTimeoutError", err, st.Failure)
		}
		if n := strings.Count(err.Error(), context.DeadlineExceeded.Error()); n > 1 {
			t.Errorf("the error says %q %d times: %v", context.DeadlineExceeded, n, err)
		}
	})
	if st.Outcome != host.OutcomeFailed || st.Failure.Kind != host.FailureTimeout || st.Failure.StepID != "slow" ||
		!strings.Contains(st.Failure.Reason, "timeout of 500ms") {
		t.Errorf("status: outcome %s, failure %+v", st.Outcome, st.Failure)
	}
	if st.Exit == nil || !st.Exit.Success() {
		t.Errorf("the worker should have cancelled the step and exited cleanly: %+v", st.Exit)
	}
}

// neverStarted is a transport that records whether Start was called.
type neverStarted struct{ started bool }

func (n *neverStarted) Start(context.Context) (transport.Process, error) {
	n.started = true
	return nil, errors.New("started")
}

// TestRunRefusesBadLogLevel: a LogLevel the contract does not know fails
// Prepare before any worker starts, naming the field; the four names pass
// in any case.
func TestRunRefusesBadLogLevel(t *testing.T) {
	tr := &neverStarted{}
	st, err := run(t, t.Context(), tr, host.RunSpec{Manifest: demo.Manifest(), LogLevel: "verbose"})
	if err == nil || !strings.Contains(err.Error(), "RunSpec.LogLevel") || !strings.Contains(err.Error(), `"verbose"`) {
		t.Fatalf("err = %v, want one naming RunSpec.LogLevel and the value", err)
	}
	if tr.started {
		t.Error("the transport was started for a run refused by its spec")
	}
	if st.Outcome != host.OutcomeFailed || st.Failure == nil {
		t.Errorf("status: outcome %s, failure %+v", st.Outcome, st.Failure)
	}
	for _, level := range []string{"", "DEBUG", "Info", "warn", "error"} {
		if _, err := run(t, t.Context(), inMemory(), host.RunSpec{Manifest: demo.Manifest(), LogLevel: level}); err != nil {
			t.Errorf("LogLevel %q: %v", level, err)
		}
	}
}
