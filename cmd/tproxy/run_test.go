package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tproxy/tproxy/host"
)

// writeFile writes a file under dir and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// readStatus reads a session's status.json through the host's type.
func readStatus(t *testing.T, dir string) host.Status {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, host.StatusFile))
	if err != nil {
		t.Fatal(err)
	}
	var st host.Status
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// The demo pipeline as YAML and as JSON; "rows" decides whether extract
// succeeds.
const (
	demoYAML = `# the demo pipeline
pipeline: {name: demo}
steps:
  - id: extract
    driver: extract
    config: {rows: %ROWS%}
  - id: transform
    driver: transform
    needs: [extract]
    config: {min_amount: 20}
    inputs:
      rows: {from_step: extract, key: rows}
  - id: load
    driver: load
    needs: [transform]
    inputs:
      totals: {from_step: transform, key: totals}
`
	demoJSON = `{"steps": [
  {"id": "extract", "driver": "extract", "config": {"rows": %ROWS%}},
  {"id": "transform", "driver": "transform", "needs": ["extract"], "config": {"min_amount": 20},
   "inputs": {"rows": {"from_step": "extract", "key": "rows"}}},
  {"id": "load", "driver": "load", "needs": ["transform"],
   "inputs": {"totals": {"from_step": "transform", "key": "totals"}}}
]}`
)

func demoManifest(t *testing.T, name string, rows string) string {
	t.Helper()
	content := demoJSON
	if strings.HasSuffix(name, ".yaml") {
		content = demoYAML
	}
	return writeFile(t, t.TempDir(), name, strings.ReplaceAll(content, "%ROWS%", rows))
}

// testExe is this test binary, which is a worker when given workerArg.
func testExe(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// quietRace keeps a -race worker from sleeping a second at exit.
const quietRace = "GORACE=atexit_sleep_ms=0"

func TestRunUsageErrors(t *testing.T) {
	dir := t.TempDir()
	good := demoManifest(t, "good.json", "10")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no manifest", []string{"-in-process"}, "want one manifest"},
		{"no worker", []string{good}, "-worker is required"},
		{"in-process with worker", []string{"-in-process", "-worker", "x", good}, "takes no -worker"},
		{"bad parallel", []string{"-in-process", "-parallel", "0", good}, "-parallel must be at least 1"},
		{"bad env", []string{"-worker", "x", "-env", "NOEQUALS", good}, `-env "NOEQUALS"`},
		{"bad pointer", []string{"-in-process", "-secret", "dsn", good}, "a JSON pointer starts with /"},
		{"e2b URL without -e2b", []string{"-worker", "x", "-e2b-api-url", "http://127.0.0.1:3000", good}, "take effect with -e2b only"},
		{"bad e2b URL", []string{"-e2b", "-worker", "x", "-e2b-envd-url", "localhost:3000", good}, `-e2b-envd-url "localhost:3000": want an http:// or https:// URL`},
		{"missing file", []string{"-in-process", filepath.Join(dir, "nope.json")}, "no such file"},
		{"unknown field", []string{"-in-process", writeFile(t, dir, "typo.yaml", "steps:\n  - id: a\n    driver: extract\n    need: [b]\n")}, `unknown field "`},
		{"bad yaml", []string{"-in-process", writeFile(t, dir, "bad.yaml", "steps: [\n")}, "bad.yaml"},
		{"invalid manifest", []string{"-in-process", writeFile(t, dir, "cycle.json",
			`{"steps":[{"id":"a","driver":"extract","needs":["b"]},{"id":"b","driver":"extract","needs":["a"]}]}`)}, "cycle"},
		{"empty directory", []string{"-in-process", t.TempDir()}, "holds no manifest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runT(t, false, append([]string{"run"}, tc.args...)...)
			if r.code != exitUsage || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", r.code, r.stderr, exitUsage, tc.want)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q; want nothing: nothing runs", r.stdout)
			}
		})
	}
}

func TestRunSuccess(t *testing.T) {
	for _, manifest := range []string{"demo.yaml", "demo.json"} {
		t.Run(manifest, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "session")
			r := runT(t, false, "run", "-in-process", "-dir", dir, demoManifest(t, manifest, "42"))
			if r.code != exitOK {
				t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
			}
			// On a pipe: one line per step start and end, no escape.
			for _, want := range []string{
				"▶ extract started (driver extract)\n",
				"✓ extract complete: 42 rows in ",
				"✓ transform complete: ",
				"✓ load complete: ",
				"success: 3/3 steps in ",
				"; session directory " + dir + "\n",
			} {
				if !strings.Contains(r.stdout, want) {
					t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
				}
			}
			if strings.Contains(r.stdout, "\x1b") || strings.Contains(r.stdout, "\r") {
				t.Errorf("stdout on a pipe holds terminal control characters: %q", r.stdout)
			}
			if st := readStatus(t, dir); st.Outcome != host.OutcomeSuccess || st.StepsCompleted != 3 {
				t.Errorf("status.json: outcome %q, %d steps completed", st.Outcome, st.StepsCompleted)
			}
		})
	}
}

