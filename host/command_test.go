package host_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/wiretest"
	"github.com/tproxy/tproxy/logsink"
	"github.com/tproxy/tproxy/transport"
)

// commandLayers run testWorker behind an intermediary, through
// transport.Command: a shell that execs it, env -i, and a shell that forks
// it and reports its status. Their frames, both ways, are validated
// against docs/schema, as subprocess's are.
func commandLayers() map[string]transport.Transport {
	sp := subprocess(nil)
	withEnv := func(c *transport.Subprocess) *transport.Subprocess { c.Env = sp.Env; return c }
	tap := func(tr transport.Transport) transport.Transport { return wiretest.Transport(nil, tr, wiretest.Both) }
	return map[string]transport.Transport{
		"sh exec": tap(withEnv(transport.Command("sh", "-c", `exec "$@"`, "sh", sp.Path))),
		// TMPDIR passes the layer: a worker killed outright leaves its
		// session directory in the tests' own TMPDIR (ownTMPDIR), not in
		// the system's.
		"env -i":  tap(transport.Command("env", "-i", workerEnv+"=1", "GORACE=atexit_sleep_ms=0", "TMPDIR="+os.TempDir(), sp.Path)),
		"sh fork": tap(withEnv(transport.Command("sh", "-c", `"$@"; exit $?`, "sh", sp.Path))),
	}
}

// TestRunParityCommand: the session directory of a run behind each layer
// matches a direct subprocess's apart from times.
func TestRunParityCommand(t *testing.T) {
	m := tproxy.Manifest{Steps: []tproxy.StepSpec{
		{ID: "a", Driver: "emit", Config: map[string]any{"events": 50}},
		{ID: "b", Driver: "files", Needs: []string{"a"}, Config: map[string]any{"files": map[string]any{"out.txt": "x"}}},
	}}
	runIn := func(name string, tr transport.Transport) string {
		dir := filepath.Join(t.TempDir(), strings.ReplaceAll(name, " ", "_"))
		st, err := run(t, t.Context(), tr, host.RunSpec{Dir: dir, Manifest: m, SessionID: "parity"})
		if err != nil || st.Outcome != host.OutcomeSuccess || st.Exit == nil || !st.Exit.Success() {
			t.Fatalf("%s: %v, status %+v", name, err, st)
		}
		return dir
	}
	ref := runIn("subprocess", subprocess(nil))
	for name, tr := range commandLayers() {
		dir := runIn(name, tr)
		for _, f := range []string{logsink.EventsFile, logsink.MetricsFile} {
			if d := cmp.Diff(timeless(t, filepath.Join(ref, f)), timeless(t, filepath.Join(dir, f))); d != "" {
				t.Errorf("%s: %s differs (-subprocess +command):\n%s", name, f, d)
			}
		}
		if d := cmp.Diff(timelessJSON(t, filepath.Join(ref, host.StatusFile)), timelessJSON(t, filepath.Join(dir, host.StatusFile))); d != "" {
			t.Errorf("%s: status.json differs (-subprocess +command):\n%s", name, d)
		}
	}
}

// TestMatrixWorkerDiesMidStepCommand is TestMatrixWorkerDiesMidStep's exit
// 3 and SIGKILL rows behind each layer: the same error, exit status and
// stderr tail as a direct subprocess.
func TestMatrixWorkerDiesMidStepCommand(t *testing.T) {
	rows := []struct {
		name, driver string
		cfg          map[string]any
		code         int
		signal       syscall.Signal
		stderr       string
	}{
		{"exit 3", "exit", map[string]any{"code": 3}, 3, 0, "exit: leaving mid-step"},
		{"SIGKILL", "selfkill", nil, -1, syscall.SIGKILL, "selfkill: goodbye"},
	}
	for name, tr := range commandLayers() {
		for _, tt := range rows {
			t.Run(name+"/"+tt.name, func(t *testing.T) {
				dir := filepath.Join(t.TempDir(), "s")
				m := tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "victim", Driver: tt.driver, Config: tt.cfg}}}
				st, err := run(t, t.Context(), tr, host.RunSpec{Dir: dir, Manifest: m})
				var xe *transport.ExitError
				if !errors.As(err, &xe) || !errors.Is(err, host.ErrClosed) {
					t.Fatalf("err = %v, want host.ErrClosed with a *transport.ExitError", err)
				}
				if xe.Status.Code != tt.code || xe.Status.Signal != tt.signal {
					t.Errorf("exit status %+v, want code %d signal %v", xe.Status, tt.code, tt.signal)
				}
				if !strings.Contains(xe.Stderr, tt.stderr) {
					t.Errorf("stderr tail lacks %q:\n%s", tt.stderr, xe.Stderr)
				}
				if st.Failure == nil || st.Failure.Kind != host.FailureWorkerExited || st.Exit == nil ||
					st.Exit.Signal != tt.signal || !strings.Contains(st.StderrTail, tt.stderr) {
					t.Errorf("status.json: failure %+v, exit %+v, stderr tail %q", st.Failure, st.Exit, st.StderrTail)
				}
				if !hasEvent(t, dir, map[string]string{"exit": "about_to_exit", "selfkill": "about_to_die"}[tt.driver], "victim") {
					t.Error("the event sent before the fault is not in events.jsonl")
				}
			})
		}
	}
}
