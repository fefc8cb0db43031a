package pythonworker_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/wiretest"
	"github.com/tproxy/tproxy/logsink"
	"github.com/tproxy/tproxy/transport"
)

const ordersCSV = `order_id,region,product,quantity,unit_price,status
1001,south,sprocket,7,0.99,shipped
1002,central,widget,2,4.25,shipped
1003,north,doohickey,9,7.10,shipped
1004,north,widget,7,4.25,cancelled
1005,north,widget,1,4.25,shipped
1006,south,widget,3,4.25,shipped
`

// pythonWorker is the Python example worker as a transport, or a skip when
// python3 is not installed. Every frame each side writes is checked
// against docs/schema: the Go host's, and the Python worker's.
func pythonWorker(t *testing.T) transport.Transport {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not on PATH")
	}
	script, err := filepath.Abs("example_driver.py")
	if err != nil {
		t.Fatal(err)
	}
	stderr := &lockedBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("worker stderr:\n%s", stderr.String())
		}
	})
	return wiretest.Transport(t, &transport.Subprocess{Path: py, Args: []string{script}, Stderr: stderr}, wiretest.Both)
}

// lockedBuffer collects the worker's stderr, written by the transport's
// goroutine and read by the test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func pipeline(dataPath string) tproxy.Manifest {
	return tproxy.Manifest{Steps: []tproxy.StepSpec{
		{ID: "extract", Driver: "csv_extract", Config: map[string]any{
			"path": dataPath, "progress_every": 2, "password": "hunter22-secret"}},
		{ID: "transform", Driver: "filter_aggregate", Needs: []string{"extract"},
			Inputs: map[string]tproxy.InputRef{"table": {FromStep: "extract", Key: "table"}},
			Config: map[string]any{
				"where":    map[string]any{"status": "shipped"},
				"group_by": "region",
				"sum":      []any{map[string]any{"as": "revenue", "expr": "quantity*unit_price", "decimals": 2}},
				"output":   "region_revenue.csv",
			}},
	}}
}

func runPython(t *testing.T, m tproxy.Manifest) (dir string, st *host.Status, err error) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "session")
	ctx := t.Context()
	// The status checked is status.json's, as written to disk.
	_, err = host.RunManifest(ctx, pythonWorker(t), host.RunSpec{
		SessionID: "py-run",
		Dir:       dir,
		Manifest:  m,
		LogLevel:  "debug",
		Options:   []host.Option{host.WithLogger(slog.New(slog.DiscardHandler))},
	})
	b, rerr := os.ReadFile(filepath.Join(dir, host.StatusFile))
	if rerr != nil {
		t.Fatalf("no status.json (run error: %v): %v", err, rerr)
	}
	var onDisk host.Status
	if jerr := json.Unmarshal(b, &onDisk); jerr != nil {
		t.Fatalf("status.json: %v", jerr)
	}
	return dir, &onDisk, err
}

// eventNames lists the events of a session directory's events.jsonl as
// "name" or "name@step".
func eventNames(t *testing.T, dir string) ([]string, []map[string]any) {
	t.Helper()
	lines, err := logsink.ReadLines(filepath.Join(dir, logsink.EventsFile))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range lines {
		n, _ := l["event"].(string)
		if s, ok := l["step_id"].(string); ok {
			n += "@" + s
		}
		names = append(names, n)
	}
	return names, lines
}

// containsInOrder reports whether want appears in got as a subsequence.
func containsInOrder(got, want []string) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}