func TestRunTerminal(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "session")
	r := runT(t, true, "run", "-in-process", "-dir", dir, demoManifest(t, "demo.json", "42"))
	if r.code != exitOK {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// The status line is drawn (on each step start at least) and erased
	// before each final line, so the final lines stay readable.
	if !strings.Contains(r.stdout, clearLine+"▶ extract") || !strings.Contains(r.stdout, "events/s") {
		t.Errorf("no status line on a terminal: %q", r.stdout)
	}
	if !strings.Contains(r.stdout, clearLine+"✓ load complete: ") {
		t.Errorf("a final line is not written over an erased status line: %q", r.stdout)
	}
	if strings.Contains(r.stdout, "started (driver") {
		t.Errorf("on a terminal a step's start belongs in the status line only: %q", r.stdout)
	}
}

// A manifest whose step fails: exit 1, the failure on stdout and stderr,
// status.json says so.
func TestRunFailingManifest(t *testing.T) {
	t.Run("in-process", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "session")
		r := runT(t, false, "run", "-in-process", "-dir", dir, demoManifest(t, "demo.json", "0"))
		if r.code != exitFail {
			t.Fatalf("exit %d; want 1\n%s%s", r.code, r.stdout, r.stderr)
		}
		for _, want := range []string{
			// The error type between is the worker runtime's business.
			"✗ extract failed: ",
			"extract: config.rows must be positive, got 0\n",
			"failed: 0/3 steps in ",
			`failure: step_failed at step "extract": `,
		} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
			}
		}
		if !strings.Contains(r.stderr, "config.rows must be positive") {
			t.Errorf("stderr lacks the error: %q", r.stderr)
		}
		st := readStatus(t, dir)
		if st.Outcome != host.OutcomeFailed || st.Failure == nil || st.Failure.StepID != "extract" {
			t.Errorf("status.json: %+v", st)
		}
	})
	t.Run("subprocess", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "session")
		m := writeFile(t, t.TempDir(), "fail.yaml", "steps:\n  - {id: first, driver: extract, config: {rows: 3}}\n  - {id: boom, driver: fail, needs: [first]}\n  - {id: never, driver: load, needs: [boom]}\n")
		r := runT(t, false, "run", "-worker", testExe(t), "-env", quietRace, "-dir", dir, m, "--", workerArg)
		if r.code != exitFail {
			t.Fatalf("exit %d; want 1\n%s%s", r.code, r.stdout, r.stderr)
		}
		if !strings.Contains(r.stdout, "✗ boom failed: ") || !strings.Contains(r.stdout, ": the fail driver always fails\n") {
			t.Errorf("stdout:\n%s", r.stdout)
		}
		// The worker's stderr is passed through, and kept in status.json.
		if !strings.Contains(r.stderr, "fail driver: about to fail") {
			t.Errorf("stderr lacks the worker's: %q", r.stderr)
		}
		st := readStatus(t, dir)
		if st.Outcome != host.OutcomeFailed || st.Failure.StepID != "boom" || !strings.Contains(st.StderrTail, "about to fail") {
			t.Errorf("status.json: %+v", st)
		}
		if got := st.Steps[2].Status; got != host.StepNotRun {
			t.Errorf("step never: %q; want %q", got, host.StepNotRun)
		}
	})
}

func TestRunParallel(t *testing.T) {
	mdir := t.TempDir()
	for name, rows := range map[string]string{"a.json": "5", "b.yaml": "7", "c.json": "0"} {
		content := demoJSON
		if strings.HasSuffix(name, ".yaml") {
			content = demoYAML
		}
		writeFile(t, mdir, name, strings.ReplaceAll(content, "%ROWS%", rows))
	}
	writeFile(t, mdir, "notes.txt", "not a manifest")
	out := t.TempDir()
	r := runT(t, false, "run", "-worker", testExe(t), "-env", quietRace, "-parallel", "2", "-dir", out, mdir, "--", workerArg)
	if r.code != exitFail {
		t.Fatalf("exit %d; want 1 (c fails)\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{
		"a.json: success: 3/3 steps",
		"b.yaml: success: 3/3 steps",
		"c.json: failed: 0/3 steps",
		"3 sessions: 2 succeeded, 1 failed, 0 cancelled",
		"3/3 sessions done, 0 running, 1 failed\n",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
		}
	}
	for name, outcome := range map[string]string{"a": host.OutcomeSuccess, "b": host.OutcomeSuccess, "c": host.OutcomeFailed} {
		if st := readStatus(t, filepath.Join(out, name)); st.Outcome != outcome {
			t.Errorf("%s: outcome %q; want %q", name, st.Outcome, outcome)
		}
	}
}

