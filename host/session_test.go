package host_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/demo"
	"github.com/tproxy/tproxy/logsink"
	"github.com/tproxy/tproxy/transport"
)

// runDemo runs the demo's three-step session over tr into dir, the way
// examples/local does.
func runDemo(t *testing.T, tr transport.Transport, dir string) {
	t.Helper()
	ctx := t.Context()
	files, err := logsink.OpenDir(dir, "parity-1")
	if err != nil {
		t.Fatal(err)
	}
	defer files.Close()
	c, err := host.Start(ctx, tr, host.WithSink(files))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m := demo.Manifest()
	if _, err := c.Prepare(ctx, tproxy.PrepareParams{SessionID: "parity-1", Manifest: m}); err != nil {
		t.Fatal(err)
	}
	for _, st := range m.Steps {
		res, err := c.ExecStep(ctx, tproxy.ExecStepParams{StepID: st.ID, Driver: st.Driver, Config: st.Config, Inputs: st.Inputs})
		if err != nil {
			t.Fatalf("step %s: %v", st.ID, err)
		}
		if res.Status != "complete" || res.StepID != st.ID {
			t.Fatalf("step %s: result %+v", st.ID, res)
		}
	}
	res, err := c.Cleanup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.StepsExecuted != 3 {
		t.Errorf("cleanup: steps_executed = %d, want 3", res.StepsExecuted)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if st := c.Process().Exit(); !st.Success() {
		t.Errorf("worker exit: %v, want success", st)
	}
}

// timeless reads a JSONL log and drops what is allowed to differ between
// two runs of the same session: timestamps and measured durations.
func timeless(t *testing.T, path string) []map[string]any {
	t.Helper()
	lines, err := logsink.ReadLines(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range lines {
		delete(l, "ts")
		for k := range l {
			if strings.HasSuffix(k, "_ms") {
				delete(l, k)
			}
		}
		if l["metric"] == "step_duration_ms" {
			delete(l, "value")
		}
	}
	return lines
}

// TestParityInMemorySubprocess is the foundation's acceptance test: the same
// session over the in-memory transport and over a real subprocess leaves
// the same logs apart from times.
func TestParityInMemorySubprocess(t *testing.T) {
	memDir, procDir := t.TempDir(), t.TempDir()
	runDemo(t, inMemory(), memDir)
	runDemo(t, subprocess(nil), procDir)
	for _, name := range []string{"events.jsonl", "metrics.jsonl"} {
		mem := timeless(t, filepath.Join(memDir, name))
		proc := timeless(t, filepath.Join(procDir, name))
		if len(mem) < 5 {
			t.Fatalf("%s has %d lines; the demo session emits more", name, len(mem))
		}
		if diff := cmp.Diff(mem, proc); diff != "" {
			t.Errorf("%s differs between in-memory and subprocess (-mem +subprocess):\n%s", name, diff)
		}
	}
}

// TestDemoLogContents pins what the demo session writes, so the parity test
// cannot pass by comparing two empty or equally broken logs.
func TestDemoLogContents(t *testing.T) {
	dir := t.TempDir()
	runDemo(t, inMemory(), dir)
	var events []string
	for _, l := range timeless(t, filepath.Join(dir, "events.jsonl")) {
		if l["event"] != "progress" {
			events = append(events, l["event"].(string)+"/"+str(l["step_id"]))
		}
	}
	want := []string{
		"session_initialized/",
		"step_start/extract", "step_complete/extract",
		"step_start/transform", "step_complete/transform",
		"step_start/load", "region_total/load", "region_total/load", "region_total/load", "region_total/load", "step_complete/load",
		"session_cleanup/",
	}
	if diff := cmp.Diff(want, events); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	metrics := map[string]string{}
	for _, l := range timeless(t, filepath.Join(dir, "metrics.jsonl")) {
		metrics[l["metric"].(string)+"/"+str(l["step_id"])] = str(l["value"])
	}
	for k, v := range map[string]string{"steps_total/": "3", "rows_read/extract": "42", "rows_processed/extract": "42", "rows_written/load": "4"} {
		if metrics[k] != v {
			t.Errorf("metric %s = %q, want %q (all: %v)", k, metrics[k], v, metrics)
		}
	}
}

func str(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}