// TestPythonWorkerBehindGoHost runs the Python example pipeline behind the
// real Go host and checks the session directory.
func TestPythonWorkerBehindGoHost(t *testing.T) {
	data := filepath.Join(t.TempDir(), "orders.csv")
	if err := os.WriteFile(data, []byte(ordersCSV), 0o644); err != nil {
		t.Fatal(err)
	}
	dir, st, err := runPython(t, pipeline(data))
	if err != nil {
		t.Fatalf("run: %v (status %+v)", err, st)
	}
	if st.Outcome != host.OutcomeSuccess || st.StepsCompleted != 2 || st.StepsTotal != 2 {
		t.Fatalf("status: outcome %q, %d/%d steps, failure %+v", st.Outcome, st.StepsCompleted, st.StepsTotal, st.Failure)
	}
	if st.Worker == nil || st.Worker.Name != "tproxy-python-example" {
		t.Errorf("worker info = %+v", st.Worker)
	}
	if st.Exit == nil || !st.Exit.Success() {
		t.Errorf("worker exit = %+v, want success", st.Exit)
	}
	if st.Steps[0].RowsProcessed != 6 || st.Steps[1].RowsProcessed != 5 {
		t.Errorf("rows processed = %d, %d; want 6, 5", st.Steps[0].RowsProcessed, st.Steps[1].RowsProcessed)
	}

	names, lines := eventNames(t, dir)
	want := []string{"run_start", "session_initialized",
		"step_start@extract", "progress@extract", "step_complete@extract",
		"step_start@transform", "aggregated@transform", "step_complete@transform",
		"session_cleanup", "run_complete"}
	if !containsInOrder(names, want) {
		t.Errorf("events.jsonl = %v\nwant in order: %v", names, want)
	}
	for _, l := range lines {
		if l["event"] == "protocol_warning" {
			t.Errorf("protocol warning: %v", l)
		}
		if l["event"] == "step_complete" && l["step_id"] == "extract" {
			if l["driver"] != "csv_extract" || fmt.Sprint(l["rows_processed"]) != "6" {
				t.Errorf("step_complete of extract = %v", l)
			}
		}
	}
	metrics, err := logsink.ReadLines(filepath.Join(dir, logsink.MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, m := range metrics {
		seen[m["metric"].(string)] = true
	}
	for _, name := range []string{"steps_total", "rows_read", "rows_processed", "step_duration_ms", "rows_filtered_out"} {
		if !seen[name] {
			t.Errorf("metrics.jsonl has no %s metric", name)
		}
	}

	art := filepath.Join(dir, host.ArtifactsDir)
	cleaned, err := os.ReadFile(filepath.Join(art, "extract", "cleaned_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(cleaned), "hunter22") || !strings.Contains(string(cleaned), tproxy.Masked) {
		t.Errorf("extract/cleaned_config.json is not masked:\n%s", cleaned)
	}
	var cfg map[string]any
	if err := json.Unmarshal(cleaned, &cfg); err != nil || cfg["path"] != data {
		t.Errorf("extract/cleaned_config.json = %s (%v)", cleaned, err)
	}
	if _, err := os.Stat(filepath.Join(art, "transform", "cleaned_config.json")); err != nil {
		t.Error(err)
	}
	sample, err := os.ReadFile(filepath.Join(art, "extract", "sample.csv"))
	if err != nil || !strings.HasPrefix(string(sample), "order_id,region,") {
		t.Errorf("extract/sample.csv = %q (%v)", sample, err)
	}
	got, err := os.ReadFile(filepath.Join(art, "transform", "region_revenue.csv"))
	if err != nil {
		t.Fatal(err)
	}
	// central: 2*4.25; north: 9*7.10 + 1*4.25; south: 7*0.99 + 3*4.25
	wantCSV := "region,orders,revenue\ncentral,1,8.50\nnorth,2,68.15\nsouth,2,19.68\n"
	if string(got) != wantCSV {
		t.Errorf("transform/region_revenue.csv = %q, want %q", got, wantCSV)
	}
	if st.Artifacts.Files != 4 {
		t.Errorf("artifacts fetched = %d, want 4 (2 cleaned configs, sample.csv, region_revenue.csv)", st.Artifacts.Files)
	}
}

// TestPythonWorkerStepFailure: a failing driver fails the run with kind
// step_failed and the error type of its category (a FileNotFoundError is
// the driver's failure: "driver", not the exception's class name); the
// failed step's artifacts are still fetched.
func TestPythonWorkerStepFailure(t *testing.T) {
	m := pipeline(filepath.Join(t.TempDir(), "does-not-exist.csv"))
	dir, st, err := runPython(t, m)
	var se *host.StepError
	if !errors.As(err, &se) {
		t.Fatalf("run error = %v (%T), want a *host.StepError", err, err)
	}
	if st.Outcome != host.OutcomeFailed || st.Failure == nil {
		t.Fatalf("status: outcome %q, failure %+v", st.Outcome, st.Failure)
	}
	if st.Failure.Kind != host.FailureStep || st.Failure.StepID != "extract" || st.Failure.ErrorType != tproxy.ErrorTypeDriver {
		t.Errorf("failure = %+v, want kind %s, step extract, error type %s", st.Failure, host.FailureStep, tproxy.ErrorTypeDriver)
	}
	if strings.Contains(st.Failure.Reason, "Traceback") {
		t.Errorf("the failure reason holds the traceback: %q", st.Failure.Reason)
	}
	if !strings.Contains(st.StderrTail, "Traceback") {
		t.Errorf("stderr tail has no traceback: %q", st.StderrTail)
	}
	names, _ := eventNames(t, dir)
	if !containsInOrder(names, []string{"step_start@extract", "step_failed@extract", "session_cleanup", "run_failed@extract"}) {
		t.Errorf("events.jsonl = %v", names)
	}
	if _, err := os.Stat(filepath.Join(dir, host.ArtifactsDir, "extract", "cleaned_config.json")); err != nil {
		t.Errorf("the failed step's cleaned_config.json was not fetched: %v", err)
	}
	if st.Exit == nil || !st.Exit.Success() {
		t.Errorf("worker exit = %+v, want success", st.Exit)
	}
}
