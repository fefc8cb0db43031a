package e2b_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/demo"
	"github.com/tproxy/tproxy/internal/e2bfake"
	"github.com/tproxy/tproxy/internal/wiretest"
	"github.com/tproxy/tproxy/logsink"
	"github.com/tproxy/tproxy/transport"
	"github.com/tproxy/tproxy/transport/e2b"
)

// runDemo runs the demo's three-step session over tr into dir, the way
// examples/local does, and returns the worker's exit status.
func runDemo(t *testing.T, tr transport.Transport, dir string, opts ...host.Option) transport.ExitStatus {
	t.Helper()
	tr = wiretest.Transport(t, tr, wiretest.Both) // the frames of the host and the Go worker, both ways
	ctx := t.Context()
	files, err := logsink.OpenDir(dir, "parity-1")
	if err != nil {
		t.Fatal(err)
	}
	defer files.Close()
	c, err := host.Start(ctx, tr, append([]host.Option{host.WithSink(files)}, opts...)...)
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
	return c.Process().Exit()
}

// timeless reads a JSONL log and drops what may differ between two runs of
// the same session: timestamps and measured durations.
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

// TestParitySubprocessE2B is the acceptance test: the same session
// over a local subprocess and over the (local, wire-faithful) E2B leaves
// the same events.jsonl and metrics.jsonl apart from times.
func TestParitySubprocessE2B(t *testing.T) {
	srv := newServer(t, fakeOptions())
	procDir, e2bDir, gzipDir := t.TempDir(), t.TempDir(), t.TempDir()
	if st := runDemo(t, subprocess(t, "worker"), procDir); !st.Success() {
		t.Errorf("subprocess worker exit: %v", st)
	}
	if st := runDemo(t, newE2B(t, srv, "worker"), e2bDir); !st.Success() {
		t.Errorf("e2b worker exit: %v", st)
	}
	gz := newE2B(t, srv, "worker")
	gz.Gzip = true // compressed output envelopes
	if st := runDemo(t, gz, gzipDir); !st.Success() {
		t.Errorf("e2b (gzip) worker exit: %v", st)
	}
	for _, name := range []string{logsink.EventsFile, logsink.MetricsFile} {
		proc := timeless(t, filepath.Join(procDir, name))
		if len(proc) < 5 {
			t.Fatalf("%s has %d lines; the demo session emits more", name, len(proc))
		}
		for _, dir := range []string{e2bDir, gzipDir} {
			remote := timeless(t, filepath.Join(dir, name))
			if diff := cmp.Diff(proc, remote); diff != "" {
				t.Errorf("%s differs between subprocess and e2b (-subprocess +e2b):\n%s", name, diff)
			}
		}
	}
	// Every host→worker message of a session rides in one StreamInput
	// request body (after the probe's): no HTTP request per message.
	if n, m := srv.Calls(e2bfake.OpStreamInput), srv.Calls(e2bfake.OpSendInput); n != 4 || m != 0 {
		t.Errorf("%d StreamInput and %d SendInput calls for two sessions, want 4 (a probe and a stream each) and 0", n, m)
	}
	gzipped := 0
	for _, r := range srv.Requests() {
		if r.Path == "/process.Process/Start" && r.Header.Get("Connect-Accept-Encoding") == "gzip" {
			gzipped++
		}
	}
	if gzipped == 0 {
		t.Error("no Start call asked for gzip with E2B.Gzip set")
	}
	completes := 0
	for _, l := range timeless(t, filepath.Join(e2bDir, logsink.EventsFile)) {
		if l["event"] == "step_complete" {
			completes++
		}
	}
	if completes != 3 {
		t.Errorf("e2b events.jsonl has %d step_complete events, want 3", completes)
	}
	if ids := srv.Sandboxes(); len(ids) != 0 {
		t.Errorf("sandboxes left after Close: %v", ids)
	}
}

// TestExitParity: a worker that exits with a code, or is killed by a
// signal, gives the same ExitStatus and stderr tail over E2B as over a
// subprocess.
func TestExitParity(t *testing.T) {
	srv := newServer(t, fakeOptions())
	for _, tt := range []struct {
		mode   string
		want   transport.ExitStatus
		stderr string
	}{
		{"exit3", transport.ExitStatus{Code: 3}, "boom: something bad happened"},
		{"killself", transport.ExitStatus{Code: -1, Signal: 9}, "about to be killed"},
	} {
		t.Run(tt.mode, func(t *testing.T) {
			var got [2]*transport.ExitError
			for i, tr := range []transport.Transport{subprocess(t, tt.mode), newE2B(t, srv, tt.mode)} {
				p, err := tr.Start(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				waitDone(t, p)
				got[i] = transport.NewExitError(p)
				if err := p.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			}
			if got[1].Status != tt.want {
				t.Errorf("e2b exit status = %#v, want %#v", got[1].Status, tt.want)
			}
			if !strings.Contains(got[1].Stderr, tt.stderr) {
				t.Errorf("e2b stderr tail %q lacks %q", got[1].Stderr, tt.stderr)
			}
			if diff := cmp.Diff(got[0], got[1]); diff != "" {
				t.Errorf("ExitError differs (-subprocess +e2b):\n%s", diff)
			}
		})
	}
}

// TestNoAPIKey: without a key Start says exactly what is missing.
func TestNoAPIKey(t *testing.T) {
	t.Setenv("E2B_API_KEY", "")
	_, err := (&e2b.E2B{Binary: exe(t)}).Start(context.Background())
	if !errors.Is(err, e2b.ErrNoAPIKey) || !strings.Contains(err.Error(), "E2B_API_KEY") {
		t.Fatalf("err = %v, want ErrNoAPIKey naming E2B_API_KEY", err)
	}
}