// Ctrl-C: the tproxy process (this test binary in its tproxy role) gets
// SIGINT while a step runs; the step is cancelled, the worker stopped,
// status.json written, and the exit status is 1.
func TestRunSIGINT(t *testing.T) {
	exe := testExe(t)
	dir := filepath.Join(t.TempDir(), "session")
	m := writeFile(t, t.TempDir(), "block.json", `{"steps":[{"id":"wait","driver":"block"},{"id":"after","driver":"extract","needs":["wait"],"config":{"rows":1}}]}`)
	cmd := exec.Command(exe, "run", "-worker", exe, "-env", quietRace, "-dir", dir, m, "--", workerArg)
	cmd.Env = append(os.Environ(), roleEnv+"=tproxy", quietRace)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		done <- cmd.Wait()
	}()
	var out []string
	deadline := time.After(30 * time.Second)
	for started := false; !started; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("tproxy ended before the step started:\n%s\nstderr:\n%s", strings.Join(out, "\n"), stderr.String())
			}
			out = append(out, l)
			started = strings.HasPrefix(l, "▶ wait started")
		case <-deadline:
			cmd.Process.Kill()
			t.Fatalf("the step did not start:\n%s", strings.Join(out, "\n"))
		}
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	for l := range lines {
		out = append(out, l)
	}
	err = <-done
	var xe *exec.ExitError
	if !errors.As(err, &xe) || xe.ExitCode() != exitFail {
		t.Errorf("tproxy ended with %v; want exit status 1", err)
	}
	if !strings.Contains(stderr.String(), "interrupted; the run was cancelled and status.json written") {
		t.Errorf("stderr: %q", stderr.String())
	}
	// The tproxy process taps its worker as the tests do (TestMain), but
	// reports to its stderr.
	if strings.Contains(stderr.String(), "wiretest:") {
		t.Errorf("a frame of the cancelled run did not validate against docs/schema:\n%s", stderr.String())
	}
	if last := out[len(out)-1]; !strings.HasPrefix(last, "  failure: cancelled") {
		t.Errorf("stdout:\n%s", strings.Join(out, "\n"))
	}
	st := readStatus(t, dir)
	if st.Outcome != host.OutcomeCancelled || st.Exit == nil {
		t.Errorf("status.json: outcome %q, exit %v; want cancelled, and the worker's exit", st.Outcome, st.Exit)
	}
	if st.Steps[0].Status == host.StepComplete || st.Steps[1].Status != host.StepNotRun {
		t.Errorf("steps: %+v", st.Steps)
	}
}

func TestLostField(t *testing.T) {
	for _, tc := range []struct{ in, out, want string }{
		{`{"steps":[{"id":"a","need":["b"]}]}`, `{"steps":[{"id":"a"}]}`, "steps[0].need"},
		{`{"steps":[{"id":"a","needs":[]}]}`, `{"steps":[{"id":"a"}]}`, ""}, // empty: omitempty drops it
		{`{"steps":[{"id":"a","config":{"anything":1}}]}`, `{"steps":[{"id":"a","config":{}}]}`, ""},
		{`{"pipeline":{"x":{"y":1}},"steps":[]}`, `{"pipeline":{"x":{}},"steps":[]}`, ""}, // the user's own: not looked into
		{`{"steps":[{"id":"a","inputs":{"t":{"from_step":"b","keyy":"k"}}}]}`, `{"steps":[{"id":"a","inputs":{"t":{"from_step":"b","key":""}}}]}`, "steps[0].inputs.t.keyy"},
		{`{"step":[{"id":"a"}]}`, `{"steps":[]}`, "step"},
	} {
		var in, out any
		if err := json.Unmarshal([]byte(tc.in), &in); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(tc.out), &out); err != nil {
			t.Fatal(err)
		}
		if got := lostField(in, out, ""); got != tc.want {
			t.Errorf("lostField(%s, %s) = %q; want %q", tc.in, tc.out, got, tc.want)
		}
	}
}
